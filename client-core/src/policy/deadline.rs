//! The deadline: `timeout` bounds the whole call, retries, back-off and
//! waits for a bulkhead slot included.
//!
//! It is not a timer around the call but an instant passed down to every
//! stage: each wait in the pipeline ends by it (an attempt is bounded by
//! `min(deadline, now + attempt_timeout)`, a back-off that would outlast it
//! is not started, a bulkhead wait stops at it). So the caller never waits
//! longer than `timeout`, and the error still says which attempt was cut
//! short and how many were made.
//!
//! Every sum of an instant and a duration here is checked: durations from
//! config are at most a day, but a `Retry-After` comes from the network and
//! can be anything (`Retry-After: 9999999999999999999` once panicked a
//! caller's task with "overflow when adding duration to instant"). A sum
//! that does not fit is "later than any deadline".
//!
//! ## One timer per client, not one per call
//!
//! An attempt is cut at its limit by [`Watch::bound`], not by a tokio
//! `Sleep` of its own. A `Sleep` per call costs a timer-wheel entry: made,
//! inserted under the driver's lock, polled, removed under the lock again,
//! dropped — about 850 instructions of client CPU per call, measured with
//! callgrind (more than all of courier's policies together), for a timer
//! that almost never fires. Instead, a call that has to wait (its attempt is
//! pending) records its limit and its waker in the client's [`Watch`]: one
//! slot in a slab behind a lock picked by the calling thread (no lock all
//! calls contend on), and one atomic `fetch_min` on the earliest limit. One
//! task per client sleeps until that earliest limit; when it wakes, it wakes
//! every call whose limit has passed and sleeps until the next. A call that
//! is polled again reads the clock and ends itself once its limit has
//! passed, so it never waits longer than a `Sleep` would have let it. Calls
//! of one method share a timeout, so their limits arrive in order and the
//! task rarely wakes (once per timeout while calls flow); a call with an
//! earlier limit than the one the task sleeps until wakes the task to
//! re-arm.
//!
//! The task is started on the current runtime by the first call that waits,
//! ends when the client's last clone is dropped, and is started again if
//! its runtime went away (one client belongs to one runtime, as its reqwest
//! pool does).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock;
use crate::{Error, ErrorKind};

/// The deadline of one call, in ticks ([`crate::clock`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    start: u64,
    at: u64,
    timeout: Duration,
}

/// `now + d`, or `None` when it does not fit in an instant.
#[inline]
pub(crate) fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

impl Deadline {
    /// A call started at `start` (ticks) with `timeout`.
    #[inline]
    pub(crate) fn new(start: u64, timeout: Duration) -> Deadline {
        Deadline {
            start,
            at: start.saturating_add(clock::of(timeout)),
            timeout,
        }
    }

    /// When the call started (ticks).
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// When the call must end (ticks).
    #[inline]
    pub(crate) fn at(&self) -> u64 {
        self.at
    }

    /// Whether waiting `wait` from `now` would end before the deadline.
    /// (A wait too long for any clock, from an absurd `Retry-After`,
    /// saturates and does not fit.)
    #[inline]
    pub(crate) fn fits(&self, now: u64, wait: Duration) -> bool {
        now.saturating_add(clock::of(wait)) < self.at
    }

    /// The limit of an attempt started at `now`: the deadline, or sooner
    /// with an attempt timeout.
    #[inline]
    pub(crate) fn limit(&self, now: u64, attempt_timeout: Option<Duration>) -> u64 {
        match attempt_timeout {
            Some(t) => now.saturating_add(clock::of(t)).min(self.at),
            None => self.at,
        }
    }

    /// The error of an attempt cut at `limit` (by the attempt timeout or by
    /// the whole call's).
    #[cold]
    pub(crate) fn elapsed(&self, limit: u64, attempt_timeout: Option<Duration>) -> Error {
        let message = match attempt_timeout {
            Some(t) if limit < self.at => format!("no answer within the attempt timeout of {t:?}"),
            _ => format!("the call's timeout of {:?} elapsed", self.timeout),
        };
        Error::new(ErrorKind::Timeout, message)
    }
}

// ===== the watch =====

/// Locks per watch: a thread keeps to one, so calls on different threads do
/// not contend.
const SHARDS: usize = 8;

/// "No limit armed."
const NONE: u64 = u64::MAX;

/// The limits of a client's waiting attempts, and the one task that wakes
/// them; see the [module docs](self).
pub(crate) struct Watch {
    shards: [Mutex<Slab<Waiter>>; SHARDS],
    /// The earliest limit recorded since the task last looked, in ticks;
    /// `NONE` when the task sleeps without a limit.
    armed: AtomicU64,
    /// Wakes the task to look at `armed` again (its own `Arc`, so the task
    /// can wait on it without keeping the watch alive).
    rearm: Arc<Notify>,
    /// Whether a task is watching (set back by the task when it ends).
    watching: AtomicBool,
}

struct Waiter {
    /// Ticks.
    limit: u64,
    waker: Waker,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watching", &self.watching.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's shard, given out in turn.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn my_shard() -> usize {
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            shard.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        shard.get()
    })
}

/// Where a waiter is: its shard and its slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    shard: usize,
    key: usize,
}

impl Watch {
    pub(crate) fn new() -> Arc<Watch> {
        Arc::new(Watch {
            shards: std::array::from_fn(|_| Mutex::new(Slab::new())),
            armed: AtomicU64::new(NONE),
            rearm: Arc::new(Notify::new()),
            watching: AtomicBool::new(false),
        })
    }

    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, Slab<Waiter>> {
        // A panic while holding it cannot leave a slab half-changed.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `future`, ended with a timeout error (from `elapsed`) once `limit`
    /// (ticks) has passed.
    #[inline]
    pub(crate) fn bound<F, T>(
        self: &Arc<Self>,
        limit: u64,
        future: F,
        elapsed: impl FnOnce() -> Error,
    ) -> Bounded<'_, F, impl FnOnce() -> Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        Bounded {
            inner: future,
            limit,
            watch: self,
            slot: None,
            elapsed: Some(elapsed),
        }
    }

    /// Records a waiter; the task will wake it at `limit`.
    fn enter(self: &Arc<Self>, limit: u64, waker: &Waker) -> Slot {
        let shard = my_shard();
        let key = self.shard(shard).insert(Waiter {
            limit,
            waker: waker.clone(),
        });
        // Limits mostly arrive in order, so the armed one is mostly earlier
        // already: then no read-modify-write. (Armed only ever falls, but
        // for the task's swap to `NONE` while it looks; an entry that reads
        // `NONE` lowers it and notifies, and one that read an earlier limit
        // is in the slab the task sweeps at that limit.)
        if limit < self.armed.load(Ordering::Acquire)
            && limit < self.armed.fetch_min(limit, Ordering::AcqRel)
        {
            // Earlier than what the task sleeps until: it must re-arm.
            self.rearm.notify_one();
        }
        if !self.watching.load(Ordering::Acquire) {
            self.start();
        }
        Slot { shard, key }
    }

    /// The waker to wake is now `waker`, unless the kept one wakes the same
    /// task (then nothing is cloned).
    fn update(&self, slot: Slot, waker: &Waker) {
        if let Some(waiter) = self.shard(slot.shard).get_mut(slot.key)
            && !waiter.waker.will_wake(waker)
        {
            waiter.waker = waker.clone();
        }
    }

    fn leave(&self, slot: Slot) {
        let waiter = self.shard(slot.shard).try_remove(slot.key);
        drop(waiter); // the waker is dropped outside the lock
    }

    /// Starts the watching task on the current runtime, unless one runs.
    #[cold]
    fn start(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // not on a runtime: nothing to wait on anyway
        };
        if self
            .watching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // Everything recorded before this task looks is looked at: re-arm.
        self.armed.store(0, Ordering::Release);
        runtime.spawn(watch(Arc::downgrade(self)));
    }

    /// Wakes every waiter whose limit is at or before `now`; returns the
    /// earliest limit after it (`NONE` if none).
    fn sweep(&self, now: u64) -> u64 {
        let mut next = NONE;
        for index in 0..SHARDS {
            let shard = self.shard(index);
            for (_, waiter) in shard.iter() {
                if waiter.limit <= now {
                    waiter.waker.wake_by_ref();
                } else {
                    next = next.min(waiter.limit);
                }
            }
        }
        next
    }
}

/// Marks the watch as unwatched when the task ends, however it ends (its
/// runtime shutting down drops it).
struct Watching(Weak<Watch>);

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(watch) = self.0.upgrade() {
            watch.watching.store(false, Ordering::Release);
        }
    }
}

/// The watching task: sleeps until the earliest armed limit, wakes the
/// waiters whose limit passed, and sleeps again; ends with the client.
async fn watch(weak: Weak<Watch>) {
    let _watching = Watching(weak.clone());
    let Some(notify) = weak.upgrade().map(|w| Arc::clone(&w.rearm)) else {
        return;
    };
    loop {
        let Some(watch) = weak.upgrade() else {
            return;
        };
        let rearm = notify.notified();
        tokio::pin!(rearm);
        rearm.as_mut().enable();
        // Take what is armed; later entries lower it again (and notify).
        let armed = watch.armed.swap(NONE, Ordering::AcqRel);
        let now = clock::now();
        let next = if armed <= now {
            watch.sweep(now)
        } else {
            armed
        };
        if next != NONE {
            watch.armed.fetch_min(next, Ordering::AcqRel);
        }
        let until = (next != NONE).then(|| clock::instant(next));
        // Not held while sleeping: the client's drop (of its last clone)
        // notifies, and the next round finds the watch gone.
        drop(watch);
        tokio::select! {
            () = &mut rearm => {}
            () = sleep_until(until) => {}
        }
    }
}

async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The client's hold on its watch: dropping it (with the last clone of the
/// client) wakes the task, which then ends.
#[derive(Debug)]
pub(crate) struct WatchHandle(pub(crate) Arc<Watch>);

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.0.rearm.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// A future cut at a limit by the client's [`Watch`].
    pub(crate) struct Bounded<'w, F, E> {
        #[pin]
        inner: F,
        limit: u64,
        watch: &'w Arc<Watch>,
        // The slab holds the waker to wake, and only the slab: a second
        // clone here, to compare the next poll's with, was an atomic
        // increment and decrement on the task's count per call. A poll
        // that finds the attempt still pending compares under the lock
        // (`Watch::update`); most attempts are polled once while pending.
        // (Comparing addresses kept here instead would be wrong: a
        // waker's clone may live at another address than the waker it was
        // made from, which a different waker may then be given.)
        slot: Option<Slot>,
        elapsed: Option<E>,
    }

    impl<'w, F, E> PinnedDrop for Bounded<'w, F, E> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(slot) = this.slot.take() {
                this.watch.leave(slot);
            }
        }
    }
}

impl<F, T, E> Future for Bounded<'_, F, E>
where
    F: Future<Output = Result<T, Error>>,
    E: FnOnce() -> Error,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            if let Some(slot) = this.slot.take() {
                this.watch.leave(slot);
            }
            return Poll::Ready(result);
        }
        match *this.slot {
            // The first wait: record it (no clock read on the fast path).
            None => *this.slot = Some(this.watch.enter(*this.limit, cx.waker())),
            Some(slot) => {
                if clock::now() >= *this.limit {
                    this.watch.leave(slot);
                    *this.slot = None;
                    let elapsed = this.elapsed.take();
                    return Poll::Ready(Err(elapsed.map_or_else(
                        || Error::new(ErrorKind::Timeout, "the limit passed"),
                        |make| make(),
                    )));
                }
                this.watch.update(slot, cx.waker());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sums_that_do_not_fit_are_later_than_the_deadline() {
        let now = clock::now();
        let d = Deadline::new(now, Duration::from_secs(1));
        assert!(d.fits(now, Duration::from_millis(999)));
        assert!(!d.fits(now, Duration::from_secs(1)));
        // A Retry-After of 9999999999999999999 seconds.
        assert!(!d.fits(now, Duration::from_secs(9_999_999_999_999_999_999)));
        assert!(!d.fits(now, Duration::MAX));
        assert_eq!(d.limit(now, Some(Duration::MAX)), d.at());
        assert_eq!(
            d.limit(now, Some(Duration::from_millis(10))),
            now + 10_000_000
        );
        let huge = Deadline::new(now, Duration::MAX);
        assert_eq!(huge.at(), u64::MAX, "saturated, not wrapped or panicked");
        assert!(after(Instant::now(), Duration::MAX).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_says_which_limit_cut_the_attempt() {
        let now = clock::now();
        let d = Deadline::new(now, Duration::from_secs(1));
        let t = Some(Duration::from_millis(100));
        let attempt = d.elapsed(d.limit(now, t), t).to_string();
        assert!(attempt.contains("attempt timeout of 100ms"), "{attempt}");
        let whole = d.elapsed(d.at(), t).to_string();
        assert!(whole.contains("call's timeout of 1s"), "{whole}");
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn pending_ok() -> impl Future<Output = Result<(), Error>> {
        std::future::pending()
    }

    /// Every waiter ends at its own limit, not before and not after, in any
    /// order of limits, with one task for all of them.
    #[tokio::test(start_paused = true)]
    async fn every_waiter_ends_exactly_at_its_limit() {
        let watch = Watch::new();
        let start = Instant::now();
        let start_ticks = clock::ticks(start);
        let limits_ms = [300u64, 100, 500, 100, 250, 1000, 50, 700];
        let ended = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for ms in limits_ms {
            let watch = Arc::clone(&watch);
            let ended = Arc::clone(&ended);
            tasks.push(tokio::spawn(async move {
                let limit = start_ticks + ms * 1_000_000;
                let result = watch
                    .bound(limit, pending_ok(), || {
                        Error::new(ErrorKind::Timeout, "cut")
                    })
                    .await;
                ended.fetch_add(1, Ordering::SeqCst);
                (ms, result.is_err(), Instant::now().duration_since(start))
            }));
        }
        for task in tasks {
            let (ms, timed_out, at) = task.await.unwrap_or_else(|e| panic!("{e}"));
            assert!(timed_out, "{ms} ms");
            assert_eq!(at, Duration::from_millis(ms), "ended at its limit");
        }
        assert_eq!(ended.load(Ordering::SeqCst), limits_ms.len());
        assert!(
            watch
                .shards
                .iter()
                .all(|s| s.lock().map(|s| s.is_empty()).unwrap_or(false))
        );
    }

    /// A waiter that finishes first leaves no trace, and a later, earlier
    /// limit re-arms the task.
    #[tokio::test(start_paused = true)]
    async fn finished_waiters_leave_and_an_earlier_limit_rearms() {
        let watch = Watch::new();
        let start = Instant::now();
        let t0 = clock::ticks(start);
        let long = {
            let watch = Arc::clone(&watch);
            tokio::spawn(async move {
                watch
                    .bound(t0 + 10_000_000_000, pending_ok(), || {
                        Error::new(ErrorKind::Timeout, "")
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let quick = watch
            .bound(
                t0 + 100_000_000,
                async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, Error>(7)
                },
                || Error::new(ErrorKind::Timeout, ""),
            )
            .await;
        assert_eq!(quick.ok(), Some(7));
        let short = watch
            .bound(t0 + 200_000_000, pending_ok(), || {
                Error::new(ErrorKind::Timeout, "")
            })
            .await;
        assert!(short.is_err());
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200),
            "re-armed for 200 ms"
        );
        long.abort();
        let _ = long.await;
        assert!(
            watch
                .shards
                .iter()
                .all(|s| s.lock().map(|s| s.is_empty()).unwrap_or(false))
        );
    }

    /// The task ends with the client's hold on the watch.
    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_client() {
        let handle = WatchHandle(Watch::new());
        let weak = Arc::downgrade(&handle.0);
        let t0 = clock::now();
        let done = handle
            .0
            .bound(t0 + 10_000_000, pending_ok(), || {
                Error::new(ErrorKind::Timeout, "")
            })
            .await;
        assert!(done.is_err());
        assert!(handle.0.watching.load(Ordering::SeqCst), "a task watches");
        drop(handle);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(weak.strong_count(), 0, "nothing holds the watch");
    }
}
