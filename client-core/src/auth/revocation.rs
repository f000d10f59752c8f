//! Revocation by `jti` (feature `jwt`; the Redis store needs `redis`).
//!
//! A JWT cannot be recalled: it is valid until it expires, wherever it
//! went. To stop one before that (a leaked token, a caller shut out), its
//! verifiers keep a list of revoked token ids and check every token's `jti`
//! against it ([`VerifyJwt::revocations`](super::verify::VerifyJwt::revocations)).
//! The list only needs to hold an id until its token would have expired
//! anyway, so [`Revocations::revoke`] takes the expiry and a store drops
//! the entry then: the list stays as small as the set of live revoked
//! tokens.
//!
//! Revoking a token stops that token, not its signer: a courier client
//! whose minted JWT was revoked gets a 401 and mints a new one (with a new
//! `jti`). To shut a caller out, stop trusting its key (drop it from the
//! JWKS, or stop listing its issuer).
//!
//! [`RedisRevocations`] keeps the list in Redis, shared by every instance
//! of the verifying services: `SET <prefix><jti> 1 EX <seconds left>` to
//! revoke, `EXISTS` to check, over one multiplexed connection that
//! reconnects by itself (the `redis` crate's `ConnectionManager`).

pub use super::verify::Revocations;

#[cfg(feature = "redis")]
pub use self::redis_store::RedisRevocations;

#[cfg(feature = "redis")]
mod redis_store {
    use std::fmt;
    use std::time::{Duration, SystemTime};

    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use tokio::sync::OnceCell;

    use super::Revocations;
    use crate::{BoxError, Error};

    /// Revoked token ids in Redis (feature `redis`); see the
    /// [module docs](super). Cheap to clone; clones share one connection.
    ///
    /// Every operation is bounded: connecting takes at most
    /// [`timeout`](Self::timeout) (250 ms by default) and so does an answer;
    /// while Redis is down, operations fail fast and the connection is
    /// made again in the background, so the verifier's fail-closed (or
    /// fail-open) answer comes at once and service resumes when Redis does.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// use courier::auth::revocation::{RedisRevocations, Revocations};
    /// use std::time::{Duration, SystemTime};
    ///
    /// let revocations = RedisRevocations::new("redis://127.0.0.1:6379")?;
    /// revocations.revoke("3f2a…", SystemTime::now() + Duration::from_secs(240)).await?;
    /// assert!(revocations.is_revoked("3f2a…").await?);
    /// # Ok(()) }
    /// ```
    #[derive(Clone)]
    pub struct RedisRevocations {
        client: redis::Client,
        connection: std::sync::Arc<OnceCell<ConnectionManager>>,
        prefix: String,
        timeout: Duration,
        shown: String,
    }

    impl RedisRevocations {
        /// A store at `url` (`redis://host:port/db`, `rediss://…` is not
        /// enabled). Nothing is connected until the first operation, so
        /// this works outside a runtime and with Redis down.
        ///
        /// # Errors
        /// An invalid URL.
        pub fn new(url: &str) -> Result<Self, Error> {
            let client = redis::Client::open(url)
                .map_err(|e| Error::builder("invalid Redis URL").with_source(e))?;
            let shown = url::Url::parse(url)
                .ok()
                .map(|u| {
                    let host = u.host_str().unwrap_or("?");
                    match u.port() {
                        Some(port) => format!("{host}:{port}"),
                        None => host.to_owned(),
                    }
                })
                .unwrap_or_else(|| "?".into());
            Ok(RedisRevocations {
                client,
                connection: std::sync::Arc::new(OnceCell::new()),
                prefix: "courier:revoked:".into(),
                timeout: Duration::from_millis(250),
                shown,
            })
        }

        /// The prefix of the keys (`<prefix><jti>`).
        ///
        /// Default is `courier:revoked:`.
        pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.prefix = prefix.into();
            self
        }

        /// How long connecting, and each answer, may take.
        ///
        /// Default is 250 ms.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = timeout;
            self
        }

        /// The Redis key a revoked `jti` is kept under.
        pub fn key(&self, jti: &str) -> String {
            format!("{}{jti}", self.prefix)
        }

        async fn connection(&self) -> Result<ConnectionManager, BoxError> {
            let manager = self
                .connection
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1)
                        .set_min_delay(Duration::from_millis(20))
                        .set_max_delay(Duration::from_millis(200));
                    ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                })
                .await?;
            Ok(manager.clone())
        }

        /// Runs one command within twice the timeout (connecting, then
        /// answering), whatever the connection is doing.
        async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, BoxError> {
            let work = async {
                let mut connection = self.connection().await?;
                let value: T = cmd.query_async(&mut connection).await?;
                Ok::<T, BoxError>(value)
            };
            tokio::time::timeout(self.timeout.saturating_mul(2), work)
                .await
                .map_err(|_| format!("Redis at {} did not answer in time", self.shown))?
        }
    }

    #[async_trait::async_trait]
    impl Revocations for RedisRevocations {
        async fn revoke(&self, jti: &str, expires_at: SystemTime) -> Result<(), BoxError> {
            let left = match expires_at.duration_since(SystemTime::now()) {
                Ok(left) if !left.is_zero() => left,
                // Expired already: nothing to keep.
                _ => return Ok(()),
            };
            // Whole seconds, rounded up, so the entry never goes first.
            let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(jti)).arg(1).arg("EX").arg(seconds);
            self.run::<()>(cmd).await
        }

        async fn is_revoked(&self, jti: &str) -> Result<bool, BoxError> {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(self.key(jti));
            self.run::<bool>(cmd).await
        }
    }

    impl fmt::Debug for RedisRevocations {
        /// The host and port only: a Redis URL may hold a password.
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisRevocations")
                .field("at", &self.shown)
                .field("prefix", &self.prefix)
                .field("timeout", &self.timeout)
                .finish()
        }
    }
}
