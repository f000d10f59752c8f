//! One method call, wired outer to inner. Each stage lives in the file named
//! after it; this file only puts them in order:
//!
//! ```text
//! fallback   generated code: on an eligible error, the fallback's same method
//! deadline   policy/deadline.rs: `timeout` bounds every wait below
//! retry      policy/retry.rs: back-off with full jitter, Retry-After, budget
//! hedge      policy/hedge.rs: extra attempts after a delay (idempotent only)
//! guard      policy/guard.rs: circuit breaker, rate limiter, bulkhead
//! balance    balance/mod.rs: pick an instance, run, record
//! transport  transport.rs: interceptors, tower layers, reqwest, redirects,
//!            body under the limit, decode
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tracing::{Instrument as _, Span};

use crate::Error;
use crate::client::{ClientSpec, MethodRuntime, Runtime, Shared, Target};
use crate::codec::Decode;
use crate::policy::guard::AttemptInfo;
use crate::policy::{PolicyCall, retry};
use crate::request::RequestParts;

/// One call of one method: what generated code drives.
#[doc(hidden)]
pub struct MethodCall<'a> {
    shared: &'a Shared,
    method: &'a MethodRuntime,
    /// The call's span: the policies, the attempts and any fallback run in
    /// it.
    span: Span,
}

impl<'a> MethodCall<'a> {
    #[inline]
    pub(crate) fn new(shared: &'a Shared, method: &'a MethodRuntime) -> Self {
        MethodCall {
            shared,
            method,
            span: method.probe.call_span(),
        }
    }

    /// An empty request, sized for this method's path.
    #[inline]
    fn request(&self) -> RequestParts {
        let base = match &self.shared.target {
            Target::Fixed(base, _) => base,
            // Each attempt prefixes its instance's base URL.
            Target::Balanced(_) => "",
        };
        RequestParts::new(base, self.method.def.path.len() + 16)
    }

    #[inline]
    fn policies(&self, start: u64) -> PolicyCall<'a> {
        let m = self.method;
        PolicyCall::new(
            &m.policy,
            &m.probe,
            &self.shared.events,
            m.breaker.as_ref(),
            m.bulkhead.as_ref(),
            m.limiter.as_deref(),
            self.shared.budget.as_ref(),
            &self.shared.watch.0,
            start,
        )
    }

    /// One call: `fill` turns the arguments into the request (checking every
    /// value, so a bad one fails here, before anything is sent), then the
    /// request runs through the method's stages and the answer is decoded
    /// with `D`. Generated code calls this once per method call.
    ///
    /// # Errors
    /// The call's failure, with its service, method, verb, path and the
    /// number of attempts sent attached.
    pub async fn call<D, F>(&self, fill: F) -> Result<D::Output, Error>
    where
        D: Decode,
        F: FnOnce(&mut RequestParts) -> Result<(), Error>,
    {
        let mut parts = self.request();
        if let Err(e) = fill(&mut parts) {
            return Err(self.locate(e, &parts));
        }
        if let Some(min_size) = self.method.policy.compress {
            parts.compress_body(min_size);
        }
        if D::STREAM {
            parts.stream_idle = self.method.policy.timeout;
        }
        let sent = AtomicU32::new(0);
        let last_instance = AtomicU64::new(0);
        let attempt = |info| self.attempt::<D>(&parts, &sent, &last_instance, info);
        let start = crate::clock::now();
        let policies = self.policies(start);
        // NOTE: instrumented only when a subscriber wants the span: wrapping
        // moves the whole policy future once more (a 1.4 KB copy per call).
        let result = if self.span.is_disabled() {
            retry::run(&policies, &attempt).await
        } else {
            retry::run(&policies, &attempt)
                .instrument(self.span.clone())
                .await
        };
        let sent = sent.load(Ordering::Relaxed);
        self.method.probe.call_done(
            &self.span,
            result.as_ref().err(),
            sent,
            policies.started(),
            start,
        );
        result.map_err(|e| self.locate(e, &parts).with_attempts(sent))
    }

    /// The call's span, marked as answered by the fallback: generated code
    /// runs the fallback in it.
    #[doc(hidden)]
    pub fn fallback_span(&self) -> Span {
        self.span.record("courier.fallback", true);
        self.span.clone()
    }

    /// Attaches this call's whereabouts to an error.
    fn locate(&self, error: Error, parts: &RequestParts) -> Error {
        let def = self.method.def;
        error.at(
            self.shared.transport.service,
            def.name,
            &self.method.verb,
            parts.path(),
        )
    }

    /// Runs `attempt` through this method's policy stages (deadline, retry
    /// and budget, hedging, breaker, bulkhead), without HTTP: what the
    /// overhead benchmark measures around a transport that answers at once.
    /// Not API.
    #[doc(hidden)]
    pub async fn run_policies<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        retry::run(&self.policies(crate::clock::now()), &|_| attempt()).await
    }

    /// One attempt below the guard: the balance stage (with discovery),
    /// then the transport stage, in the attempt's span.
    async fn attempt<D: Decode>(
        &self,
        parts: &RequestParts,
        sent: &AtomicU32,
        last_instance: &AtomicU64,
        info: AttemptInfo,
    ) -> Result<D::Output, Error> {
        let transport = &self.shared.transport;
        let (verb, probe) = (&self.method.verb, &self.method.probe);
        match &self.shared.target {
            Target::Fixed(_, server) => {
                let observed = probe.attempt(server, info.number, None, info.limit);
                let result = if observed.span.is_disabled() {
                    transport
                        .exchange::<D>(verb, &observed, parts, None, sent)
                        .await
                } else {
                    transport
                        .exchange::<D>(verb, &observed, parts, None, sent)
                        .instrument(observed.span.clone())
                        .await
                };
                observed.finish(&result);
                result
            }
            Target::Balanced(balancer) => {
                let (picked, start) = balancer.start(last_instance).await?;
                let endpoint = picked.endpoint();
                let id = Some(endpoint.instance().id.as_str());
                let observed = probe.attempt(endpoint.server(), info.number, id, info.limit);
                let base = Some((endpoint.base_url(), endpoint.origin()));
                let result = if observed.span.is_disabled() {
                    transport
                        .exchange::<D>(verb, &observed, parts, base, sent)
                        .await
                } else {
                    transport
                        .exchange::<D>(verb, &observed, parts, base, sent)
                        .instrument(observed.span.clone())
                        .await
                };
                observed.finish(&result);
                balancer.finish(picked, start, result)
            }
        }
    }
}

impl<C: ClientSpec> Runtime<C> {
    /// The runtime of the method at `index` in [`ClientDef::methods`](crate::spec::ClientDef::methods).
    ///
    /// # Panics
    /// If `index` is out of range; generated code only passes the indices
    /// it generated the table with.
    #[doc(hidden)]
    #[inline]
    pub fn method(&self, index: usize) -> MethodCall<'_> {
        MethodCall::new(&self.inner.shared, &self.inner.methods[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{MethodRuntime, Shared, Target};
    use crate::codec::{Decoded, Json};
    use crate::observe::EventSink;
    use crate::policy::MethodPolicy;
    use crate::spec::{MethodDef, Overrides, Verb};
    use crate::transport::{Redirects, Settings, Transport};

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct User {
        id: u64,
        name: String,
    }

    static DEF: MethodDef = MethodDef {
        name: "get",
        verb: Verb::Get,
        path: "/x",
        idempotent: false,
        auth: true,
        replayable: true,
        policy: Overrides::NONE,
    };

    /// Every call's future is one allocation (or a slot in the caller's
    /// future) and is copied when moved: its size is a cost on every call.
    /// Stages pass the attempt function down rather than futures, and the
    /// transport builds requests in plain functions, because an `async fn`
    /// keeps a future or a request it is given as an argument apart from
    /// what it awaits (rust-lang/rust#62958): passing futures made the call
    /// future 4.4 KB. This pins the budget with room to spare.
    #[test]
    fn the_call_future_stays_small() {
        let shared = Shared {
            target: Target::Fixed(
                "http://h".into(),
                crate::observe::trace::Server::of("http://h"),
            ),
            transport: Settings {
                service: "s",
                transport: Transport::Reqwest(reqwest::Client::new(), None, false),
                default_headers: http::HeaderMap::new(),
                hooks: Box::new([]),
                max_response_bytes: 1,
                redirects: Redirects::default(),
            },
            budget: None,
            events: EventSink::none(),
            watch: crate::policy::deadline::WatchHandle(crate::policy::deadline::Watch::new()),
        };
        let policy = MethodPolicy::resolve(&DEF, &[]);
        let m = MethodRuntime {
            def: &DEF,
            verb: http::Method::GET,
            policy,
            breaker: None,
            bulkhead: None,
            limiter: None,
            probe: crate::observe::probe::Probe::new("s", &DEF, policy.log),
        };
        let call = MethodCall::new(&shared, &m);
        let future = call.call::<Decoded<Json, User>, _>(|_| Ok(()));
        let size = std::mem::size_of_val(&future);
        assert!(size <= 2048, "a call's future is {size} bytes");
    }
}
