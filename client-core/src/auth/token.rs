//! The token cache behind OAuth2 and minted JWTs: one token at a time,
//! used until shortly before it expires, refreshed ahead of that, fetched
//! once however many calls want it (single-flight).
//!
//! Why each rule:
//!
//! - **Skew.** A token is dropped `skew` before its `expires_in` runs out
//!   (30 s by default, at most half its lifetime): the call still has to
//!   travel, and the clocks of the token issuer and the service differ.
//! - **Refresh ahead.** Once three quarters of its usable life are gone, the
//!   next call starts a fetch in the background and goes on with the current
//!   token, so no call waits for a token endpoint while a token is valid.
//! - **Single-flight.** When the token is missing or expired, the first call
//!   starts the fetch and every call that comes while it runs waits for the
//!   same answer (a `tokio::sync::watch` channel): a burst of 100 calls after
//!   expiry costs one token request, not 100. The fetch runs on its own task,
//!   so a caller whose deadline ends while it waits does not abort it: the
//!   token it brings serves the next call.
//! - **Failures are shared and not cached.** Every waiting call gets the
//!   fetch's error (kind [`Auth`](crate::ErrorKind::Auth)); the next call
//!   after it starts a new fetch. A failed refresh-ahead keeps the current,
//!   still valid token.
//! - **A 401 drops the token it was given for.** Only that token: if a
//!   newer one replaced it meanwhile, the newer one stays, so a burst of
//!   401s for an old token causes one fetch.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::interceptor::Refresh;
use crate::{BoxError, Error};

/// A token as a source hands it over.
pub(crate) struct Fresh {
    /// The whole `Authorization` value (`Bearer …`), marked sensitive.
    pub(crate) header: HeaderValue,
    /// How long it is valid from when it was asked for.
    pub(crate) lifetime: Duration,
}

/// Where tokens come from: a token endpoint, a signing key.
pub(crate) trait Source: Send + Sync + 'static {
    /// Gets a new token. The future runs on a task of its own and must end
    /// by itself (a token request has its own timeout).
    fn fetch(&self) -> BoxFuture<'static, Result<Fresh, Error>>;
}

/// A cached token.
pub(crate) struct Token {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    usable_until: Instant,
    refresh_at: Instant,
}

/// A failed fetch, as every waiting call sees it.
struct Failure {
    message: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Failure {
    fn to_error(&self) -> Error {
        let error = Error::auth(self.message.clone());
        match &self.cause {
            Some(cause) => error.with_source(Box::new(Arc::clone(cause)) as BoxError),
            None => error,
        }
    }
}

type Outcome = Result<Arc<Token>, Arc<Failure>>;

struct State {
    token: Option<Arc<Token>>,
    inflight: Option<watch::Receiver<Option<Outcome>>>,
    generation: u64,
}

/// One credential's token, shared by every clone of a client.
pub(crate) struct TokenCache {
    source: Box<dyn Source>,
    skew: Duration,
    state: Mutex<State>,
}

impl TokenCache {
    pub(crate) fn new(source: impl Source, skew: Duration) -> Arc<Self> {
        Arc::new(TokenCache {
            source: Box::new(source),
            skew,
            state: Mutex::new(State {
                token: None,
                inflight: None,
                generation: 0,
            }),
        })
    }

    /// A valid token: the cached one, or the answer of the one fetch in
    /// flight, started here if there is none.
    ///
    /// # Errors
    /// The fetch's failure (kind `Auth`); also when called outside a tokio
    /// runtime.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<Arc<Token>, Error> {
        loop {
            let mut answer = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                if let Some(token) = &state.token
                    && now < token.usable_until
                {
                    let token = Arc::clone(token);
                    if now >= token.refresh_at && state.inflight.is_none() {
                        // Ahead of expiry: fetch in the background, use this one.
                        state.inflight = self.start().ok();
                    }
                    return Ok(token);
                }
                match &state.inflight {
                    Some(inflight) => inflight.clone(),
                    None => {
                        let inflight = self.start()?;
                        state.inflight = Some(inflight.clone());
                        inflight
                    }
                }
            };
            let outcome = match answer.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => None,
            };
            match outcome {
                Some(Ok(token)) => return Ok(token),
                Some(Err(failure)) => return Err(failure.to_error()),
                None => {
                    // The fetch's task ended without an answer (its runtime
                    // shut down): forget it, and fetch again.
                    let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    if state
                        .inflight
                        .as_ref()
                        .is_some_and(|i| i.same_channel(&answer))
                    {
                        state.inflight = None;
                    }
                }
            }
        }
    }

    /// Starts a fetch on a task of its own; its answer comes on the channel.
    fn start(self: &Arc<Self>) -> Result<watch::Receiver<Option<Outcome>>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::auth("credentials are fetched on a tokio runtime; none is running")
        })?;
        let (answer, inflight) = watch::channel(None);
        let fetch = self.source.fetch();
        let cache = Arc::clone(self);
        runtime.spawn(async move {
            let asked = Instant::now();
            let result = fetch.await;
            let outcome = cache.store(result, asked);
            let _ = answer.send(Some(outcome));
        });
        Ok(inflight)
    }

    /// Keeps a fetched token (a failure leaves the current token alone).
    fn store(&self, result: Result<Fresh, Error>, asked: Instant) -> Outcome {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.inflight = None;
        match result {
            Ok(fresh) => {
                state.generation += 1;
                let token = Arc::new(Token::new(fresh, asked, self.skew, state.generation));
                state.token = Some(Arc::clone(&token));
                Ok(token)
            }
            Err(e) => {
                let (message, cause) = e.into_message_and_source();
                Err(Arc::new(Failure {
                    message: message.into_owned(),
                    cause: cause.map(Arc::from),
                }))
            }
        }
    }

    /// Drops the token of `generation`, if it is still the cached one.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.generation == generation)
        {
            state.token = None;
        }
    }
}

impl Refresh for TokenCache {
    fn refresh(&self, generation: u64) -> bool {
        self.invalidate(generation);
        true
    }
}

impl Token {
    fn new(fresh: Fresh, asked: Instant, skew: Duration, generation: u64) -> Self {
        let skew = skew.min(fresh.lifetime / 2);
        let usable = fresh.lifetime.saturating_sub(skew);
        // Far-future expiries (a buggy or hostile `expires_in`) are capped
        // rather than overflow.
        let far = asked + Duration::from_secs(365 * 24 * 3600);
        let usable_until = asked.checked_add(usable).unwrap_or(far).min(far);
        let refresh_at = asked
            .checked_add(usable / 4 * 3)
            .unwrap_or(far)
            .min(usable_until);
        Token {
            header: fresh.header,
            generation,
            usable_until,
            refresh_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source that counts its fetches and answers after `delay`.
    struct Counting {
        fetches: Arc<AtomicUsize>,
        lifetime: Duration,
        delay: Duration,
        fail: bool,
    }

    impl Source for Counting {
        fn fetch(&self) -> BoxFuture<'static, Result<Fresh, Error>> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let (lifetime, delay, fail) = (self.lifetime, self.delay, self.fail);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(Error::auth("token endpoint answered 500"));
                }
                let mut header = HeaderValue::from_str(&format!("Bearer t{n}"))
                    .map_err(|e| Error::auth("bad").with_source(e))?;
                header.set_sensitive(true);
                Ok(Fresh { header, lifetime })
            })
        }
    }

    fn cache(
        lifetime: Duration,
        delay: Duration,
        fail: bool,
    ) -> (Arc<TokenCache>, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let source = Counting {
            fetches: Arc::clone(&fetches),
            lifetime,
            delay,
            fail,
        };
        (TokenCache::new(source, Duration::from_secs(30)), fetches)
    }

    async fn token(cache: &Arc<TokenCache>) -> String {
        match cache.get().await {
            Ok(t) => String::from_utf8_lossy(t.header.as_bytes()).into_owned(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_waiting_calls_cause_one_fetch() {
        let (cache, fetches) = cache(Duration::from_secs(3600), Duration::from_millis(50), false);
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { token(&cache).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.ok().as_deref(), Some("Bearer t1"));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_skew_and_the_refresh_ahead_follow_the_lifetime() {
        // 100 s: usable for 70 s (30 s skew), refreshed after 52.5 s.
        let (cache, fetches) = cache(Duration::from_secs(100), Duration::ZERO, false);
        assert_eq!(token(&cache).await, "Bearer t1");
        tokio::time::advance(Duration::from_secs(52)).await;
        assert_eq!(token(&cache).await, "Bearer t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "not yet ahead");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            token(&cache).await,
            "Bearer t1",
            "ahead: the old one, still valid"
        );
        tokio::task::yield_now().await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "and a fetch in the background"
        );
        assert_eq!(token(&cache).await, "Bearer t2");
        // A short token: the skew is at most half its life.
        let (cache, fetches) = cache_with(Duration::from_secs(2));
        assert_eq!(token(&cache).await, "Bearer t1");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(token(&cache).await, "Bearer t1");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(
            token(&cache).await,
            "Bearer t2",
            "expired after half its life"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    fn cache_with(lifetime: Duration) -> (Arc<TokenCache>, Arc<AtomicUsize>) {
        cache(lifetime, Duration::ZERO, false)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_reaches_every_waiter_and_is_not_kept() {
        let (cache, fetches) = cache(Duration::from_secs(60), Duration::from_millis(10), true);
        let (a, b) = tokio::join!(token(&cache), token(&cache));
        assert!(a.contains("token endpoint answered 500"), "{a}");
        assert_eq!(a, b);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let _ = token(&cache).await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "the next call asks again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_drops_only_the_token_it_was_given_for() {
        let (cache, fetches) = cache_with(Duration::from_secs(3600));
        let first = cache.get().await.map(|t| t.generation).unwrap_or(0);
        assert!(cache.refresh(first));
        assert_eq!(token(&cache).await, "Bearer t2");
        // A late 401 for the first token leaves the second alone.
        cache.invalidate(first);
        assert_eq!(token(&cache).await, "Bearer t2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_absurd_lifetime_is_capped_without_overflow() {
        let fresh = Fresh {
            header: HeaderValue::from_static("Bearer x"),
            lifetime: Duration::MAX,
        };
        let now = Instant::now();
        let token = Token::new(fresh, now, Duration::from_secs(30), 1);
        assert!(token.usable_until > now);
        assert!(token.refresh_at <= token.usable_until);
    }
}
