//! Hedged requests: for an idempotent method, if no answer came after
//! `delay`, send another attempt (up to `max_extra` more); the first good
//! answer wins and the others are cancelled by dropping them.
//!
//! From "The Tail at Scale" (Dean and Barroso, 2013): a hedge sent at about
//! the 95th-percentile latency cuts the tail at the cost of a few percent
//! more requests. Each hedge is a full attempt (breaker, bulkhead,
//! interceptors) and takes a token from the retry budget, so hedging can
//! never multiply the load on a struggling service. Non-idempotent methods
//! never hedge.
//!
//! A hedge is optional: when the breaker or the bulkhead refuses it (the
//! bulkhead is full with the first attempt, say), it is simply not sent, and
//! the call goes on with the attempts in flight (another hedge may be tried
//! after the next `delay`). Only the first attempt's refusal ends the call.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

pub use super::HedgePolicy;
use super::PolicyCall;
use super::classify::is_retryable;
use super::deadline::after;
use super::guard::AttemptInfo;
use crate::clock;
use crate::observe::Event;
use crate::{Error, ErrorKind};

/// Races the first attempt against hedges sent every `delay` while no
/// answer has come; the first success, or the first answer that is not
/// worth waiting past (a 4xx, say), wins and drops the others.
pub(crate) async fn race<T, F, Fut>(
    call: &PolicyCall<'_>,
    hedge: &HedgePolicy,
    attempt: &F,
) -> Result<T, Error>
where
    F: Fn(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let on = call.policy.retry.map(|r| r.on).unwrap_or_default();
    let deadline = clock::instant(call.deadline.at());
    let now = Instant::now();
    let first = call.admit(clock::ticks(now)).await?;
    let mut racing = FuturesUnordered::new();
    racing.push(first.run(call, attempt));
    let mut extra = 0;
    let mut next_hedge = after(now, hedge.delay);
    let mut last_error = None;
    loop {
        let hedge_at = next_hedge.filter(|at| extra < hedge.max_extra && *at < deadline);
        tokio::select! {
            finished = racing.next() => match finished {
                Some(Ok(value)) => return Ok(value),
                Some(Err(e)) if racing.is_empty() || !is_retryable(&e, true, &on) => {
                    return Err(e);
                }
                Some(Err(e)) => last_error = Some(e),
                None => {
                    return Err(last_error.unwrap_or_else(|| {
                        Error::new(ErrorKind::Timeout, "no attempt finished")
                    }));
                }
            },
            () = tokio::time::sleep_until(hedge_at.unwrap_or(deadline)), if hedge_at.is_some() => {
                let now = Instant::now();
                next_hedge = after(now, hedge.delay);
                // Refused locally (open breaker, full bulkhead): not sent.
                let Ok(admitted) = call.try_admit(clock::ticks(now)) else {
                    continue;
                };
                if call.budget.is_some_and(|b| !b.withdraw(now)) {
                    call.events.emit(&Event::BudgetExhausted {
                        service: call.probe.client,
                        method: call.probe.method,
                    });
                    extra = hedge.max_extra; // budget spent: no more hedges
                    continue; // (the unused admission gives its slots back)
                }
                racing.push(admitted.run(call, attempt));
                extra += 1;
                call.events.emit(&Event::HedgeSent {
                    service: call.probe.client,
                    method: call.probe.method,
                    in_flight: racing.len() as u32,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::HedgePolicy;
    use crate::policy::fixture::{Attempts, Method};

    /// Runs `race` with attempts that take `took(n)` ms to answer `n`.
    async fn race_with(hedge: HedgePolicy, took: fn(u32) -> u64) -> (Option<u32>, u32, Duration) {
        let m = Method::new(|p| p.hedge = Some(hedge));
        let attempts = Attempts::default();
        let start = Instant::now();
        let call = m.call();
        let result = race(&call, &hedge, &|_| {
            let n = attempts.next();
            async move {
                tokio::time::sleep(Duration::from_millis(took(n))).await;
                Ok::<_, Error>(n)
            }
        })
        .await;
        (result.ok(), attempts.made(), start.elapsed())
    }

    /// The race alone, under the paused clock: a first attempt still
    /// unanswered after the delay is hedged, and the first answer wins.
    #[tokio::test(start_paused = true)]
    async fn a_late_answer_is_hedged_and_the_first_answer_wins() {
        let hedge = HedgePolicy {
            delay: Duration::from_millis(50),
            max_extra: 1,
        };
        let (answer, made, took) = race_with(hedge, |n| if n == 0 { 1000 } else { 10 }).await;
        assert_eq!((answer, made), (Some(1), 2));
        assert_eq!(took, Duration::from_millis(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_within_the_delay_sends_no_hedge() {
        let hedge = HedgePolicy {
            delay: Duration::from_millis(50),
            max_extra: 1,
        };
        let (answer, made, took) = race_with(hedge, |_| 20).await;
        assert_eq!((answer, made), (Some(0), 1));
        assert_eq!(took, Duration::from_millis(20));
    }

    /// At most `max_extra` hedges, one per delay; the first attempt may
    /// still win.
    #[tokio::test(start_paused = true)]
    async fn no_more_hedges_than_max_extra() {
        let hedge = HedgePolicy {
            delay: Duration::from_millis(10),
            max_extra: 2,
        };
        let (answer, made, took) = race_with(hedge, |n| 1000 - u64::from(n)).await;
        // Sent at 0, 10 and 20 ms, answering at 1000, 1009 and 1018 ms.
        assert_eq!((answer, made), (Some(0), 3));
        assert_eq!(took, Duration::from_millis(1000));
    }
}
