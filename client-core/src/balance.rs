//! Client-side load balancing over the instances a [`Discovery`] reports,
//! with passive outlier ejection.
//!
//! **Power of two choices over peak-EWMA** (the default, [`Balance::PeakEwma`];
//! Finagle's and Linkerd's balancer, tower's `PeakEwma`): pick two instances
//! at random and send to the one with the lower cost, where cost is the
//! instance's round-trip estimate times its in-flight requests plus one.
//! The estimate is an exponentially weighted moving average that jumps to
//! any slower sample at once ("peak") and decays towards faster ones with a
//! 10 s time constant; it starts at 30 ms. A slow instance is avoided as
//! soon as one slow answer comes back, and probed again as its estimate
//! decays. **Round robin** ([`Balance::RoundRobin`]) is there for when
//! exact spreading matters more.
//!
//! **Outlier ejection** (Envoy's, [`OutlierEjection`]): 5 consecutive
//! failures (connect errors, timeouts, 5xx, by the shared
//! [classifier](crate::policy::classify)) eject an instance for 30 s × the
//! times it was ejected, at most 300 s; never more than half the set is
//! ejected, and if every instance is ejected anyway (the set shrank), all
//! are used rather than none (Envoy's panic threshold).
//!
//! The instance set is an `ArcSwap`: a pick reads it without a lock, and
//! costs O(1) whatever the number of instances (two random probes; a bounded
//! number more if they hit ejected instances). Updates from the discovery
//! build a new set that keeps each surviving instance's state (by id), so a
//! removed instance gets no new calls while its in-flight calls finish, and
//! a new one gets traffic at once.
//!
//! [`Discovery`]: crate::discovery::Discovery

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::discovery::Instance;
use crate::policy::classify::Outcome;
use crate::url::normalize_base_url;

/// How a client spreads calls over instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Power of two choices over peak-EWMA latency × in-flight calls.
    #[default]
    PeakEwma,
    /// Each instance in turn.
    RoundRobin,
}

/// When an instance is taken out of rotation for failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierEjection {
    /// Consecutive failures that eject an instance. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times this. Default 30 s.
    pub base_time: Duration,
    /// The longest ejection. Default 300 s.
    pub max_time: Duration,
    /// The most of the set that may be ejected at once, in percent.
    /// Default 50.
    pub max_ejected_percent: u8,
}

impl Default for OutlierEjection {
    fn default() -> Self {
        OutlierEjection {
            consecutive_failures: 5,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Round-trip estimate an instance starts with: 30 ms.
const INITIAL_RTT_NS: f64 = 30_000_000.0;
/// Time constant of the estimate's decay: 10 s.
const DECAY_NS: f64 = 10_000_000_000.0;
/// Random probes before a pick falls back to a scan.
const PROBES: usize = 8;

/// One instance, with what the balancer has learnt about it.
pub struct Endpoint {
    /// Process-unique, so a retry can ask for "not that one".
    key: u64,
    instance: Instance,
    /// Normalised base URL.
    base: Box<str>,
    in_flight: AtomicU32,
    /// Round-trip estimate in ns, as `f64` bits.
    rtt: AtomicU64,
    /// When `rtt` was last updated, ns since the balancer's epoch.
    stamp: AtomicU64,
    failures: AtomicU32,
    /// Ejected until this time (ns since the epoch); 0 when never.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl Endpoint {
    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Its base URL, normalised (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Calls in flight to it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ns
    }

    /// The estimate decayed to `now_ns`.
    fn rtt_at(&self, now_ns: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        rtt * (-elapsed / DECAY_NS).exp()
    }

    fn cost(&self, now_ns: u64) -> f64 {
        self.rtt_at(now_ns) * f64::from(self.in_flight() + 1)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.instance.id)
            .field("url", &self.base)
            .field("in_flight", &self.in_flight())
            .field(
                "rtt_ms",
                &(f64::from_bits(self.rtt.load(Ordering::Relaxed)) / 1e6),
            )
            .field("ejections", &self.ejections.load(Ordering::Relaxed))
            .finish()
    }
}

/// A call's hold on an instance: counts it in flight until dropped (at the
/// end of the attempt, or when the call is cancelled).
pub struct Picked {
    endpoint: Arc<Endpoint>,
}

impl Picked {
    /// The instance picked.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its process-unique key, for [`Balancer::pick`]'s `avoid`.
    pub fn key(&self) -> u64 {
        self.endpoint.key
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The instances of one service and the balancing state; one per built
/// client.
pub struct Balancer {
    service: &'static str,
    kind: Balance,
    ejection: Option<OutlierEjection>,
    epoch: Instant,
    set: ArcSwap<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    keys: AtomicU64,
    /// Whether the discovery has answered once; calls wait for it.
    known: AtomicBool,
    first_answer: Notify,
}

impl Balancer {
    /// An empty balancer.
    pub fn new(service: &'static str, kind: Balance, ejection: Option<OutlierEjection>) -> Self {
        Balancer {
            service,
            kind,
            ejection,
            epoch: Instant::now(),
            set: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            keys: AtomicU64::new(1),
            known: AtomicBool::new(false),
            first_answer: Notify::new(),
        }
    }

    /// Whether the discovery has reported a set (even an empty one).
    pub fn is_known(&self) -> bool {
        self.known.load(Ordering::Acquire)
    }

    /// Waits until the discovery has reported a set.
    pub async fn known(&self) {
        loop {
            let answered = self.first_answer.notified();
            if self.is_known() {
                return;
            }
            answered.await;
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// Replaces the instance set. Instances already known (same id and URL)
    /// keep their state; an instance whose URL is not a valid base URL is
    /// left out.
    pub fn update(&self, instances: &[Instance]) {
        let old = self.set.load();
        let now_ns = self.nanos(Instant::now());
        let mut endpoints = Vec::with_capacity(instances.len());
        for instance in instances {
            if let Some(known) = old
                .iter()
                .find(|e| e.instance.id == instance.id && e.instance.url == instance.url)
            {
                endpoints.push(Arc::clone(known));
                continue;
            }
            let Ok(base) = normalize_base_url(&instance.url) else {
                continue; // NOTE: a bad URL in a registry must not break the client
            };
            endpoints.push(Arc::new(Endpoint {
                key: self.keys.fetch_add(1, Ordering::Relaxed),
                instance: instance.clone(),
                base: base.into_boxed_str(),
                in_flight: AtomicU32::new(0),
                rtt: AtomicU64::new(INITIAL_RTT_NS.to_bits()),
                stamp: AtomicU64::new(now_ns),
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                ejections: AtomicU32::new(0),
            }));
        }
        self.set.store(Arc::new(endpoints));
        if !self.known.swap(true, Ordering::AcqRel) {
            self.first_answer.notify_waiters();
        }
    }

    /// The current instances.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.set.load().iter().cloned().collect()
    }

    /// Picks an instance, preferring one other than `avoid` (the key of the
    /// previous attempt's instance, 0 for none). `None` when there are no
    /// instances.
    #[inline]
    pub fn pick(&self, avoid: u64, now: Instant) -> Option<Picked> {
        let set = self.set.load();
        let n = set.len();
        let endpoint = match n {
            0 => return None,
            1 => &set[0],
            _ => {
                let now_ns = self.nanos(now);
                let usable = |e: &Endpoint| e.key != avoid && !e.ejected(now_ns);
                let index = match self.kind {
                    // Each skip takes a turn of its own, so an ejected
                    // instance's share is spread, not handed to its neighbour.
                    Balance::RoundRobin => (0..n)
                        .map(|_| self.next.fetch_add(1, Ordering::Relaxed) % n)
                        .find(|&i| usable(&set[i])),
                    Balance::PeakEwma => {
                        let probe = |other: Option<usize>| {
                            (0..PROBES)
                                .map(|_| fastrand::usize(..n))
                                .find(|&i| Some(i) != other && usable(&set[i]))
                        };
                        match probe(None) {
                            Some(a) => match probe(Some(a)) {
                                Some(b) if set[b].cost(now_ns) < set[a].cost(now_ns) => Some(b),
                                _ => Some(a),
                            },
                            None => set.iter().position(|e| usable(e)),
                        }
                    }
                };
                // Nothing usable: the one to avoid if it is not ejected, else
                // any (Envoy's panic mode: all rather than none).
                let index = index
                    .or_else(|| set.iter().position(|e| !e.ejected(now_ns)))
                    .unwrap_or_else(|| fastrand::usize(..n));
                &set[index]
            }
        };
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            endpoint: Arc::clone(endpoint),
        })
    }

    /// Records how an attempt on `picked` went.
    pub fn record(&self, picked: &Picked, outcome: Outcome, rtt: Duration, now: Instant) {
        if outcome == Outcome::Ignored {
            return; // nothing was sent: says nothing about the instance
        }
        let e = &*picked.endpoint;
        let now_ns = self.nanos(now);
        let sample = rtt.as_nanos() as f64;
        let current = f64::from_bits(e.rtt.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(e.stamp.load(Ordering::Relaxed)) as f64;
        let next = if sample > current {
            sample
        } else {
            let w = (-elapsed / DECAY_NS).exp();
            current * w + sample * (1.0 - w)
        };
        e.rtt.store(next.to_bits(), Ordering::Relaxed);
        e.stamp.store(now_ns, Ordering::Relaxed);
        match outcome {
            Outcome::Success => {
                if e.failures.load(Ordering::Relaxed) != 0 {
                    e.failures.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => self.failed(e, now_ns),
            Outcome::Ignored => {}
        }
    }

    fn failed(&self, e: &Endpoint, now_ns: u64) {
        let Some(policy) = &self.ejection else {
            return;
        };
        let failures = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.consecutive_failures || e.ejected(now_ns) {
            return;
        }
        let set = self.set.load();
        let ejected = set.iter().filter(|x| x.ejected(now_ns)).count();
        if (ejected + 1) * 100 > set.len() * usize::from(policy.max_ejected_percent) {
            return; // would eject too much of the set
        }
        let times = e.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = policy.base_time.saturating_mul(times).min(policy.max_time);
        let length_ns = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        e.ejected_until
            .store(now_ns.saturating_add(length_ns), Ordering::Relaxed);
        e.failures.store(0, Ordering::Relaxed);
    }

    /// Whether the instance with this id is ejected now.
    pub fn is_ejected(&self, id: &str) -> bool {
        let now_ns = self.nanos(Instant::now());
        self.set
            .load()
            .iter()
            .any(|e| e.instance.id == id && e.ejected(now_ns))
    }

    /// The service balanced.
    pub fn service(&self) -> &'static str {
        self.service
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.service)
            .field("kind", &self.kind)
            .field("instances", &*self.set.load())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(kind: Balance, n: usize) -> Balancer {
        let b = Balancer::new("svc", kind, Some(OutlierEjection::default()));
        let instances: Vec<_> = (0..n)
            .map(|i| Instance::new(format!("i{i}"), format!("http://10.0.0.{i}:80")))
            .collect();
        b.update(&instances);
        b
    }

    fn id(p: &Picked) -> String {
        p.endpoint().instance().id.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_is_exact_and_a_retry_avoids_the_last_instance() {
        let b = balancer(Balance::RoundRobin, 3);
        let now = Instant::now();
        let ids: Vec<String> = (0..6)
            .filter_map(|_| b.pick(0, now))
            .map(|p| id(&p))
            .collect();
        assert_eq!(ids, ["i0", "i1", "i2", "i0", "i1", "i2"]);
        let first = b.pick(0, now).map(|p| p.key()).unwrap_or_default();
        for _ in 0..10 {
            let again = b.pick(first, now).map(|p| p.key());
            assert_ne!(again, Some(first));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_avoids_a_slow_instance_and_counts_in_flight() {
        let b = balancer(Balance::PeakEwma, 3);
        let now = Instant::now();
        for p in b.endpoints() {
            let picked = Picked {
                endpoint: p.clone(),
            };
            p.in_flight.fetch_add(1, Ordering::Relaxed);
            let rtt = if p.instance.id == "i2" { 200 } else { 2 };
            b.record(&picked, Outcome::Success, Duration::from_millis(rtt), now);
        }
        let slow = (0..1000)
            .filter_map(|_| b.pick(0, now))
            .filter(|p| id(p) == "i2")
            .count();
        assert_eq!(slow, 0, "two distinct probes always include a fast one");
        // In-flight calls raise the cost: hold many on i0.
        let held: Vec<_> = (0..500).filter_map(|_| b.pick(0, now)).collect();
        let on_i0 = held.iter().filter(|p| id(p) == "i0").count();
        assert!((150..=350).contains(&on_i0), "{on_i0} of 500 on i0");
        drop(held);
        assert!(
            b.endpoints().iter().all(|e| e.in_flight() == 0),
            "guards release"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_eject_for_base_times_n_but_never_more_than_half() {
        let b = balancer(Balance::RoundRobin, 3);
        let fail = |target: &str| {
            let now = Instant::now();
            for e in b.endpoints().iter().filter(|e| e.instance.id == target) {
                let p = Picked {
                    endpoint: e.clone(),
                };
                e.in_flight.fetch_add(1, Ordering::Relaxed);
                b.record(&p, Outcome::Failure, Duration::from_millis(1), now);
            }
        };
        for _ in 0..4 {
            fail("i0");
        }
        assert!(!b.is_ejected("i0"));
        fail("i0");
        assert!(b.is_ejected("i0"));
        let now = Instant::now();
        assert!(
            (0..30)
                .filter_map(|_| b.pick(0, now))
                .all(|p| id(&p) != "i0")
        );
        // A second instance may not go: 2 of 3 is more than half.
        for _ in 0..5 {
            fail("i1");
        }
        assert!(!b.is_ejected("i1"));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!b.is_ejected("i0"), "back after 30 s");
        for _ in 0..5 {
            fail("i0");
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(b.is_ejected("i0"), "second ejection lasts 60 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!b.is_ejected("i0"));
    }

    #[tokio::test(start_paused = true)]
    async fn updates_keep_known_instances_and_a_single_instance_is_never_avoided() {
        let b = balancer(Balance::PeakEwma, 2);
        let before = b.endpoints();
        b.update(&[
            Instance::new("i1", "http://10.0.0.1:80"),
            Instance::new("new", "http://10.0.0.9:80"),
            Instance::new("bad", "not a url"),
        ]);
        let after = b.endpoints();
        assert_eq!(after.len(), 2, "the bad URL is left out");
        assert!(Arc::ptr_eq(&before[1], &after[0]), "i1 kept its state");
        let now = Instant::now();
        b.update(&[Instance::new("only", "http://10.0.0.5:80")]);
        let key = b.pick(0, now).map(|p| p.key()).unwrap_or_default();
        assert_eq!(b.pick(key, now).map(|p| p.key()), Some(key));
        b.update(&[]);
        assert!(b.pick(0, now).is_none());
    }
}
