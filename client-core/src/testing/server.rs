//! [`FaultServer`]: the listener, its plans and its counters.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::conn::{self, After, Conn, ReadError, Received};
use super::fault::Fault;

/// A loopback HTTP/1.1 server that misbehaves as scripted, one [`Fault`]
/// per request, and counts what it sees.
///
/// It listens on `127.0.0.1` on a free port and serves on a task of the
/// current tokio runtime; dropping it stops the task and closes every
/// connection. Until told otherwise, it answers `200 OK` with an empty body.
///
/// Which fault answers a request: the next one of the path's script (see
/// [`on`](Self::on)), else the path's default, else the next one of the
/// server's script ([`script`](Self::script)), else the server's default
/// ([`set`](Self::set)). Connections are kept alive as HTTP/1.1 says, so a
/// pooled client sends several requests on one; every count stays exact.
///
/// ```
/// use courier::testing::{Fault, FaultServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = FaultServer::start().await?;
/// server
///     .script([Fault::status(503), Fault::status(503)])
///     .then(Fault::ok("fine"));
/// server.on("/health").set(Fault::ok("up"));
/// println!("{}", server.url()); // http://127.0.0.1:PORT
/// # Ok(()) }
/// ```
pub struct FaultServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

struct Shared {
    plans: Mutex<Plans>,
    counts: watch::Sender<Counts>,
    received: Mutex<Vec<Received>>,
    keep_received: std::sync::atomic::AtomicBool,
    bytes_sent: Arc<AtomicU64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Connections accepted since the last reset (the ids go on).
    connections: usize,
    accepted_ever: u64,
    open: usize,
    requests: usize,
}

struct Plans {
    server: Plan,
    paths: HashMap<String, Plan>,
}

#[derive(Default)]
struct Plan {
    script: VecDeque<Fault>,
    default: Option<Fault>,
    /// Weighted faults picked at random per request (after the script).
    mix: Vec<(u32, Fault)>,
}

impl Plan {
    fn pick_mixed(&self) -> Option<Fault> {
        let total: u64 = self.mix.iter().map(|(w, _)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut ticket = fastrand::u64(..total);
        for (weight, fault) in &self.mix {
            if ticket < u64::from(*weight) {
                return Some(fault.clone());
            }
            ticket -= u64::from(*weight);
        }
        None
    }
}

// ===== impl FaultServer =====

impl FaultServer {
    /// Starts a server on `127.0.0.1` on a free port, answering `200 OK`
    /// until told otherwise.
    ///
    /// # Errors
    ///
    /// If no loopback port can be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the server runs on a spawned task).
    pub async fn start() -> io::Result<FaultServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            plans: Mutex::new(Plans {
                server: Plan {
                    script: VecDeque::new(),
                    default: Some(Fault::default()),
                    mix: Vec::new(),
                },
                paths: HashMap::new(),
            }),
            counts: watch::Sender::new(Counts::default()),
            received: Mutex::new(Vec::new()),
            keep_received: std::sync::atomic::AtomicBool::new(true),
            bytes_sent: Arc::new(AtomicU64::new(0)),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultServer { shared, addr, task })
    }

    /// A port on `127.0.0.1` where nothing listens, so that connecting to
    /// it is refused (a connect error, as from a service that is down).
    /// The port stays reserved while the returned [`ClosedPort`] lives.
    ///
    /// ```
    /// # use courier::testing::FaultServer;
    /// # fn demo() -> std::io::Result<()> {
    /// let down = FaultServer::refusing()?;
    /// let base_url = down.url(); // http://127.0.0.1:PORT, refusing
    /// # let _ = base_url; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// If no loopback port can be bound.
    pub fn refusing() -> io::Result<ClosedPort> {
        // Bound but never listening: the kernel answers every connection
        // attempt with RST (ECONNREFUSED), and no one else can take the port.
        let socket = TcpSocket::new_v4()?;
        socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let addr = socket.local_addr()?;
        Ok(ClosedPort {
            _socket: socket,
            addr,
        })
    }

    /// The base URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers every request with `fault` from now on (on paths without a
    /// plan of their own), dropping what was left of the script.
    pub fn set(&self, fault: Fault) {
        let mut plans = self.shared.plans();
        plans.server.script.clear();
        plans.server.default = Some(fault);
    }

    /// Answers the next requests with `faults`, one each, in order; after
    /// them the default (unchanged unless [`then`](Scripted::then) sets
    /// it). Replaces what was left of an earlier script.
    ///
    /// ```
    /// # use courier::testing::{Fault, FaultServer};
    /// # fn demo(server: &FaultServer) {
    /// server
    ///     .script([Fault::status(503), Fault::black_hole()])
    ///     .then(Fault::ok("fine"));
    /// # }
    /// ```
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) -> Scripted<'_> {
        let mut plans = self.shared.plans();
        plans.server.script = faults.into_iter().collect();
        Scripted {
            shared: &self.shared,
            path: None,
        }
    }

    /// The plan of one path: requests whose path (as sent, percent-encoded,
    /// without the query) equals `path` are answered by it first.
    ///
    /// ```
    /// # use courier::testing::{Fault, FaultServer};
    /// # fn demo(server: &FaultServer) {
    /// server.on("/users/7").script([Fault::status(500)]).then(Fault::json(r#"{"id":7}"#));
    /// server.on("/slow").set(Fault::black_hole());
    /// # }
    /// ```
    pub fn on(&self, path: impl Into<String>) -> Route<'_> {
        Route {
            shared: &self.shared,
            path: path.into(),
        }
    }

    /// Connections accepted (refused ones included).
    pub fn connections(&self) -> usize {
        self.shared.counts.borrow().connections
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.counts.borrow().open
    }

    /// Requests received: read completely (head and body), whatever their
    /// fault did next. A request is counted before it is answered.
    pub fn requests(&self) -> usize {
        self.shared.counts.borrow().requests
    }

    /// Requests received whose path (as sent, without the query) is `path`.
    pub fn requests_to(&self, path: &str) -> usize {
        self.shared
            .received()
            .iter()
            .filter(|r| r.path() == path)
            .count()
    }

    /// The requests received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received().clone()
    }

    /// Response bytes written to the network (heads, bodies, framing).
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` requests were received. Wrap it in
    /// `tokio::time::timeout`: it waits as long as it takes.
    pub async fn wait_for_requests(&self, n: usize) {
        self.wait(|c| c.requests >= n).await;
    }

    /// Waits until at least `n` connections were accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        self.wait(|c| c.connections >= n).await;
    }

    /// Waits until no connection is open: every client hung up, or was
    /// hung up on.
    pub async fn wait_until_idle(&self) {
        self.wait(|c| c.open == 0).await;
    }

    async fn wait(&self, until: impl FnMut(&Counts) -> bool) {
        let mut counts = self.shared.counts.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = counts.wait_for(until).await;
    }

    /// Answers each request (once the server's script is used up) with one
    /// of `faults`, picked at random by weight: a load of mixed failures,
    /// for a soak test. A refusal in the mix acts once the request is read,
    /// as [`Fault::reset_before_headers`]. An empty mix goes back to the
    /// server's default ([`set`](Self::set)).
    ///
    /// ```
    /// # use courier::testing::{Fault, FaultServer};
    /// # async fn demo(server: FaultServer) {
    /// server.mix([
    ///     (80, Fault::ok("fine")),
    ///     (10, Fault::status(503)),
    ///     (10, Fault::reset_before_headers()),
    /// ]);
    /// # }
    /// ```
    pub fn mix(&self, faults: impl IntoIterator<Item = (u32, Fault)>) {
        let mix = faults
            .into_iter()
            .map(|(w, f)| {
                let f = if f.is_refusal() {
                    Fault::reset_before_headers()
                } else {
                    f
                };
                (w, f)
            })
            .collect();
        self.shared.plans().server.mix = mix;
    }

    /// Whether to keep every request received for [`received`](Self::received)
    /// and [`requests_to`](Self::requests_to) (the counts are kept either
    /// way). Turn it off for long runs, so the server's memory stays flat.
    ///
    /// Default is on.
    pub fn keep_requests(&self, keep: bool) {
        self.shared.keep_received.store(keep, Ordering::Relaxed);
        if !keep {
            self.shared.received().clear();
        }
    }

    /// Sets the counts of connections, requests and bytes to zero and
    /// forgets the requests received; the plans are kept.
    pub fn reset_counts(&self) {
        let mut received = self.shared.received();
        received.clear();
        self.shared.bytes_sent.store(0, Ordering::Relaxed);
        self.shared.counts.send_modify(|c| {
            c.connections = 0;
            c.requests = 0;
        });
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        // The accept loop owns the listener and the connections' tasks.
        self.task.abort();
    }
}

impl fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = *self.shared.counts.borrow();
        f.debug_struct("FaultServer")
            .field("addr", &self.addr)
            .field("connections", &counts.connections)
            .field("open_connections", &counts.open)
            .field("requests", &counts.requests)
            .finish()
    }
}

/// Sets what follows a script: see [`FaultServer::script`].
#[derive(Debug)]
pub struct Scripted<'a> {
    shared: &'a Shared,
    path: Option<String>,
}

impl Scripted<'_> {
    /// Answers with `fault` once the script is used up (and from then on).
    pub fn then(self, fault: Fault) {
        let mut plans = self.shared.plans();
        match self.path {
            None => plans.server.default = Some(fault),
            Some(path) => plans.paths.entry(path).or_default().default = Some(fault),
        }
    }
}

/// The plan of one path: see [`FaultServer::on`].
#[derive(Debug)]
pub struct Route<'a> {
    shared: &'a Shared,
    path: String,
}

impl<'a> Route<'a> {
    /// Answers every request to this path with `fault`, dropping what was
    /// left of its script.
    pub fn set(self, fault: Fault) {
        let mut plans = self.shared.plans();
        let plan = plans.paths.entry(self.path).or_default();
        plan.script.clear();
        plan.default = Some(fault);
    }

    /// Answers the next requests to this path with `faults`, in order;
    /// after them, the path's default if [`then`](Scripted::then) set one,
    /// else the server's plan.
    pub fn script(self, faults: impl IntoIterator<Item = Fault>) -> Scripted<'a> {
        let mut plans = self.shared.plans();
        plans.paths.entry(self.path.clone()).or_default().script = faults.into_iter().collect();
        Scripted {
            shared: self.shared,
            path: Some(self.path),
        }
    }
}

/// A loopback port where nothing listens: see [`FaultServer::refusing`].
#[derive(Debug)]
pub struct ClosedPort {
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// The base URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

// ===== impl Shared =====

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn plans(&self) -> MutexGuard<'_, Plans> {
        // A panic elsewhere cannot leave a plan half-changed: every change
        // is one assignment.
        self.plans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A refusal, if the server's plan has one next: taken when a
    /// connection opens.
    fn take_refusal(&self) -> Option<Fault> {
        let mut plans = self.plans();
        let plan = &mut plans.server;
        match plan.script.front() {
            Some(next) if next.is_refusal() => plan.script.pop_front(),
            Some(_) => None,
            None => plan.default.clone().filter(Fault::is_refusal),
        }
    }

    /// The fault for a request to `path`.
    fn next_fault(&self, path: &str) -> Fault {
        let mut plans = self.plans();
        if let Some(plan) = plans.paths.get_mut(path) {
            if let Some(fault) = plan.script.pop_front() {
                return fault;
            }
            if let Some(fault) = &plan.default {
                return fault.clone();
            }
        }
        let plan = &mut plans.server;
        plan.script
            .pop_front()
            .or_else(|| plan.pick_mixed())
            .or_else(|| plan.default.clone())
            .unwrap_or_default()
    }

    fn record(&self, request: Received) {
        if self.keep_received.load(Ordering::Relaxed) {
            self.received().push(request);
        }
        self.counts.send_modify(|c| c.requests += 1);
    }
}

/// Counts a connection open until dropped (also when its task is aborted).
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .counts
            .send_modify(|c| c.open = c.open.saturating_sub(1));
    }
}

// ===== serving =====

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // NOTE: the connections' tasks live in this set, so aborting this task
    // (dropping the server) aborts them and closes their sockets.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let mut id = 0;
                    shared.counts.send_modify(|c| {
                        c.connections += 1;
                        c.accepted_ever += 1;
                        c.open += 1;
                        id = c.accepted_ever;
                    });
                    let open = Open(Arc::clone(&shared));
                    let refusal = shared.take_refusal();
                    connections.spawn(serve(open, stream, id, refusal));
                }
                // Out of file descriptors, or a connection reset while
                // queued: try again shortly rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(open: Open, stream: TcpStream, id: u64, refusal: Option<Fault>) {
    let shared = &open.0;
    if let Some(fault) = refusal {
        tokio::time::sleep(fault.delay).await;
        conn::reset(stream);
        return;
    }
    let mut conn = Conn::new(stream, id, Arc::clone(&shared.bytes_sent));
    loop {
        let (received, request) = match conn.read_request().await {
            Ok(Some(read)) => read,
            Ok(None) | Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status, why)) => {
                conn.refuse_request(status, why).await;
                return;
            }
        };
        let fault = shared.next_fault(received.path());
        shared.record(received);
        match conn.perform(&fault, &request).await {
            After::Continue => {}
            after => return conn.end(after).await,
        }
    }
}
