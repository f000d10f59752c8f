//! The one classifier: what an attempt's result means for the circuit
//! breaker and for retry, decided in one place so the two never disagree
//! (as tower-http's `classify` does for its middlewares).
//!
//! | result                                 | breaker  | retried when                  |
//! |----------------------------------------|----------|-------------------------------|
//! | success                                | success  | never                         |
//! | connect error (refused, connect timeout) | failure | always: nothing was sent     |
//! | attempt timeout, transport error       | failure  | the method is idempotent      |
//! | body could not be read                 | failure  | the method is idempotent      |
//! | body over `max_response_bytes`         | success  | never: it would be as long again |
//! | 5xx                                    | failure  | idempotent and status in `on` |
//! | 4xx                                    | success  | idempotent and status in `on` (429) |
//! | decode error                           | success  | never: the service answered   |
//! | invalid request, interceptor refusal   | ignored  | never: nothing was sent, and another try would do the same |
//! | circuit open, bulkhead full, no instances | ignored | never                       |
//!
//! 4xx are the caller's fault, not the dependency's, so they never count
//! against the dependency's breaker (Resilience4j counts every exception by
//! default, which trips breakers on bad input; we do not).

use crate::{Error, ErrorKind};

use crate::spec::StatusSet;

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

/// The breaker's view of a result.
pub fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    let Err(e) = result else {
        return Outcome::Success;
    };
    match e.kind() {
        ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Transport => Outcome::Failure,
        ErrorKind::Body if body_read_failed(e) => Outcome::Failure,
        ErrorKind::Status => match e.status() {
            Some(s) if s.is_server_error() => Outcome::Failure,
            _ => Outcome::Success,
        },
        ErrorKind::Decode | ErrorKind::Body => Outcome::Success,
        _ => Outcome::Ignored,
    }
}

/// A body error is either a read that failed (it has the I/O error as its
/// source: worth another try) or a body over the size limit (no source: the
/// service answered, and would answer the same again).
fn body_read_failed(e: &Error) -> bool {
    std::error::Error::source(e).is_some()
}

/// Whether an attempt that failed with `e` may be tried again.
pub fn is_retryable(e: &Error, idempotent: bool, on: &StatusSet) -> bool {
    match e.kind() {
        // A connect failure happens before any byte of the request is
        // written: even a POST cannot have been applied.
        ErrorKind::Connect => true,
        ErrorKind::Timeout | ErrorKind::Transport => idempotent,
        ErrorKind::Body => idempotent && body_read_failed(e),
        ErrorKind::Status => idempotent && e.status().is_some_and(|s| on.contains(s.as_u16())),
        _ => false,
    }
}

/// Whether a fallback may answer for a call that failed with `e`: the
/// dependency failed or is protected (timeout, connect, transport, 5xx,
/// circuit open, bulkhead full, no instances, budget exhausted), as opposed
/// to the caller being wrong (4xx, invalid request) or a bug to surface
/// (decode errors).
pub fn is_fallback_eligible(e: &Error) -> bool {
    match e.kind() {
        ErrorKind::Connect
        | ErrorKind::Timeout
        | ErrorKind::Transport
        | ErrorKind::CircuitOpen
        | ErrorKind::BulkheadFull
        | ErrorKind::NoInstances => true,
        ErrorKind::Status => {
            e.is_budget_exhausted() || e.status().is_some_and(|s| s.is_server_error())
        }
        _ => e.is_budget_exhausted(),
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
