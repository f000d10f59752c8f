//! A method's probe: what the stages report to, built with the client, so
//! that a call looks nothing up. It opens the call's and each attempt's
//! span, times attempts for the metrics and the logs, and counts calls for
//! the statistics.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use http::StatusCode;
use tracing::Span;

use super::log::{self, LogPolicy};
use super::trace::{self, Server};
use crate::clock;
use crate::policy::classify::Outcome;
use crate::spec::MethodDef;
use crate::{Error, ErrorKind};

/// Whether attempts are timed even without an HTTP log: the metrics and the
/// statistics need their durations.
const TIMED: bool = cfg!(feature = "metrics") || cfg!(feature = "dashboard");

/// One method's probe.
pub(crate) struct Probe {
    pub(crate) client: &'static str,
    pub(crate) method: &'static str,
    pub(crate) verb: &'static str,
    pub(crate) template: &'static str,
    /// `{METHOD} {url.template}`, the attempt spans' OpenTelemetry name.
    name: Box<str>,
    pub(crate) log: LogPolicy,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: super::metrics::MethodMetrics,
    #[cfg(feature = "dashboard")]
    pub(crate) stats: std::sync::Arc<super::stats::MethodStats>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("name", &self.name)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Probe {
    pub(crate) fn new(client: &'static str, def: &'static MethodDef, log: LogPolicy) -> Probe {
        let verb = def.verb.as_str();
        Probe {
            client,
            method: def.name,
            verb,
            template: def.path,
            name: format!("{verb} {}", def.path).into_boxed_str(),
            log,
            #[cfg(feature = "metrics")]
            metrics: super::metrics::MethodMetrics::new(client, def.name, verb, def.path),
            #[cfg(feature = "dashboard")]
            stats: super::stats::method(client, def.name),
        }
    }

    /// The span of one call.
    #[inline]
    pub(crate) fn call_span(&self) -> Span {
        trace::call_span(self.client, self.method)
    }

    /// Whether attempts are timed (metrics, statistics, HTTP log).
    #[inline]
    fn timed(&self) -> bool {
        TIMED || self.log.is_on()
    }

    /// One attempt, to `server`, the `resend`-th after the first, cut at
    /// `limit` (ticks).
    #[inline]
    pub(crate) fn attempt<'p>(
        &'p self,
        server: &'p Server,
        resend: u32,
        instance: Option<&str>,
        limit: u64,
    ) -> Attempt<'p> {
        let span = trace::attempt_span(&self.name, self.verb, self.template, server);
        if resend > 0 {
            span.record("http.request.resend_count", resend);
        }
        if let Some(id) = instance {
            span.record("courier.instance", id);
        }
        Attempt {
            probe: self,
            server,
            span,
            start: if self.timed() { clock::now() } else { 0 },
            limit,
            status: AtomicU16::new(0),
            done: false,
        }
    }

    /// A call's end (before any fallback): its span's fields, the retry
    /// metrics, the statistics. `started` is the call's start in ticks.
    #[inline]
    pub(crate) fn call_done(
        &self,
        span: &Span,
        error: Option<&Error>,
        sent: u32,
        admitted: u32,
        started: u64,
    ) {
        if !span.is_none() {
            span.record("courier.attempts", sent);
            match error {
                None => span.record("courier.outcome", "ok"),
                Some(e) => span.record("courier.outcome", e.kind().label()),
            };
        }
        #[cfg(feature = "metrics")]
        self.metrics.call(error.is_none(), admitted > 1);
        #[cfg(feature = "dashboard")]
        self.stats.call(
            error.is_some(),
            admitted,
            Duration::from_nanos(clock::now().saturating_sub(started)),
        );
        let _ = (admitted, started);
    }

    /// An attempt's outcome, as the breaker saw it.
    #[inline]
    pub(crate) fn outcome(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        self.metrics.outcome(outcome);
        let _ = outcome;
    }

    /// An attempt the breaker did not permit.
    #[cold]
    pub(crate) fn not_permitted(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.not_permitted();
    }

    /// An attempt the rate limiter refused.
    #[cold]
    pub(crate) fn rate_limited(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.rate_limited();
    }

    /// The breaker's rates after an outcome.
    #[inline]
    #[cfg(feature = "metrics")]
    pub(crate) fn breaker_rates(&self, counts: (u64, u64, u64)) {
        #[cfg(feature = "metrics")]
        {
            let (failed, slow, calls) = counts;
            let rate = |n: u64| {
                if calls == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / calls as f64
                }
            };
            self.metrics.rates(rate(failed), rate(slow));
        }
        let _ = counts;
    }

    /// The bulkhead's use.
    #[inline]
    pub(crate) fn bulkhead(&self, available: usize, max: u32) {
        #[cfg(feature = "metrics")]
        self.metrics.bulkhead(available, max);
        let _ = (available, max);
    }

    /// The breaker was made: its gauges start closed.
    pub(crate) fn breaker_started(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.breaker_started();
    }

    /// The line an HTTP log writes for this method.
    pub(crate) fn line(&self) -> log::Line<'_> {
        log::Line {
            client: self.client,
            method: self.method,
            verb: self.verb,
            template: self.template,
            policy: &self.log,
        }
    }
}

/// One attempt being observed. Dropped without [`finish`](Self::finish)
/// (cut by its limit, or a hedge that lost), it records itself as timed
/// out or cancelled.
pub(crate) struct Attempt<'p> {
    probe: &'p Probe,
    server: &'p Server,
    pub(crate) span: Span,
    /// Ticks at its start; 0 when not timed.
    start: u64,
    limit: u64,
    /// The status it got, 0 before an answer.
    status: AtomicU16,
    done: bool,
}

impl Attempt<'_> {
    /// The probe.
    pub(crate) fn probe(&self) -> &Probe {
        self.probe
    }

    /// The service answered with `status` (a redirect that is followed
    /// answers again).
    #[inline]
    pub(crate) fn answered(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::Relaxed);
        if !self.span.is_none() {
            self.span
                .record("http.response.status_code", status.as_u16());
        }
    }

    /// Time since the start (zero when not timed).
    pub(crate) fn elapsed(&self) -> Duration {
        if self.start == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(clock::now().saturating_sub(self.start))
    }

    /// The attempt ended with `result`.
    #[inline]
    pub(crate) fn finish<T>(mut self, result: &Result<T, Error>) {
        self.done = true;
        let status = self.status.load(Ordering::Relaxed);
        match result {
            Ok(_) => self.record(Answered::Status(status)),
            Err(e) => {
                if !self.span.is_none() {
                    match e.status() {
                        Some(s) => self.span.record("error.type", s.as_str()),
                        None => self.span.record("error.type", e.kind().label()),
                    };
                }
                if self.probe.log.is_on() && e.status().is_none() {
                    log::failed(&self.probe.line(), e, self.elapsed());
                }
                match e.status() {
                    Some(s) => self.record(Answered::Status(s.as_u16())),
                    None => self.record(Answered::Error(e.kind())),
                }
            }
        }
    }

    #[inline]
    fn record(&self, answered: Answered) {
        #[cfg(feature = "metrics")]
        if self.start != 0 {
            let seconds = self.elapsed().as_secs_f64();
            let answer = match answered {
                Answered::Status(code) => super::metrics::Answer::Status(code),
                Answered::Error(kind) => super::metrics::Answer::Error(kind),
            };
            self.probe.metrics.duration(self.server, answer, seconds);
        }
        let _ = (answered, self.server);
    }
}

#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
enum Answered {
    Status(u16),
    Error(ErrorKind),
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Cut by its limit, or cancelled (a hedge that lost, a dropped call).
        let kind = if clock::now() >= self.limit {
            ErrorKind::Timeout
        } else {
            ErrorKind::Transport
        };
        if !self.span.is_none() {
            let label = if kind == ErrorKind::Timeout {
                "timeout"
            } else {
                "cancelled"
            };
            self.span.record("error.type", label);
        }
        if kind == ErrorKind::Timeout {
            if self.probe.log.is_on() {
                let error = Error::new(ErrorKind::Timeout, "");
                log::failed(&self.probe.line(), &error, self.elapsed());
            }
            self.record(Answered::Error(kind));
        }
    }
}
