//! A list of instances that a program (or a test) sets and changes itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Discovery, Instance, Instances, Subscription};

/// Instances per service, changed at run time with [`set`](Self::set),
/// [`add`](Self::add) and [`remove`](Self::remove); every client subscribed
/// to the service sees the change at once. Cheap to clone (clones share the
/// lists).
///
/// ```
/// use courier::discovery::{Instance, StaticDiscovery};
///
/// let discovery = StaticDiscovery::new().with("user-service", [
///     Instance::new("a", "http://10.0.0.1:8080"),
///     Instance::new("b", "http://10.0.0.2:8080"),
/// ]);
/// discovery.remove("user-service", "a");
/// assert_eq!(discovery.instances("user-service").len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct StaticDiscovery {
    services: Arc<Mutex<HashMap<String, watch::Sender<Option<Instances>>>>>,
}

impl StaticDiscovery {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `service`'s instances (builder style).
    pub fn with(self, service: &str, instances: impl IntoIterator<Item = Instance>) -> Self {
        self.set(service, instances);
        self
    }

    fn sender(&self, service: &str) -> watch::Sender<Option<Instances>> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services
            .entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(Some(Arc::from(Vec::new()))))
            .clone()
    }

    /// Replaces `service`'s instances.
    pub fn set(&self, service: &str, instances: impl IntoIterator<Item = Instance>) {
        let list: Instances = instances.into_iter().collect::<Vec<_>>().into();
        self.sender(service).send_replace(Some(list));
    }

    /// Adds (or replaces, by id) one instance.
    pub fn add(&self, service: &str, instance: Instance) {
        self.sender(service).send_modify(|list| {
            let mut v: Vec<Instance> = list
                .iter()
                .flat_map(|l| l.iter())
                .filter(|i| i.id != instance.id)
                .cloned()
                .collect();
            v.push(instance);
            *list = Some(v.into());
        });
    }

    /// Removes the instance with this id, if present.
    pub fn remove(&self, service: &str, id: &str) {
        self.sender(service).send_modify(|list| {
            let kept: Vec<Instance> = list
                .iter()
                .flat_map(|l| l.iter())
                .filter(|i| i.id != id)
                .cloned()
                .collect();
            *list = Some(kept.into());
        });
    }

    /// `service`'s instances now.
    pub fn instances(&self, service: &str) -> Instances {
        self.sender(service)
            .borrow()
            .clone()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }
}

impl Discovery for StaticDiscovery {
    fn subscribe(&self, service: &str) -> Subscription {
        self.sender(service).subscribe()
    }
}

impl std::fmt::Debug for StaticDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = f.debug_map();
        for (name, list) in services.iter() {
            d.entry(name, &list.borrow().as_ref().map_or(0, |l| l.len()));
        }
        d.finish()
    }
}
