//! Reading a client's state, without changing it: [`Inspect`] gives a
//! [`ClientSnapshot`] of every method's resolved policy, breaker and
//! bulkhead, the retry budget and the instances the client balances over
//! (the actuator `circuitbreakers` view, as data).

use std::time::Duration;

use tokio::time::Instant;

#[cfg(feature = "dashboard")]
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

#[cfg(feature = "dashboard")]
use crate::client::RuntimeInner;
use crate::client::{ClientSpec, Runtime, Target};
use crate::observe::CircuitState;
use crate::policy::MethodPolicy;
use crate::policy::circuit::Force;
use crate::spec::Verb;

/// A client's state at one moment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientSnapshot {
    /// The logical service name.
    pub service: &'static str,
    /// Every method, in the trait's order.
    pub methods: Vec<MethodSnapshot>,
    /// Retries the client's budget would allow now; `None` without a
    /// budget.
    pub retry_budget_remaining: Option<u64>,
    /// The instances balanced over; `None` for a client with a fixed base
    /// URL.
    pub instances: Option<Vec<InstanceSnapshot>>,
}

/// One method's state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MethodSnapshot {
    /// The trait method's name.
    pub name: &'static str,
    /// Its verb.
    pub verb: Verb,
    /// Its path template, prefix included.
    pub path: &'static str,
    /// Its effective policy (attributes, config and defaults resolved).
    pub policy: MethodPolicy,
    /// Its breaker; `None` when disabled.
    pub circuit: Option<CircuitSnapshot>,
    /// Its bulkhead; `None` when it has none.
    pub bulkhead: Option<BulkheadSnapshot>,
}

/// A breaker's state and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitSnapshot {
    /// Its state.
    pub state: CircuitState,
    /// An operator's override, if any ([`Force::Auto`] when none).
    pub forced: Force,
    /// Failures in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow: u64,
    /// Outcomes in the window.
    pub calls: u64,
}

/// A bulkhead's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadSnapshot {
    /// Its size.
    pub max_concurrent: u32,
    /// Free slots now.
    pub available: usize,
}

/// One discovered instance, as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InstanceSnapshot {
    /// The instance's id.
    pub id: String,
    /// Its base URL.
    pub url: String,
    /// Its zone, if known.
    pub zone: Option<String>,
    /// Calls in flight to it.
    pub in_flight: u32,
    /// Its round-trip estimate (peak-EWMA) as of its last answer.
    pub rtt: Duration,
    /// Whether it is ejected now.
    pub ejected: bool,
    /// Times it was ejected.
    pub ejections: u32,
}

/// Reading a client's state: implemented by every generated client.
///
/// ```no_run
/// use courier::Inspect;
/// # #[courier::client(name = "user-service")]
/// # pub trait Users {
/// #     #[get("/users/{id}")]
/// #     async fn get(&self, id: u64) -> Result<(), courier::Error>;
/// # }
/// # fn demo(users: &UsersClient) {
/// if users.circuit_state("get") == Some(courier::CircuitState::Open) {
///     eprintln!("user-service#get is open");
/// }
/// for method in users.snapshot().methods {
///     println!("{} {:?}", method.name, method.circuit.map(|c| c.state));
/// }
/// # }
/// ```
pub trait Inspect {
    /// Everything at once.
    fn snapshot(&self) -> ClientSnapshot;

    /// The resolved policy of a method, by its name in the trait.
    fn method_policy(&self, method: &str) -> Option<&MethodPolicy>;

    /// The state of a method's circuit breaker; `None` for an unknown method
    /// or a disabled breaker.
    fn circuit_state(&self, method: &str) -> Option<CircuitState>;

    /// Retries the client's budget would allow right now.
    fn retry_budget_remaining(&self) -> Option<u64>;

    /// The instances the client balances over; `None` for a client with a
    /// fixed base URL.
    fn instances(&self) -> Option<Vec<InstanceSnapshot>>;
}

/// A snapshot of a client's settings and state.
pub(crate) fn snapshot(
    service: &'static str,
    shared: &crate::client::Shared,
    methods: &[crate::client::MethodRuntime],
) -> ClientSnapshot {
    ClientSnapshot {
        service,
        methods: methods
            .iter()
            .map(|m| MethodSnapshot {
                name: m.def.name,
                verb: m.def.verb,
                path: m.def.path,
                policy: m.policy,
                circuit: m.breaker.as_ref().map(|b| {
                    let (failures, slow, calls) = b.window_counts();
                    CircuitSnapshot {
                        state: b.state(),
                        forced: b.forced(),
                        failures,
                        slow,
                        calls,
                    }
                }),
                bulkhead: m.bulkhead.as_ref().map(|b| BulkheadSnapshot {
                    max_concurrent: b.max_concurrent(),
                    available: b.available(),
                }),
            })
            .collect(),
        retry_budget_remaining: shared.budget.as_ref().map(|b| b.remaining(Instant::now())),
        instances: instances(&shared.target),
    }
}

fn instances(target: &Target) -> Option<Vec<InstanceSnapshot>> {
    let Target::Balanced(balancer) = target else {
        return None;
    };
    let now = Instant::now();
    Some(
        balancer
            .endpoints()
            .iter()
            .map(|e| InstanceSnapshot {
                id: e.instance().id.clone(),
                url: e.base_url().to_owned(),
                zone: e.instance().zone.clone(),
                in_flight: e.in_flight(),
                rtt: e.rtt_estimate(),
                ejected: balancer.is_endpoint_ejected(e, now),
                ejections: e.ejections(),
            })
            .collect(),
    )
}

impl<C: ClientSpec> Inspect for C {
    fn snapshot(&self) -> ClientSnapshot {
        let runtime = self.runtime();
        snapshot(C::DEF.name, runtime.shared(), runtime.methods())
    }

    fn method_policy(&self, method: &str) -> Option<&MethodPolicy> {
        find(self.runtime(), method).map(|m| &m.policy)
    }

    fn circuit_state(&self, method: &str) -> Option<CircuitState> {
        find(self.runtime(), method)?
            .breaker
            .as_ref()
            .map(|b| b.state())
    }

    fn retry_budget_remaining(&self) -> Option<u64> {
        let budget = self.runtime().shared().budget.as_ref()?;
        Some(budget.remaining(Instant::now()))
    }

    fn instances(&self) -> Option<Vec<InstanceSnapshot>> {
        instances(&self.runtime().shared().target)
    }
}

fn find<'r, C: ClientSpec>(
    runtime: &'r Runtime<C>,
    method: &str,
) -> Option<&'r crate::client::MethodRuntime> {
    runtime.methods().iter().find(|m| m.def.name == method)
}

// ===== the registry (feature `dashboard`) =====

/// A built client, as the dashboard sees it.
#[cfg(feature = "dashboard")]
pub trait Observed: Send + Sync {
    /// Its state and effective policies.
    fn snapshot(&self) -> ClientSnapshot;

    /// Its counters, per method.
    fn stats(&self) -> Vec<crate::observe::stats::MethodStatsSnapshot>;

    /// Forces a method's breaker (an operator's action); `false` for an
    /// unknown method or one without a breaker.
    fn force(&self, method: &str, force: Force) -> bool;
}

#[cfg(feature = "dashboard")]
type Registry = Mutex<Vec<Weak<dyn Observed>>>;

#[cfg(feature = "dashboard")]
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

/// Every built client still alive (any of its clones), in the order built.
#[cfg(feature = "dashboard")]
pub fn clients() -> Vec<Arc<dyn Observed>> {
    let mut list = registry().lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|w| w.strong_count() > 0);
    list.iter().filter_map(Weak::upgrade).collect()
}

#[cfg(feature = "dashboard")]
pub(crate) fn register_observed(client: Weak<dyn Observed>) {
    let mut list = registry().lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|w| w.strong_count() > 0);
    list.push(client);
}

/// Registers a built client, so that [`clients`] finds it (weakly: the
/// list does not keep it alive).
#[cfg(feature = "dashboard")]
pub(crate) fn register<C: ClientSpec>(runtime: &Runtime<C>) {
    let weak: Weak<dyn Observed> = Arc::downgrade(&runtime.inner) as _;
    register_observed(weak);
}

#[cfg(feature = "dashboard")]
impl<C: ClientSpec> Observed for RuntimeInner<C> {
    fn snapshot(&self) -> ClientSnapshot {
        snapshot(C::DEF.name, &self.shared, &self.methods)
    }

    fn stats(&self) -> Vec<crate::observe::stats::MethodStatsSnapshot> {
        let methods: Vec<_> = self
            .methods
            .iter()
            .map(|m| (m.def.name, &m.probe.stats))
            .collect();
        crate::observe::stats::snapshot(&methods)
    }

    fn force(&self, method: &str, force: Force) -> bool {
        let breaker = self
            .methods
            .iter()
            .find(|m| m.def.name == method)
            .and_then(|m| m.breaker.as_ref());
        match breaker {
            Some(breaker) => {
                breaker.force(force);
                true
            }
            None => false,
        }
    }
}
