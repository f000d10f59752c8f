//! Service discovery: where the instances of a service are.
//!
//! A [`Discovery`] answers, for a logical service name (the `name` of
//! `#[client]`), with the current set of [`Instance`]s and tells its
//! subscribers when the set changes, through a `tokio::sync::watch`
//! channel. The client keeps the latest set in its balancer
//! ([`crate::balance`]), which reads it without taking a lock.
//!
//! Implementations: [`StaticDiscovery`] (a list a program or a test
//! changes at run time), `DnsDiscovery` (feature `dns`: A/AAAA plus a port,
//! or SRV, re-resolved when the TTL runs out) and `EtcdDiscovery` (feature
//! `etcd`: instances as JSON values under `/services/<name>/<id>`, watched).
//! Each keeps serving its last known set when its source fails, and says
//! so with an [`Event::DiscoveryFailed`]
//! (a `tracing` warning, the `courier.discovery.errors` counter, and the
//! discovery's own `.on_event(…)` callback).

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod static_list;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::observe::{Event, EventSink};

pub use static_list::StaticDiscovery;

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the service; the balancer keeps an instance's latency
    /// and failure history across updates by this id.
    pub id: String,
    /// Where calls go: scheme, host, port and an optional path prefix
    /// (`http://10.0.0.7:8080`).
    #[serde(alias = "url", alias = "base_url")]
    pub url: String,
    /// The zone or rack it runs in, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// A relative weight (default 1); kept for balancers that use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Anything else the registry knows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Instance {
    /// An instance with an id and a base URL.
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        Instance {
            id: id.into(),
            url: url.into(),
            zone: None,
            weight: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// The instances of a service as a discovery sees them now.
pub type Instances = Arc<[Instance]>;

/// What a subscriber sees: `None` until the discovery has heard from its
/// source once (calls made before then wait for it, within their deadline),
/// then the latest set.
pub type Subscription = watch::Receiver<Option<Instances>>;

/// A source of service instances.
///
/// `subscribe` is called once per built client, with the client's service
/// name; the receiver's current value is the set to start with (`None` while
/// the source has not answered yet), and every change is sent on it. A discovery that loses its source keeps the last
/// set (it does not send an empty one because a registry is unreachable).
/// An implementation that needs background work (polling, a watch) starts
/// it on the current tokio runtime.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a courier discovery",
    note = "use `courier::discovery::StaticDiscovery`, `DnsDiscovery` (feature `dns`), \
            `EtcdDiscovery` (feature `etcd`), or implement `courier::Discovery`"
)]
pub trait Discovery: Send + Sync + 'static {
    /// The instances of `service`, now and as they change.
    fn subscribe(&self, service: &str) -> Subscription;
}

impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn subscribe(&self, service: &str) -> Subscription {
        (**self).subscribe(service)
    }
}

/// The subscriptions of a discovery that follows its source on a task per
/// service (DNS, etcd): the first subscriber of a service starts the task,
/// later ones share its channel, and the task ends when all are gone.
///
/// NOTE: the map holds the channel's sender, never a receiver, so
/// `sender.closed()` in the task resolves when the last subscriber is
/// dropped; the task must race each of its waits against it
/// ([`until_unsubscribed`]) so that it ends then and not at its next turn.
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
#[derive(Default)]
pub(crate) struct Followers {
    services: Mutex<HashMap<String, watch::Sender<Option<Instances>>>>,
}

#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
impl Followers {
    /// `service`'s channel; on first use, `follow(sender)` runs on the
    /// current runtime to feed it.
    pub(crate) fn subscribe<F, Fut>(&self, service: &str, follow: F) -> Subscription
    where
        F: FnOnce(watch::Sender<Option<Instances>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = services.get(service)
            && !sender.is_closed()
        {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(None);
        services.insert(service.to_owned(), sender.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(follow(sender));
        }
        receiver
    }
}

/// Runs `work` unless every subscriber of `sender` is gone first: `None`
/// then, and `work` is dropped (closing whatever connection it held).
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
pub(crate) async fn until_unsubscribed<T>(
    sender: &watch::Sender<Option<Instances>>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = sender.closed() => None,
        done = work => Some(done),
    }
}

/// The longest error text an [`Event::DiscoveryFailed`] carries: an etcd
/// error page or a resolver's message is cut here (at a char boundary).
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
const MAX_ERROR_TEXT: usize = 300;

/// An error and its causes, `: `-separated (a resolver's or reqwest's
/// message alone rarely says why).
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Reports a failure of `source` while following `service`.
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
#[cold]
pub(crate) fn report(
    events: &EventSink,
    service: &str,
    source: &str,
    error: &dyn std::fmt::Display,
) {
    let mut text = error.to_string();
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    events.emit(&Event::DiscoveryFailed {
        service,
        source,
        error: &text,
    });
}

/// After a failed first look at the source: publish "no instances" so calls
/// fail fast (with `is_no_instances()`) instead of waiting for the source.
/// Once a set is known, a failure leaves it in place.
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
pub(crate) fn answer_none_if_first(sender: &watch::Sender<Option<Instances>>) {
    sender.send_if_modified(|set| {
        let first = set.is_none();
        if first {
            *set = Some(Arc::from(Vec::new()));
        }
        first
    });
}
