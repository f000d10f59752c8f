//! Service discovery by DNS (feature `dns`), through hickory-resolver.
//!
//! Two shapes, as in Kubernetes and Consul: the A/AAAA records of a host
//! name plus a fixed port ([`DnsDiscovery::host`]; a headless service's
//! name, say), or SRV records, which carry a port and a weight per target
//! ([`DnsDiscovery::srv`]). Each instance's id is `ip:port`. The name is
//! re-resolved when the answer's TTL runs out (bounded to 1 s – 60 s by
//! default, [`DnsDiscovery::with_ttl_bounds`]); a failed lookup keeps the
//! last set and reports an [`Event::DiscoveryFailed`]
//! ([`DnsDiscovery::on_event`]). hickory reads the system configuration (`/etc/resolv.conf`,
//! `/etc/hosts`) and reports each answer's validity, which the standard
//! library's resolver does not.
//!
//! An SRV answer is only as good as its targets' addresses: when every
//! target's address lookup fails, the lookup as a whole counts as failed and
//! the last set stays (a resolver outage must not empty the balancer). When
//! only some fail, the others are served and the name is looked up again
//! soon (at the lower TTL bound). A lone target of `.` is the registry
//! saying there is no instance (RFC 2782), which is an answer: the set is
//! then empty.
//!
//! The lookups of a service run on a task that ends as soon as the last
//! subscriber is dropped, even in the middle of a lookup.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use tokio::sync::watch;

use super::{
    Chain, Discovery, Followers, Instance, Instances, Subscription, answer_none_if_first, report,
    until_unsubscribed,
};
use crate::Error;
use crate::observe::{Event, EventSink};

/// Instances from DNS; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct DnsDiscovery {
    inner: Arc<Inner>,
}

#[derive(Clone)]
enum Query {
    Host { name: String, port: u16 },
    Srv { name: String },
}

impl Query {
    /// The name looked up.
    fn name(&self) -> &str {
        match self {
            Query::Host { name, .. } | Query::Srv { name } => name,
        }
    }
}

struct Inner {
    resolver: TokioResolver,
    query: Query,
    scheme: &'static str,
    ttl_bounds: (Duration, Duration),
    ipv4_only: bool,
    events: EventSink,
    followers: Followers,
}

impl DnsDiscovery {
    fn new(query: Query) -> Result<Self, Error> {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| Error::builder("could not set up the DNS resolver").with_source(e))?;
        Ok(Self::with_resolver(resolver, query))
    }

    fn with_resolver(resolver: TokioResolver, query: Query) -> Self {
        DnsDiscovery {
            inner: Arc::new(Inner {
                resolver,
                query,
                scheme: "http",
                ttl_bounds: (Duration::from_secs(1), Duration::from_secs(60)),
                ipv4_only: false,
                events: EventSink::none(),
                followers: Followers::default(),
            }),
        }
    }

    /// The A and AAAA records of `name`, each with `port`.
    ///
    /// # Errors
    /// [`ErrorKind::Builder`](crate::ErrorKind::Builder) when the system's
    /// resolver configuration cannot be read.
    pub fn host(name: impl Into<String>, port: u16) -> Result<Self, Error> {
        Self::new(Query::Host {
            name: name.into(),
            port,
        })
    }

    /// The SRV records of `name` (`_http._tcp.users.internal`), each target
    /// resolved to its addresses.
    ///
    /// # Errors
    /// [`ErrorKind::Builder`](crate::ErrorKind::Builder) when the system's
    /// resolver configuration cannot be read.
    pub fn srv(name: impl Into<String>) -> Result<Self, Error> {
        Self::new(Query::Srv { name: name.into() })
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        let old = &self.inner;
        let mut inner = Inner {
            resolver: old.resolver.clone(),
            query: old.query.clone(),
            scheme: old.scheme,
            ttl_bounds: old.ttl_bounds,
            ipv4_only: old.ipv4_only,
            events: old.events.clone(),
            followers: Followers::default(),
        };
        change(&mut inner);
        DnsDiscovery {
            inner: Arc::new(inner),
        }
    }

    /// Calls the instances over https. Default is http.
    pub fn https(self) -> Self {
        self.with(|i| i.scheme = "https")
    }

    /// Keeps only IPv4 addresses. Default is both families.
    pub fn ipv4_only(self) -> Self {
        self.with(|i| i.ipv4_only = true)
    }

    /// Re-resolves when the answer's TTL runs out, but no sooner than `min`
    /// and no later than `max` after the last lookup. Default 1 s and 60 s.
    pub fn with_ttl_bounds(self, min: Duration, max: Duration) -> Self {
        self.with(|i| i.ttl_bounds = (min.min(max), max))
    }

    /// A callback for [`Event::DiscoveryFailed`]: a lookup that failed
    /// (the last answer stays in use). The event also reaches `tracing` and
    /// the metrics without one. (Before any subscription; clones made
    /// earlier keep the old callback.)
    ///
    /// Default is none.
    pub fn on_event(self, callback: impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static) -> Self {
        let events = EventSink::new(callback);
        self.with(|i| i.events = events)
    }
}

impl Discovery for DnsDiscovery {
    fn subscribe(&self, service: &str) -> Subscription {
        let inner = Arc::clone(&self.inner);
        self.inner
            .followers
            .subscribe(service, |sender| follow(inner, service.to_owned(), sender))
    }
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let query = match &self.inner.query {
            Query::Host { name, port } => format!("{name}:{port}"),
            Query::Srv { name } => format!("SRV {name}"),
        };
        f.debug_struct("DnsDiscovery")
            .field("query", &query)
            .finish()
    }
}

/// How long to wait before the next lookup: the answer's validity, bounded.
fn next_lookup(valid_for: Duration, (min, max): (Duration, Duration)) -> Duration {
    valid_for.clamp(min, max)
}

fn instance(scheme: &str, addr: SocketAddr, weight: Option<u32>) -> Instance {
    let mut instance = Instance::new(addr.to_string(), format!("{scheme}://{addr}"));
    instance.weight = weight;
    instance
}

/// One SRV target and what the lookup of its addresses answered.
struct SrvTarget {
    port: u16,
    weight: u16,
    /// The addresses and how long they are valid; `None` if the lookup
    /// failed.
    addrs: Option<(Vec<IpAddr>, Duration)>,
}

/// The instances an SRV answer adds up to and how long they are valid, or
/// `None` when no target resolved: that counts as a failed lookup, and the
/// caller keeps the last set. `targets` leaves out `.` targets ("no
/// service here"), so an empty `targets` is a real, empty answer. When some
/// targets failed, the answer is valid for no time (the next lookup comes
/// at the lower TTL bound) so the missing ones come back soon.
fn srv_instances(
    scheme: &str,
    ipv4_only: bool,
    srv_valid_for: Duration,
    targets: &[SrvTarget],
) -> Option<(Vec<Instance>, Duration)> {
    let resolved = targets.iter().filter(|t| t.addrs.is_some()).count();
    if resolved == 0 && !targets.is_empty() {
        return None;
    }
    let mut valid_for = if resolved < targets.len() {
        Duration::ZERO
    } else {
        srv_valid_for
    };
    let mut instances = Vec::new();
    for target in targets {
        let Some((ips, ips_valid_for)) = &target.addrs else {
            continue;
        };
        valid_for = valid_for.min(*ips_valid_for);
        instances.extend(
            ips.iter()
                .filter(|ip| !(ipv4_only && ip.is_ipv6()))
                .map(|ip| {
                    instance(
                        scheme,
                        SocketAddr::new(*ip, target.port),
                        Some(u32::from(target.weight)),
                    )
                }),
        );
    }
    Some((instances, valid_for))
}

/// One lookup: the instances, and how long the answer is valid.
async fn resolve(inner: &Inner) -> Result<(Vec<Instance>, Duration), Error> {
    let fail = |e| Error::new(crate::ErrorKind::Connect, "DNS lookup failed").with_source(e);
    let now = std::time::Instant::now();
    match &inner.query {
        Query::Host { name, port } => {
            let answer = inner
                .resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(fail)?;
            let instances = answer
                .iter()
                .filter(|ip| !(inner.ipv4_only && ip.is_ipv6()))
                .map(|ip| instance(inner.scheme, SocketAddr::new(ip, *port), None))
                .collect();
            Ok((
                instances,
                answer.valid_until().saturating_duration_since(now),
            ))
        }
        Query::Srv { name } => {
            let answer = inner
                .resolver
                .srv_lookup(name.as_str())
                .await
                .map_err(fail)?;
            let mut targets = Vec::new();
            for record in answer.answers() {
                let RData::SRV(srv) = &record.data else {
                    continue;
                };
                if srv.target.is_root() {
                    continue; // RFC 2782: "decidedly not available"
                }
                let addrs = inner
                    .resolver
                    .lookup_ip(srv.target.to_string().as_str())
                    .await
                    .ok()
                    .map(|ips| {
                        let valid_for = ips.valid_until().saturating_duration_since(now);
                        (ips.iter().collect(), valid_for)
                    });
                targets.push(SrvTarget {
                    port: srv.port,
                    weight: srv.weight,
                    addrs,
                });
            }
            let srv_valid_for = answer.valid_until().saturating_duration_since(now);
            srv_instances(inner.scheme, inner.ipv4_only, srv_valid_for, &targets).ok_or_else(|| {
                Error::new(
                    crate::ErrorKind::Connect,
                    format!("DNS lookup failed: no target of {name} resolved"),
                )
            })
        }
    }
}

/// Re-resolves whenever the answer expires, until every subscriber is gone.
///
/// NOTE: the lookup and the wait are both raced against the subscribers
/// going away ([`until_unsubscribed`]): a lookup can take hickory's
/// timeouts several times over against a silent name server.
async fn follow(inner: Arc<Inner>, service: String, sender: watch::Sender<Option<Instances>>) {
    loop {
        let Some(answer) = until_unsubscribed(&sender, resolve(&inner)).await else {
            return;
        };
        let wait = match answer {
            Ok((instances, valid_for)) => {
                sender.send_replace(Some(instances.into()));
                next_lookup(valid_for, inner.ttl_bounds)
            }
            Err(e) => {
                report(&inner.events, &service, inner.query.name(), &Chain(&e));
                answer_none_if_first(&sender);
                inner.ttl_bounds.0
            }
        };
        if until_unsubscribed(&sender, tokio::time::sleep(wait))
            .await
            .is_none()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_lookup_follows_the_ttl_within_bounds() {
        let bounds = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(
            next_lookup(Duration::from_secs(30), bounds),
            Duration::from_secs(30)
        );
        assert_eq!(next_lookup(Duration::ZERO, bounds), Duration::from_secs(1));
        assert_eq!(
            next_lookup(Duration::from_secs(86_400), bounds),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn instances_are_named_by_address() {
        let v6: SocketAddr = "[::1]:8080".parse().unwrap_or_else(|_| panic!("literal"));
        let i = instance("http", v6, Some(5));
        assert_eq!(
            (i.id.as_str(), i.url.as_str()),
            ("[::1]:8080", "http://[::1]:8080")
        );
        assert_eq!(i.weight, Some(5));
    }

    fn target(port: u16, addrs: Option<(&[&str], u64)>) -> SrvTarget {
        SrvTarget {
            port,
            weight: 10,
            addrs: addrs.map(|(ips, secs)| {
                let ips = ips
                    .iter()
                    .map(|ip| ip.parse().unwrap_or_else(|_| panic!("literal {ip}")))
                    .collect();
                (ips, Duration::from_secs(secs))
            }),
        }
    }

    fn ids(answer: Option<(Vec<Instance>, Duration)>) -> Option<(Vec<String>, u64)> {
        answer
            .map(|(set, valid_for)| (set.into_iter().map(|i| i.id).collect(), valid_for.as_secs()))
    }

    #[test]
    fn an_srv_answer_whose_targets_all_fail_keeps_the_last_set() {
        let srv_ttl = Duration::from_secs(30);
        let answer = |targets: &[SrvTarget]| ids(srv_instances("http", false, srv_ttl, targets));
        // Every target resolves: all instances, valid as long as the
        // shortest-lived record.
        assert_eq!(
            answer(&[
                target(80, Some((&["10.0.0.1", "10.0.0.2"], 20))),
                target(81, Some((&["10.0.0.3"], 40))),
            ]),
            Some((
                vec![
                    "10.0.0.1:80".into(),
                    "10.0.0.2:80".into(),
                    "10.0.0.3:81".into()
                ],
                20
            ))
        );
        // No target resolves (a resolver outage, not an empty service): no
        // set, so the last one stays.
        assert_eq!(answer(&[target(80, None), target(81, None)]), None);
        // Some resolve: serve those, and look again soon for the others.
        assert_eq!(
            answer(&[target(80, None), target(81, Some((&["10.0.0.3"], 40)))]),
            Some((vec!["10.0.0.3:81".into()], 0))
        );
        // No target at all (only "."): the service says it has no instance.
        assert_eq!(answer(&[]), Some((vec![], 30)));
        // Addresses that resolved but are filtered out are a real answer too.
        assert_eq!(
            ids(srv_instances(
                "http",
                true,
                srv_ttl,
                &[target(80, Some((&["::1"], 20)))]
            )),
            Some((vec![], 20))
        );
    }

    #[tokio::test]
    async fn dropping_the_last_subscriber_ends_a_lookup_in_progress() {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;

        // A name server that never answers: a lookup against it waits out
        // hickory's timeouts (5 s, twice), so only the race against the
        // subscribers can end the task sooner.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = silent
            .local_addr()
            .unwrap_or_else(|e| panic!("address: {e}"));
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let server = NameServerConfig::new(addr.ip(), true, vec![udp]);
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        )
        .build()
        .unwrap_or_else(|e| panic!("resolver: {e}"));
        let discovery = DnsDiscovery::with_resolver(
            resolver,
            Query::Host {
                name: "frozen.courier.test.".into(),
                port: 80,
            },
        );

        let subscription = discovery.subscribe("inventory");
        // The lookup is under way once the query reaches the server.
        let mut query = [0u8; 512];
        tokio::time::timeout(Duration::from_secs(5), silent.recv_from(&mut query))
            .await
            .unwrap_or_else(|_| panic!("no query reached the name server"))
            .unwrap_or_else(|e| panic!("recv: {e}"));
        assert!(subscription.borrow().is_none(), "still looking up");

        // The follow task holds the discovery's state; it lets go when the
        // task ends.
        drop(subscription);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&discovery.inner) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the lookup task outlived its last subscriber"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
