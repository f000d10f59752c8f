//! Service discovery through etcd (feature `etcd`), and [`Registration`] for
//! the serving side.
//!
//! Instances are JSON values ([`Instance`]: `{"url": "http://10.0.0.7:8080",
//! "zone": "eu-1"}`; the `id` defaults to the key's last segment) under
//! `/services/<name>/<id>`, written with a lease so that a crashed server's
//! entry disappears by itself. [`EtcdDiscovery`] reads the prefix, then
//! watches it from the next revision; when the connection drops it
//! reconnects (trying the next endpoint, with back-off from 100 ms to 5 s)
//! and reads again, and meanwhile keeps serving the last known set. A read
//! or a watch request that fails, and a keep-alive that cannot renew a
//! registration's lease, is reported as an
//! [`Event::DiscoveryFailed`]
//! ([`EtcdDiscovery::on_event`]); a watch that ends routinely (idle, a
//! compaction, the server closing it) is not.
//! [`EtcdDiscovery::register`] puts an instance with a lease, keeps the lease
//! alive, and revokes it (removing the key) on
//! [`Registration::deregister`] or drop.
//!
//! ## A watch that goes quiet is presumed dead
//!
//! A watch is one long HTTP response. An etcd that is frozen rather than
//! dead, or a TCP connection that went half-open (a NAT or a load balancer
//! forgot it, the peer's host lost power), never closes that response: the
//! client would wait forever and serve an ever older set. So the watch asks
//! etcd for progress notifications (`progress_notify`: an empty response
//! now and then while nothing changes), and a watch that receives no bytes
//! for [`EtcdDiscovery::watch_idle_timeout`] (default 60 s) is dropped and
//! made again: read the prefix, watch from there. etcd sends progress
//! notifications every 10 minutes by default (etcd 3.4's
//! `--experimental-watch-progress-notify-interval`); set it below the idle
//! timeout, or a quiet prefix is re-read once per idle timeout, which is
//! harmless but wasted work. The JSON gateway's watch is a single request
//! stream, so the client cannot ask for progress itself; the idle timeout is
//! what keeps it honest. A line of the stream longer than 4 MiB also counts
//! as a broken stream, so a misbehaving server cannot grow our memory.
//!
//! ## A registration outlives its lease
//!
//! When etcd is unreachable for longer than the lease's TTL, or someone
//! revokes the lease, etcd deletes the key, and keeping the old lease alive
//! can never bring it back: etcd answers the keep-alive with a TTL of 0. The
//! keep-alive notices that answer, grants a new lease and puts the key again,
//! so a server that keeps running is found again once etcd is.
//! [`Registration::lease`] always names the current lease.
//!
//! ## Background work ends with its owner
//!
//! The watch of a service runs on a task that ends, closing its connection,
//! as soon as the last subscriber (the last client built on it) is dropped;
//! the keep-alive ends with its [`Registration`].
//!
//! ## Why not the `etcd-client` crate
//!
//! It speaks gRPC through tonic and prost, which needs `protoc` and a large
//! build (and OpenSSL for TLS). etcd serves the same v3 API as JSON over
//! HTTP (its gRPC gateway, `/v3/kv/range`, `/v3/watch`, `/v3/lease/*`,
//! stable since etcd 3.4), so this module uses the reqwest courier already
//! has. Keys and values are base64 in that API; numbers are strings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::{
    Chain, Discovery, Followers, Instance, Instances, Subscription, answer_none_if_first, report,
    until_unsubscribed,
};
use crate::observe::{Event, EventSink};
use crate::url::normalize_base_url;
use crate::{BoxError, Error, ErrorKind};

/// The default key prefix: instances of `user-service` live under
/// `/services/user-service/`.
pub const DEFAULT_PREFIX: &str = "/services/";

/// How long a watch may stay silent before it is presumed dead; see
/// [`EtcdDiscovery::watch_idle_timeout`].
const DEFAULT_WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The shortest idle timeout accepted: below it, a healthy watch would be
/// torn down between two packets.
const MIN_WATCH_IDLE_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest line (one watch response) the watch reader buffers. etcd
/// refuses requests over 1.5 MiB by default, so one revision's events fit
/// with room to spare; a longer line means a broken or hostile server, and
/// the stream is dropped (then read again from the prefix) instead of
/// growing without bound.
const MAX_WATCH_LINE: usize = 4 * 1024 * 1024;

/// Instances from etcd; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct EtcdDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    http: reqwest::Client,
    prefix: String,
    watch_idle_timeout: Duration,
    events: EventSink,
    followers: Followers,
}

impl EtcdDiscovery {
    /// Discovery through the etcd cluster at `endpoints`
    /// (`http://127.0.0.1:2379`, …).
    ///
    /// # Errors
    /// [`ErrorKind::Builder`] when there is no endpoint or one is not an
    /// http(s) URL.
    pub fn new<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>) -> Result<Self, Error> {
        let endpoints = endpoints
            .into_iter()
            .map(|e| normalize_base_url(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(Error::builder("etcd discovery needs at least one endpoint"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::builder("could not create the etcd HTTP client").with_source(e))?;
        Ok(EtcdDiscovery {
            inner: Arc::new(Inner {
                endpoints,
                http,
                prefix: DEFAULT_PREFIX.to_owned(),
                watch_idle_timeout: DEFAULT_WATCH_IDLE_TIMEOUT,
                events: EventSink::none(),
                followers: Followers::default(),
            }),
        })
    }

    /// A copy with `change` applied and no subscriptions yet.
    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        let old = &self.inner;
        let mut inner = Inner {
            endpoints: old.endpoints.clone(),
            http: old.http.clone(),
            prefix: old.prefix.clone(),
            watch_idle_timeout: old.watch_idle_timeout,
            events: old.events.clone(),
            followers: Followers::default(),
        };
        change(&mut inner);
        EtcdDiscovery {
            inner: Arc::new(inner),
        }
    }

    /// Looks for instances under `prefix` instead of `/services/`.
    /// (Before any subscription; clones made earlier keep the old prefix.)
    /// Default is [`DEFAULT_PREFIX`].
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        self.with(|i| i.prefix = prefix)
    }

    /// Drops a watch that has received nothing for `idle` and makes it again
    /// (reading the prefix first), keeping the last set meanwhile. This is
    /// what notices a frozen etcd or a half-open connection; see the
    /// [module docs](self). Keep it above etcd's progress notification
    /// interval (`--experimental-watch-progress-notify-interval`, 10 minutes
    /// unless set), or a quiet prefix is re-read every `idle`. Values below
    /// 100 ms are raised to 100 ms. (Before any subscription; clones made
    /// earlier keep the old value.)
    ///
    /// Default is 60 s.
    ///
    /// ```
    /// # fn main() -> Result<(), courier::Error> {
    /// use std::time::Duration;
    /// use courier::discovery::etcd::EtcdDiscovery;
    ///
    /// let discovery = EtcdDiscovery::new(["http://127.0.0.1:2379"])?
    ///     .watch_idle_timeout(Duration::from_secs(20));
    /// # Ok(()) }
    /// ```
    pub fn watch_idle_timeout(self, idle: Duration) -> Self {
        self.with(|i| i.watch_idle_timeout = idle.max(MIN_WATCH_IDLE_TIMEOUT))
    }

    /// A callback for [`Event::DiscoveryFailed`]: a read or watch of a
    /// service's instances that failed (the last set stays in use), or a
    /// registration's keep-alive that failed. The event also reaches
    /// `tracing` and the metrics without one. (Before any subscription or
    /// registration; clones made earlier keep the old callback.)
    ///
    /// Default is none.
    pub fn on_event(self, callback: impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static) -> Self {
        let events = EventSink::new(callback);
        self.with(|i| i.events = events)
    }

    /// Registers `instance` of `service`: puts it under
    /// `<prefix><service>/<id>` with a lease of `ttl` (at least 2 s), and
    /// keeps the lease alive until the [`Registration`] is deregistered or
    /// dropped. If this process dies, etcd removes the key when the lease
    /// runs out. If the lease expires while the process lives (etcd was
    /// unreachable for longer than `ttl`, or the lease was revoked from
    /// outside), the keep-alive grants a new lease and puts the key again.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when no endpoint accepts the lease or the put.
    pub async fn register(
        &self,
        service: &str,
        instance: Instance,
        ttl: Duration,
    ) -> Result<Registration, Error> {
        let inner = &self.inner;
        let ttl_secs = ttl.as_secs().max(2);
        let key = format!("{}{service}/{}", inner.prefix, instance.id);
        let value = serde_json::to_vec(&instance).map_err(|e| {
            Error::invalid_request("the instance does not serialize").with_source(e)
        })?;
        let lease = grant(inner, ttl_secs)
            .await
            .map_err(|e| etcd_error("lease grant", e))?;
        if let Err(e) = put(inner, &key, &value, lease).await {
            // Best effort; otherwise the unused lease runs out by itself.
            let _ = revoke(inner, lease).await;
            return Err(etcd_error("put", e));
        }
        let lease = Arc::new(AtomicI64::new(lease));
        let keepalive = tokio::spawn(keep_registered(
            Arc::clone(inner),
            service.to_owned(),
            key.clone(),
            value,
            ttl_secs,
            Arc::clone(&lease),
        ));
        Ok(Registration {
            inner: Arc::clone(inner),
            key,
            lease,
            keepalive: Some(keepalive),
        })
    }
}

impl Discovery for EtcdDiscovery {
    fn subscribe(&self, service: &str) -> Subscription {
        let inner = Arc::clone(&self.inner);
        let prefix = format!("{}{service}/", inner.prefix);
        let name = service.to_owned();
        self.inner
            .followers
            .subscribe(service, |sender| follow(inner, name, prefix, sender))
    }
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("watch_idle_timeout", &self.inner.watch_idle_timeout)
            .finish()
    }
}

// ===== impl Registration =====

/// An instance registered in etcd; see [`EtcdDiscovery::register`].
pub struct Registration {
    inner: Arc<Inner>,
    key: String,
    /// Written only by the keep-alive task, when it registers again.
    lease: Arc<AtomicI64>,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    /// The key the instance is registered under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease keeping it alive now: a new one once the first expired and
    /// the instance was registered again.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// Stops keeping the lease alive and revokes it, which removes the key.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when etcd cannot be reached (the key then
    /// goes when the lease runs out).
    pub async fn deregister(mut self) -> Result<(), Error> {
        if let Some(task) = self.keepalive.take() {
            stop(task).await;
        }
        revoke(&self.inner, self.lease())
            .await
            .map_err(|e| etcd_error("lease revoke", e))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(task) = self.keepalive.take() else {
            return; // deregistered
        };
        task.abort();
        // Best effort: revoke now if a runtime is at hand; otherwise the key
        // goes when the lease runs out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let lease = Arc::clone(&self.lease);
            runtime.spawn(async move {
                stop(task).await;
                let _ = revoke(&inner, lease.load(Ordering::Acquire)).await;
            });
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease())
            .finish()
    }
}

/// Aborts the keep-alive and waits until it has stopped.
///
/// NOTE: after this, the lease in the [`Registration`] is final: the task
/// stores a new lease right after etcd grants it, with no await in between,
/// so an abort either comes before the grant's answer was read (that lease
/// holds no key and runs out by itself) or after it was stored (and is
/// revoked by the caller).
async fn stop(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

/// Keeps `key` registered: renews `lease` every `ttl / 3` and, when etcd
/// says the lease is gone, grants a new one and puts `value` again.
async fn keep_registered(
    inner: Arc<Inner>,
    service: String,
    key: String,
    value: Vec<u8>,
    ttl_secs: u64,
    lease: Arc<AtomicI64>,
) {
    let period = Duration::from_secs(ttl_secs / 3).max(Duration::from_millis(500));
    // True while the current lease holds no key: a new lease was granted
    // and the put that follows it has not succeeded yet.
    let mut key_missing = false;
    let endpoints = inner.endpoints.join(", ");
    let failed = |what: &str, e: BoxError| {
        report(
            &inner.events,
            &service,
            &endpoints,
            &format_args!("registration {key}: {what} failed: {}", Chain(&*e)),
        );
    };
    loop {
        tokio::time::sleep(period).await;
        match keep_alive(&inner, lease.load(Ordering::Acquire)).await {
            Ok(LeaseState::Alive) if !key_missing => continue,
            Ok(LeaseState::Alive) => {} // the last put failed: put again
            Ok(LeaseState::Expired) => match grant(&inner, ttl_secs).await {
                Ok(new) => lease.store(new, Ordering::Release),
                Err(e) => {
                    failed("lease grant", e);
                    continue; // etcd trouble: try again next period
                }
            },
            // A failed keep-alive is retried next period; the lease
            // outlives a couple of failures by construction (ttl / 3).
            Err(e) => {
                failed("keep-alive", e);
                continue;
            }
        }
        key_missing = match put(&inner, &key, &value, lease.load(Ordering::Acquire)).await {
            Ok(()) => false,
            Err(e) => {
                failed("put", e);
                true
            }
        };
    }
}

/// What etcd said about a lease.
#[derive(Debug, PartialEq, Eq)]
enum LeaseState {
    Alive,
    /// Expired or revoked: it can never be renewed, and its keys are gone.
    Expired,
}

async fn grant(inner: &Inner, ttl_secs: u64) -> Result<i64, BoxError> {
    let grant: LeaseGrant = call(inner, "/v3/lease/grant", json!({ "TTL": ttl_secs })).await?;
    Ok(grant.id)
}

async fn put(inner: &Inner, key: &str, value: &[u8], lease: i64) -> Result<(), BoxError> {
    call::<serde_json::Value>(
        inner,
        "/v3/kv/put",
        json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease }),
    )
    .await
    .map(drop)
}

async fn keep_alive(inner: &Inner, lease: i64) -> Result<LeaseState, BoxError> {
    let answer: KeepAliveMessage =
        call(inner, "/v3/lease/keepalive", json!({ "ID": lease })).await?;
    lease_state(answer)
}

/// etcd answers a keep-alive of an unknown lease with a TTL of 0, which its
/// JSON leaves out: `{"result": {"header": {…}, "ID": "…"}}`.
fn lease_state(answer: KeepAliveMessage) -> Result<LeaseState, BoxError> {
    match answer {
        KeepAliveMessage {
            result: Some(result),
            ..
        } if result.ttl > 0 => Ok(LeaseState::Alive),
        KeepAliveMessage {
            result: Some(_), ..
        } => Ok(LeaseState::Expired),
        KeepAliveMessage { error, .. } => {
            Err(format!("etcd keep-alive failed: {}", error.unwrap_or_default()).into())
        }
    }
}

async fn revoke(inner: &Inner, lease: i64) -> Result<(), BoxError> {
    call::<serde_json::Value>(inner, "/v3/lease/revoke", json!({ "ID": lease }))
        .await
        .map(drop)
}

fn etcd_error(what: &str, e: BoxError) -> Error {
    Error::new(ErrorKind::Transport, format!("etcd {what} failed")).with_source(e)
}

// ===== the JSON API =====

/// Posts `body` to `path` on the first endpoint that answers.
async fn call<T: serde::de::DeserializeOwned>(
    inner: &Inner,
    path: &str,
    body: serde_json::Value,
) -> Result<T, BoxError> {
    let mut last: BoxError = "no etcd endpoint".into();
    for endpoint in &inner.endpoints {
        match post(&inner.http, endpoint, path, &body).await {
            Ok(value) => return Ok(value),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn post<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    endpoint: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<T, BoxError> {
    let response = http
        .post(format!("{endpoint}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        return Err(format!(
            "etcd answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )
        .into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// int64 fields arrive as strings.
fn int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }
    match Num::deserialize(d)? {
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
        Num::N(n) => Ok(n),
    }
}

#[derive(Deserialize)]
struct LeaseGrant {
    #[serde(rename = "ID", deserialize_with = "int")]
    id: i64,
}

#[derive(Deserialize)]
struct KeepAliveMessage {
    result: Option<KeepAliveResult>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct KeepAliveResult {
    /// Absent (zero) when the lease is gone.
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    ttl: i64,
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    events: Vec<WatchEvent>,
    #[serde(default)]
    canceled: bool,
}

#[derive(Deserialize)]
struct WatchEvent {
    /// Absent for PUT (the enum's zero value), "DELETE" for deletes.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    kv: KeyValue,
}

/// The key after the prefix's range: the prefix with its last byte + 1.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// An instance from a stored value; the id defaults to the key's last
/// segment. `None` for a value that is not an instance.
fn instance(kv: &KeyValue) -> Option<(String, Instance)> {
    let key = String::from_utf8(B64.decode(&kv.key).ok()?).ok()?;
    let mut value: serde_json::Value = serde_json::from_slice(&B64.decode(&kv.value).ok()?).ok()?;
    let id = key.rsplit('/').next().unwrap_or_default().to_owned();
    if let Some(object) = value.as_object_mut() {
        object.entry("id").or_insert_with(|| id.into());
    }
    Some((key, serde_json::from_value(value).ok()?))
}

// ===== the watch =====

/// Splits a byte stream into `\n`-terminated lines of at most `max` bytes,
/// however the stream is cut into chunks.
struct Lines {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    max: usize,
}

/// A line grew past [`Lines`]' limit.
#[derive(Debug, PartialEq, Eq)]
struct LineTooLong;

impl Lines {
    fn new(max: usize) -> Self {
        Lines {
            partial: Vec::new(),
            max,
        }
    }

    /// The lines `chunk` completes, without their `\n`. Holds at most `max`
    /// bytes between calls.
    ///
    /// # Errors
    /// [`LineTooLong`] when a line (complete or not) exceeds `max` bytes;
    /// the stream cannot be trusted after that.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (end, after) = rest.split_at(newline);
            if self.partial.len().saturating_add(end.len()) > self.max {
                return Err(LineTooLong);
            }
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(end);
            lines.push(line);
            rest = after.get(1..).unwrap_or_default();
        }
        if self.partial.len().saturating_add(rest.len()) > self.max {
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(rest);
        Ok(lines)
    }
}

/// Keeps `sender` up to date with the instances under `prefix`, until every
/// subscriber is gone.
///
/// NOTE: every wait here is raced against the subscribers going away
/// ([`until_unsubscribed`]), so dropping the last one ends the task at once
/// and closes its watch connection.
async fn follow(
    inner: Arc<Inner>,
    service: String,
    prefix: String,
    sender: watch::Sender<Option<Instances>>,
) {
    const FIRST: Duration = Duration::from_millis(100);
    let mut backoff = FIRST;
    let mut turn = 0usize;
    loop {
        let endpoint = &inner.endpoints[turn % inner.endpoints.len()];
        let watch = sync_and_watch(&inner, &service, endpoint, &prefix, &sender);
        let Some(synced) = until_unsubscribed(&sender, watch).await else {
            return;
        };
        if synced {
            backoff = FIRST;
        } else {
            turn += 1; // try the next endpoint
            answer_none_if_first(&sender);
        }
        if until_unsubscribed(&sender, tokio::time::sleep(backoff))
            .await
            .is_none()
        {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Reads the prefix, publishes it, then applies watch events until the
/// stream ends, breaks or stays silent for the idle timeout. `true` if the
/// read succeeded. Errors end the stream; the last set stays published. A
/// failed read or watch request is reported; a watch that ends is not.
async fn sync_and_watch(
    inner: &Inner,
    service: &str,
    endpoint: &str,
    prefix: &str,
    sender: &watch::Sender<Option<Instances>>,
) -> bool {
    let http = &inner.http;
    let idle = inner.watch_idle_timeout;
    let end = range_end(prefix);
    let range = json!({ "key": B64.encode(prefix), "range_end": B64.encode(&end) });
    let read = match post::<RangeResponse>(http, endpoint, "/v3/kv/range", &range).await {
        Ok(read) => read,
        Err(e) => {
            report(
                &inner.events,
                service,
                endpoint,
                &format_args!("read of {prefix} failed: {}", Chain(&*e)),
            );
            return false;
        }
    };
    let mut known: BTreeMap<String, Instance> = read.kvs.iter().filter_map(instance).collect();
    // Publishes only a change: a reconnect that reads the same set again
    // does not wake the subscribers.
    let publish = |known: &BTreeMap<String, Instance>| {
        let now: Instances = known.values().cloned().collect::<Vec<_>>().into();
        sender.send_if_modified(|set| {
            let changed = set.as_deref() != Some(&*now);
            if changed {
                *set = Some(now);
            }
            changed
        });
    };
    publish(&known);
    let watch = json!({ "create_request": {
        "key": B64.encode(prefix),
        "range_end": B64.encode(&end),
        "start_revision": read.header.revision + 1,
        "progress_notify": true,
    }});
    let request = http
        .post(format!("{endpoint}/v3/watch"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(watch.to_string());
    let mut stream = match tokio::time::timeout(idle, request.send()).await {
        Ok(Ok(stream)) if stream.status().is_success() => stream,
        Ok(Ok(refused)) => {
            let status = refused.status();
            report(
                &inner.events,
                service,
                endpoint,
                &format_args!("watch of {prefix}: etcd answered {status}"),
            );
            return true;
        }
        Ok(Err(e)) => {
            report(
                &inner.events,
                service,
                endpoint,
                &format_args!("watch of {prefix} failed: {}", Chain(&e)),
            );
            return true;
        }
        Err(_) => {
            report(
                &inner.events,
                service,
                endpoint,
                &format_args!("watch of {prefix}: no answer within {idle:?}"),
            );
            return true;
        }
    };
    let mut lines = Lines::new(MAX_WATCH_LINE);
    loop {
        // Silence for `idle` (a frozen etcd, a half-open connection), the
        // end of the stream and a read error all end the watch alike.
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(idle, stream.chunk()).await else {
            return true;
        };
        let Ok(complete) = lines.push(&chunk) else {
            return true; // an endless line: not etcd talking
        };
        for line in complete {
            let Ok(message) = serde_json::from_slice::<WatchMessage>(&line) else {
                continue;
            };
            let Some(result) = message.result else {
                if message.error.is_some() {
                    return true; // e.g. compacted: read again
                }
                continue;
            };
            if result.canceled {
                return true;
            }
            let mut changed = false;
            for event in result.events {
                let deleted = event.kind.as_deref() == Some("DELETE");
                if deleted {
                    let key = B64
                        .decode(&event.kv.key)
                        .ok()
                        .and_then(|k| String::from_utf8(k).ok());
                    if let Some(key) = key {
                        changed |= known.remove(&key).is_some();
                    }
                } else if let Some((key, instance)) = instance(&event.kv) {
                    known.insert(key, instance);
                    changed = true;
                }
            }
            if changed {
                publish(&known);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_and_instance_values() {
        assert_eq!(range_end("/services/a/"), b"/services/a0".to_vec());
        let kv = KeyValue {
            key: B64.encode("/services/a/i-1"),
            value: B64.encode(r#"{"url":"http://10.0.0.1:80","zone":"z"}"#),
        };
        let (key, parsed) = instance(&kv).unwrap_or_else(|| panic!("valid"));
        assert_eq!(key, "/services/a/i-1");
        assert_eq!(parsed.id, "i-1");
        assert_eq!(parsed.zone.as_deref(), Some("z"));
        let junk = KeyValue {
            key: B64.encode("/services/a/x"),
            value: B64.encode("not json"),
        };
        assert!(instance(&junk).is_none());
    }

    fn strings(lines: Vec<Vec<u8>>) -> Vec<String> {
        lines
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_and_several_in_one() {
        let mut lines = Lines::new(64);
        // A line cut in three, then two lines and the start of a third in
        // one chunk: chunk boundaries never show in the lines.
        assert_eq!(lines.push(b"{\"a\"").map(strings), Ok(vec![]));
        assert_eq!(lines.push(b":1").map(strings), Ok(vec![]));
        assert_eq!(
            lines.push(b"}\n").map(strings),
            Ok(vec![r#"{"a":1}"#.into()])
        );
        assert_eq!(
            lines.push(b"one\ntwo\nthr").map(strings),
            Ok(vec!["one".into(), "two".into()])
        );
        assert_eq!(
            lines.push(b"ee\n\n").map(strings),
            Ok(vec!["three".into(), "".into()])
        );
        assert!(lines.partial.is_empty());
    }

    #[test]
    fn a_line_longer_than_the_limit_breaks_the_stream() {
        // Exactly the limit is fine, complete or still open.
        let mut lines = Lines::new(4);
        assert_eq!(
            lines.push(b"abcd\nab").map(strings),
            Ok(vec!["abcd".into()])
        );
        assert_eq!(lines.push(b"cd").map(strings), Ok(vec![]));
        // One more byte of the open line is one too many: the buffer never
        // holds more than the limit.
        assert_eq!(lines.push(b"e"), Err(LineTooLong));
        // A complete line over the limit in a single chunk, too.
        assert_eq!(Lines::new(4).push(b"abcde\n"), Err(LineTooLong));
        // An endless line in small chunks fails once it passes the limit.
        let mut endless = Lines::new(1024);
        let failed_at = (1..).find(|_| endless.push(&[b'x'; 100]).is_err());
        assert_eq!(failed_at, Some(11));
        assert!(endless.partial.len() <= 1024);
    }

    #[test]
    fn a_keep_alive_answer_without_ttl_means_the_lease_is_gone() {
        let parse = |s: &str| {
            let message: KeepAliveMessage =
                serde_json::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            lease_state(message).map_err(|e| e.to_string())
        };
        // Answers as etcd 3.4's JSON gateway gives them.
        let header =
            r#""header":{"cluster_id":"1","member_id":"2","revision":"1","raft_term":"2"}"#;
        assert_eq!(
            parse(&format!(r#"{{"result":{{{header},"ID":"7","TTL":"5"}}}}"#)),
            Ok(LeaseState::Alive)
        );
        assert_eq!(
            parse(&format!(r#"{{"result":{{{header},"ID":"7"}}}}"#)),
            Ok(LeaseState::Expired)
        );
        assert_eq!(
            parse(&format!(r#"{{"result":{{{header},"ID":"7","TTL":"0"}}}}"#)),
            Ok(LeaseState::Expired)
        );
        assert!(parse(r#"{"error":{"grpc_code":14,"message":"unavailable"}}"#).is_err());
    }
}
