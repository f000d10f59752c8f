//! The one classifier: what an attempt's result means for the circuit
//! breaker, for retry and for the fallback, decided in one place so that
//! none of them can disagree (as tower-http's `classify` does for its
//! middlewares). Every result falls in one class (`Class`); the three answers are
//! read off the class.
//!
//! | result | class | breaker | retried when | fallback |
//! |---|---|---|---|---|
//! | success | — | success | never | no |
//! | connect error (refused, connect timeout) | not sent | failure | always: nothing was sent | yes |
//! | HTTP/2 stream refused, or a graceful `GOAWAY`, before the request was processed | not sent | failure | always: the service says it did nothing | yes |
//! | either of the two above on a redirect's next hop or a resend after 401 | failed | failure | the method is idempotent: the first request was answered | yes |
//! | attempt timeout, transport error | failed | failure | the method is idempotent | yes |
//! | body broke off after the headers | failed | failure | the method is idempotent | yes |
//! | 5xx (whatever its body, even one over the limit) | failed | failure | idempotent and status in `on` | yes |
//! | 4xx | caller's fault | success | idempotent and status in `on` (429) | only if the retry budget ran out |
//! | 2xx body over `max_response_bytes`, decode error | answered | success | never: it would be the same again | no |
//! | invalid request, interceptor refusal | not sent, caller's fault | ignored | never | no |
//! | no credentials (`Auth`: the token endpoint failed) | not sent | ignored | never | no |
//! | circuit open, bulkhead full, no instances | refused locally | ignored | never | yes |
//!
//! The status decides first: a 503 whose error page is over the size limit
//! is a 503 (its snippet is just cut short), not a body error. 4xx are the
//! caller's fault, not the dependency's, so they never count against the
//! dependency's breaker (Resilience4j counts every exception by default,
//! which trips breakers on bad input; we do not).

use crate::spec::StatusSet;
use crate::{Error, ErrorKind};

/// What an attempt's result means to the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency did its job (or the caller was at fault).
    Success,
    /// The dependency failed.
    Failure,
    /// Says nothing about the dependency: nothing was sent.
    Ignored,
}

/// The kinds of failure, as the policies see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection was never made: nothing of the request was sent.
    NotSent,
    /// The dependency failed: timed out, reset, broke off, or answered 5xx.
    Failed,
    /// The dependency answered, and the caller was at fault (4xx).
    CallersFault,
    /// The dependency answered in full; the answer was not usable (too
    /// large, not decodable): another try would get the same.
    Answered,
    /// The caller's request could not be sent (invalid, refused by an
    /// interceptor).
    NotSendable,
    /// A local protection refused the call (open circuit, rate limit, full
    /// bulkhead, no instance): the dependency is protected.
    RefusedLocally,
}

/// The class of a failed attempt.
pub(crate) fn class(e: &Error) -> Class {
    match e.kind() {
        // A request that follows an answered one (a redirect's hop): the
        // attempt, sent again from its start, would repeat what was answered.
        ErrorKind::Connect | ErrorKind::Transport if e.is_after_answer() => Class::Failed,
        ErrorKind::Connect => Class::NotSent,
        ErrorKind::Transport if e.is_unprocessed() => Class::NotSent,
        ErrorKind::Timeout | ErrorKind::Transport => Class::Failed,
        ErrorKind::Body if e.is_too_large() => Class::Answered,
        ErrorKind::Body => Class::Failed,
        ErrorKind::Status => match e.status() {
            Some(s) if s.is_server_error() => Class::Failed,
            _ => Class::CallersFault,
        },
        ErrorKind::Decode => Class::Answered,
        ErrorKind::CircuitOpen
        | ErrorKind::BulkheadFull
        | ErrorKind::RateLimited
        | ErrorKind::NoInstances => Class::RefusedLocally,
        // The token endpoint failed, not the called service: its breaker
        // must not open for it, and the token cache already coalesced the
        // token requests of every waiting call, so no retry here.
        ErrorKind::Auth => Class::NotSendable,
        _ => Class::NotSendable,
    }
}

/// The breaker's view of a result.
pub fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    let Err(e) = result else {
        return Outcome::Success;
    };
    match class(e) {
        Class::NotSent | Class::Failed => Outcome::Failure,
        Class::CallersFault | Class::Answered => Outcome::Success,
        Class::NotSendable | Class::RefusedLocally => Outcome::Ignored,
    }
}

/// Whether an attempt that failed with `e` may be tried again.
pub fn is_retryable(e: &Error, idempotent: bool, on: &StatusSet) -> bool {
    // Only an answer's status is checked against `on` (a body that broke
    // off carries its 200, which `on` does not list).
    let status_allows =
        || e.kind() != ErrorKind::Status || e.status().is_some_and(|s| on.contains(s.as_u16()));
    match class(e) {
        // A connect failure happens before any byte of the request is
        // written: even a POST cannot have been applied.
        Class::NotSent => true,
        Class::Failed | Class::CallersFault => idempotent && status_allows(),
        Class::Answered | Class::NotSendable | Class::RefusedLocally => false,
    }
}

/// Whether a fallback may answer for a call that failed with `e`: the
/// dependency failed or is protected, as opposed to the caller being wrong
/// (4xx, invalid request) or a bug to surface (decode errors).
pub fn is_fallback_eligible(e: &Error) -> bool {
    match class(e) {
        Class::NotSent | Class::Failed | Class::RefusedLocally => true,
        Class::CallersFault | Class::Answered | Class::NotSendable => e.is_budget_exhausted(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn status(code: u16) -> Error {
        let s = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
        Error::new(ErrorKind::Status, "").with_status(s)
    }

    #[test]
    fn breaker_counts_5xx_and_io_but_not_4xx() {
        let r = |e: Error| outcome::<()>(&Err(e));
        assert_eq!(outcome::<()>(&Ok(())), Outcome::Success);
        assert_eq!(r(status(503)), Outcome::Failure);
        assert_eq!(r(status(500)), Outcome::Failure);
        assert_eq!(r(status(404)), Outcome::Success);
        assert_eq!(r(status(400)), Outcome::Success);
        assert_eq!(r(status(429)), Outcome::Success);
        assert_eq!(r(Error::new(ErrorKind::Connect, "")), Outcome::Failure);
        assert_eq!(r(Error::new(ErrorKind::Timeout, "")), Outcome::Failure);
        assert_eq!(r(Error::new(ErrorKind::Decode, "")), Outcome::Success);
        assert_eq!(
            r(Error::new(ErrorKind::InvalidRequest, "")),
            Outcome::Ignored
        );
    }

    #[test]
    fn only_idempotent_methods_retry_after_something_was_sent() {
        let on = StatusSet::from_codes(&[429, 503]);
        assert!(is_retryable(&status(503), true, &on));
        assert!(!is_retryable(&status(503), false, &on));
        assert!(!is_retryable(&status(500), true, &on), "not in `on`");
        assert!(is_retryable(
            &Error::new(ErrorKind::Connect, ""),
            false,
            &on
        ));
        assert!(!is_retryable(
            &Error::new(ErrorKind::Timeout, ""),
            false,
            &on
        ));
        assert!(is_retryable(&Error::new(ErrorKind::Timeout, ""), true, &on));
        assert!(!is_retryable(
            &Error::new(ErrorKind::CircuitOpen, ""),
            true,
            &on
        ));
        assert!(!is_retryable(
            &Error::new(ErrorKind::BulkheadFull, ""),
            true,
            &on
        ));
        assert!(!is_retryable(&Error::new(ErrorKind::Decode, ""), true, &on));
        // A transport error the service gave before processing anything
        // (HTTP/2 REFUSED_STREAM): as a connect failure, whatever the method.
        let unprocessed = || Error::new(ErrorKind::Transport, "").unprocessed();
        assert!(is_retryable(&unprocessed(), false, &on));
        assert!(!is_retryable(
            &Error::new(ErrorKind::Transport, ""),
            false,
            &on
        ));
        assert_eq!(outcome::<()>(&Err(unprocessed())), Outcome::Failure);
        assert!(is_fallback_eligible(&unprocessed()));
        // ... but not after an answered request in the same attempt (a
        // POST's 303, then its GET refused): not for a POST, then.
        let after = || Error::new(ErrorKind::Connect, "").after_answer();
        assert!(!is_retryable(&after(), false, &on));
        assert!(is_retryable(&after(), true, &on));
        assert!(!is_retryable(&unprocessed().after_answer(), false, &on));
        assert_eq!(outcome::<()>(&Err(after())), Outcome::Failure);
        let limited = || Error::new(ErrorKind::RateLimited, "");
        assert!(!is_retryable(&limited(), true, &on));
        assert_eq!(outcome::<()>(&Err(limited())), Outcome::Ignored);
        assert!(is_fallback_eligible(&limited()));
    }

    /// The defect: a 503 whose body was over the limit came out as a body
    /// error, counted as a success, not retried and no fallback; and a body
    /// that broke off mid-way got no fallback although a reset before the
    /// headers did.
    #[test]
    fn the_status_decides_and_a_broken_body_is_a_failure_everywhere() {
        let on = StatusSet::from_codes(&[503]);
        let big_503 = status(503).with_snippet(b"<html>");
        assert_eq!(outcome::<()>(&Err(status(503))), Outcome::Failure);
        assert!(is_retryable(&big_503, true, &on));
        assert!(is_fallback_eligible(&big_503));
        let broken = Error::new(ErrorKind::Body, "")
            .with_status(http::StatusCode::OK)
            .with_source(std::io::Error::other("reset"));
        assert_eq!(
            outcome::<()>(&Err(Error::new(ErrorKind::Body, ""))),
            Outcome::Failure
        );
        assert!(is_retryable(&broken, true, &on));
        assert!(!is_retryable(&broken, false, &on));
        assert!(is_fallback_eligible(&broken));
        let too_large = Error::new(ErrorKind::Body, "").too_large();
        assert_eq!(outcome::<()>(&Err(too_large)), Outcome::Success);
        let too_large = Error::new(ErrorKind::Body, "").too_large();
        assert!(!is_retryable(&too_large, true, &on));
        assert!(!is_fallback_eligible(&too_large));
    }

    #[test]
    fn a_failing_token_endpoint_is_not_the_services_fault() {
        let auth = Error::auth("token endpoint answered 503");
        assert_eq!(outcome::<()>(&Err(Error::auth(""))), Outcome::Ignored);
        let on = StatusSet::from_codes(&[503]);
        assert!(!is_retryable(&auth, true, &on));
        assert!(!is_fallback_eligible(&auth));
    }

    #[test]
    fn fallback_answers_for_dependency_failures_only() {
        assert!(is_fallback_eligible(&status(503)));
        assert!(is_fallback_eligible(&Error::new(
            ErrorKind::CircuitOpen,
            ""
        )));
        assert!(is_fallback_eligible(&Error::new(ErrorKind::Timeout, "")));
        assert!(!is_fallback_eligible(&status(404)));
        assert!(!is_fallback_eligible(&status(400)));
        assert!(!is_fallback_eligible(&Error::new(ErrorKind::Decode, "")));
        assert!(is_fallback_eligible(&status(429).with_budget_exhausted()));
    }
}
