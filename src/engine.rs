//! The engine: N workers, each with its own `SO_REUSEPORT` socket(s),
//! buffer pool, backend loop and handler, optionally pinned to a CPU.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use socket2::Socket;

use crate::backend;
use crate::backend::worker::Worker;
use crate::bufring::Pool;
use crate::config::{Backend, Config};
use crate::guard::{GuardState, HostAddrs};
use crate::socket::{self, SocketInfo};
use crate::stats::{SharedStats, Stats};
use crate::sys;
use crate::worker::handler::Handler;
use crate::worker::sender::{Inbox, Sender};
use crate::worker::stream::{Incoming, StreamHandler, StreamShared};

/// Most datagrams an [`Engine::start_stream`] worker keeps waiting.
pub const MAX_STREAM_DEPTH: usize = 1 << 16;
use crate::worker::{Core, Sockets, WorkerShared};

/// Stops an engine from any thread.
#[derive(Clone)]
pub struct StopHandle {
    shared: Vec<Arc<WorkerShared>>,
}

impl StopHandle {
    /// Asks every worker to stop; returns at once.
    pub fn stop(&self) {
        for w in &self.shared {
            w.stop.store(true, Ordering::Release);
            w.inbox.wake.notify();
        }
    }

    /// Counters summed over workers, now.
    pub fn stats(&self) -> Stats {
        sum(&self.shared)
    }

    /// Counters per worker, now (for [`metrics::prometheus`](crate::metrics::prometheus)).
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.shared.iter().map(|w| w.snapshot()).collect()
    }
}

fn sum(shared: &[Arc<WorkerShared>]) -> Stats {
    let mut t = Stats::default();
    for w in shared {
        t.merge(&w.snapshot());
    }
    t
}

/// A running engine. Dropping it stops and joins the workers.
pub struct Engine {
    threads: Vec<JoinHandle<io::Result<()>>>,
    shared: Vec<Arc<WorkerShared>>,
    local_addr: SocketAddr,
    local_addrs: Vec<SocketAddr>,
    backend: Backend,
    fallback: Option<String>,
    socket_info: SocketInfo,
    cpus: Vec<Option<usize>>,
    /// The xdp backend's program, attached while the engine lives.
    xdp: Option<Arc<backend::xdp::XdpAttach>>,
}

impl Engine {
    /// Binds the sockets, starts the workers and returns once every worker
    /// is receiving. `factory(i)` makes worker `i`'s handler, on worker
    /// `i`'s thread. A factory that panics fails the start (every worker is
    /// stopped) with the panic's message.
    pub fn start<H, F>(cfg: Config, factory: F) -> io::Result<Engine>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        Engine::start_each(cfg, move |i| {
            let f = factory.clone();
            move || f(i)
        })
    }

    /// Like [`Engine::start`], with a constructor per worker: `make(i)` is
    /// called on the caller's thread, once per worker in order, and the
    /// closure it returns is run on worker `i`'s thread to make its
    /// handler. So each worker can be given what is its own (a channel's
    /// receiving end, a shard of a table) without a lock.
    pub fn start_each<H, M, G>(cfg: Config, make: M) -> io::Result<Engine>
    where
        H: Handler,
        M: FnMut(usize) -> G,
        G: FnOnce() -> H + Send + 'static,
    {
        Engine::start_inner(cfg, None, make)
    }

    /// Like [`Engine::start`], on sockets the caller opened and bound: a
    /// service's parent or systemd's socket activation hands them over
    /// ([`crate::os::listen_fds`]), as Twisted's `adoptDatagramPort` takes
    /// one. One worker per socket (`cfg.workers` 0 or their number), each
    /// a UDP socket bound to an address and a port; the engine applies the
    /// rest of `cfg` as to sockets of its own (GRO, buffers, the guard's
    /// marks, groups, ...) and owns them from here. `cfg.bind` is not
    /// used: [`Engine::local_addr`] is the first socket's. Options that act
    /// before a bind (`reuse_addr`, `bind_device`, `only_v6`) and more
    /// sockets per worker (`sockets_per_worker`, `also_bind`,
    /// `distinct_ports`) are refused: set them on the sockets. A standard
    /// `UdpSocket` goes in as `sock.into()`.
    pub fn start_on<H, F>(
        cfg: Config,
        sockets: impl IntoIterator<Item = std::os::fd::OwnedFd>,
        factory: F,
    ) -> io::Result<Engine>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let sockets: Vec<std::os::fd::OwnedFd> = sockets.into_iter().collect();
        Engine::start_inner(cfg, Some(sockets), move |i| {
            let f = factory.clone();
            move || f(i)
        })
    }

    /// The engine as async streams of owned datagrams, one [`Incoming`]
    /// per worker (see [`crate::Incoming`]): each datagram copied into a
    /// buffer of a pool of `depth` per worker, at most `depth` waiting
    /// (more are dropped and counted). For code that lives in async tasks;
    /// the handler API ([`Engine::start`]) costs no copy.
    pub fn start_stream(cfg: Config, depth: usize) -> io::Result<(Engine, Vec<Incoming>)> {
        if !(1..=MAX_STREAM_DEPTH).contains(&depth) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a stream's depth must be 1..{MAX_STREAM_DEPTH}, not {depth}"),
            ));
        }
        let mut shares = Vec::new();
        let engine = Engine::start_each(cfg, |_| {
            let shared = StreamShared::new(depth);
            shares.push(shared.clone());
            move || StreamHandler { shared }
        })?;
        let incoming = shares
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let sender = engine
                    .sender(i)
                    .ok_or_else(|| io::Error::other("no such worker"))?;
                Ok(Incoming::new(s, sender, i))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok((engine, incoming))
    }

    fn start_inner<H, M, G>(
        cfg: Config,
        adopted: Option<Vec<std::os::fd::OwnedFd>>,
        mut make: M,
    ) -> io::Result<Engine>
    where
        H: Handler,
        M: FnMut(usize) -> G,
        G: FnOnce() -> H + Send + 'static,
    {
        cfg.validate()?;
        let (backend, fallback) = backend::choose_backend(cfg.backend)?;
        // Chosen by UDPRING_BACKEND: the xdp backend's slots and checks
        // apply as if the configuration had asked for it.
        let cfg = if backend == Backend::Xdp && cfg.backend != Some(Backend::Xdp) {
            let mut c = cfg;
            c.backend = Some(Backend::Xdp);
            c.validate()?;
            c
        } else {
            cfg
        };
        let cpus = sys::cpu::allowed_cpus();
        let (workers, (sockets, local_addrs, socket_info)) = match adopted {
            Some(fds) => (fds.len(), adopt_sockets(&cfg, fds)?),
            None => {
                let workers = match cfg.workers {
                    // One worker per receive queue of the interface (and CPU).
                    0 if backend == Backend::Xdp => {
                        (backend::xdp::queues(&cfg)? as usize).min(cpus.len().max(1))
                    }
                    0 => cpus.len().max(1),
                    n => n,
                };
                (workers, open_sockets(&cfg, workers)?)
            }
        };
        let local_addr = local_addrs[0];
        let xdp = if backend == Backend::Xdp {
            let v6only = sockets
                .first()
                .and_then(|s| s.first())
                .is_some_and(|(s, a)| a.is_ipv6() && s.only_v6().unwrap_or(false));
            Some(Arc::new(backend::xdp::XdpAttach::attach(
                &cfg, local_addr, v6only,
            )?))
        } else {
            None
        };
        let host = HostAddrs::read();
        let own_ports: Vec<u16> = {
            let mut v: Vec<u16> = local_addrs.iter().map(|a| a.port()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let slot_payload = cfg.effective_slot_size() - crate::limits::HEADROOM;
        let mut threads = Vec::with_capacity(workers);
        let mut shared = Vec::with_capacity(workers);
        let mut pinned = Vec::with_capacity(workers);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
        for (i, socket) in sockets.into_iter().enumerate() {
            let sock_v6 = socket.iter().map(|(_, a)| a.is_ipv6()).collect();
            let fds = socket.iter().map(|(s, _)| s.as_raw_fd()).collect();
            let w = Arc::new(WorkerShared {
                stop: AtomicBool::new(false),
                stats: SharedStats::new(),
                inbox: Inbox::new(cfg.sender_queue, slot_payload, sock_v6, fds)?,
                failure: std::sync::Mutex::new(None),
                on_failure: cfg.on_failure.clone().map(|h| (i, h)),
            });
            shared.push(w.clone());
            let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[(cfg.first_cpu + i) % cpus.len()]);
            pinned.push(cpu);
            let make_handler = make(i);
            let cfg = cfg.clone();
            let ready_tx = ready_tx.clone();
            let guard = GuardState::new(&cfg.guard, own_ports.clone(), host.clone());
            let run = backend::Run {
                backend,
                xdp: xdp.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("udpring-w{i}"))
                .spawn(move || {
                    let mut told = false;
                    let mut ready = |r: io::Result<()>| {
                        if !told {
                            told = true;
                            let _ = ready_tx.send((i, r));
                        }
                    };
                    let r = run_worker(
                        i,
                        cpu,
                        socket,
                        &cfg,
                        &run,
                        w,
                        guard,
                        make_handler,
                        &mut ready,
                    );
                    if let Err(e) = &r {
                        ready(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    r
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut engine = Engine {
            threads,
            shared,
            local_addr,
            local_addrs,
            backend,
            fallback,
            socket_info,
            cpus: pinned,
            xdp,
        };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => {
                    let _ = engine.shutdown();
                    return Err(io::Error::new(e.kind(), format!("worker {i}: {e}")));
                }
                Err(_) => {
                    let _ = engine.shutdown();
                    return Err(io::Error::other("a worker exited before it was ready"));
                }
            }
        }
        if let Some(x) = &engine.xdp
            && let Ok(notes) = x.notes.lock()
            && !notes.is_empty()
        {
            engine.fallback = Some(notes.join("; "));
        }
        Ok(engine)
    }

    /// The xdp backend's interface and where its program runs.
    pub fn xdp_interface(&self) -> Option<(&str, crate::config::XdpMode)> {
        self.xdp.as_ref().map(|x| (x.iface.as_str(), x.mode))
    }

    /// Workers that failed (their handler panicked) and why; empty while
    /// all is well. A failed worker has stopped; the others go on.
    pub fn failures(&self) -> Vec<(usize, String)> {
        self.shared
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.failed().map(|f| (i, f)))
            .collect()
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every socket's bound address (with `distinct_ports`, one port per
    /// socket), in worker-major order: socket `j` of worker `i` is entry
    /// `i + j * workers`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why the engine fell back from `uring`, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// What the kernel granted the sockets.
    pub fn socket_info(&self) -> SocketInfo {
        self.socket_info
    }

    /// The CPU each worker is pinned to (`None`: not pinned).
    pub fn worker_cpus(&self) -> &[Option<usize>] {
        &self.cpus
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.shared.len()
    }

    /// Counters summed over workers: relaxed atomic loads, no lock, no
    /// system call; it allocates only the per-errno list of failed sends
    /// when there are any. Each worker publishes its counters
    /// once per batch, so a figure may trail the worker by one batch.
    pub fn stats(&self) -> Stats {
        sum(&self.shared)
    }

    /// Counters per worker (one allocation: the `Vec`).
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.shared.iter().map(|w| w.snapshot()).collect()
    }

    /// A handle that stops the engine from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: self.shared.clone(),
        }
    }

    /// A thread-safe sender through worker `i`; `None` if there is no
    /// worker `i`.
    pub fn sender(&self, i: usize) -> Option<Sender> {
        self.shared.get(i).map(|w| Sender::new(w.inbox.clone()))
    }

    /// Joins every worker thread; the first error any of them returned.
    fn join_threads(&mut self) -> Vec<(usize, io::Error)> {
        let mut failures = Vec::new();
        for (i, t) in self.threads.drain(..).enumerate() {
            let r = t.join().unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(io::Error::other(format!("panicked: {what}")))
            });
            if let Err(e) = r {
                failures.push((i, e));
            }
        }
        for w in &self.shared {
            w.inbox.closed.store(true, Ordering::Release);
        }
        failures
    }

    fn shutdown(&mut self) -> Vec<(usize, io::Error)> {
        self.stop_handle().stop();
        self.join_threads()
    }

    fn outcome(&self, failures: Vec<(usize, io::Error)>) -> Result<Stats, StopError> {
        let stats = self.stats();
        if failures.is_empty() {
            Ok(stats)
        } else {
            Err(StopError {
                stats: Box::new(stats),
                failures,
            })
        }
    }

    /// Waits until every worker has stopped (after [`StopHandle::stop`]).
    pub fn join(mut self) -> Result<Stats, StopError> {
        let f = self.join_threads();
        self.outcome(f)
    }

    /// Stops the workers, waits for them, and returns the final counters
    /// summed over workers. When a worker failed, the error carries the
    /// counters anyway (every worker's, the failed one's as last published).
    pub fn stop(mut self) -> Result<Stats, StopError> {
        let f = self.shutdown();
        self.outcome(f)
    }
}

/// An engine that did not stop cleanly: which workers failed and why, and
/// the counters of all of them.
#[derive(Debug)]
pub struct StopError {
    /// Counters summed over every worker, as last published.
    pub stats: Box<Stats>,
    /// The failed workers: index and error.
    pub failures: Vec<(usize, io::Error)>,
}

impl std::fmt::Display for StopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, (i, e)) in self.failures.iter().enumerate() {
            if k > 0 {
                f.write_str("; ")?;
            }
            write!(f, "worker {i}: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StopError {}

impl From<StopError> for io::Error {
    fn from(e: StopError) -> io::Error {
        let kind = e
            .failures
            .first()
            .map_or(io::ErrorKind::Other, |(_, x)| x.kind());
        io::Error::new(kind, e.to_string())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The sockets of [`Engine::start_on`]: each checked and configured, one
/// per worker.
#[allow(clippy::type_complexity)]
fn adopt_sockets(
    cfg: &Config,
    fds: Vec<std::os::fd::OwnedFd>,
) -> io::Result<(Vec<Vec<(Socket, SocketAddr)>>, Vec<SocketAddr>, SocketInfo)> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    if fds.is_empty() {
        return Err(refuse("no socket to start on".into()));
    }
    if cfg.workers != 0 && cfg.workers != fds.len() {
        return Err(refuse(format!(
            "{} sockets handed in for {} workers: one worker per socket (workers 0 takes \
             their number)",
            fds.len(),
            cfg.workers
        )));
    }
    if cfg.sockets_per_worker > 1 || !cfg.also_bind.is_empty() || cfg.distinct_ports {
        return Err(refuse(
            "sockets_per_worker, also_bind and distinct_ports open sockets of the engine's \
             own: hand every socket in instead"
                .into(),
        ));
    }
    let mut sockets = Vec::with_capacity(fds.len());
    let mut all = Vec::with_capacity(fds.len());
    let mut info = None;
    for (i, fd) in fds.into_iter().enumerate() {
        let (s, a, si) = socket::adopt(cfg, fd, i == 0)?;
        info.get_or_insert(si);
        all.push(a);
        sockets.push(vec![(s, a)]);
    }
    let info = info.ok_or_else(|| io::Error::other("no socket adopted"))?;
    Ok((sockets, all, info))
}

/// Opens every socket of the engine: `sockets_per_worker` per worker on
/// `bind` (one `SO_REUSEPORT` group, or each on its own port with
/// `distinct_ports`), then one per worker on each of `also_bind`. Returns
/// each worker's sockets with their addresses (its socket `j < per` is
/// entry `i + j * workers` of the list, so that the first `workers`
/// sockets of the group are one per worker: the CPU steering program
/// indexes the group by CPU; socket `per + k` is on `also_bind[k]`), every
/// address in that order, and what the kernel granted the first.
#[allow(clippy::type_complexity)]
fn open_sockets(
    cfg: &Config,
    workers: usize,
) -> io::Result<(Vec<Vec<(Socket, SocketAddr)>>, Vec<SocketAddr>, SocketInfo)> {
    let per = cfg.sockets_per_worker.max(1);
    let bound = |s: &Socket| -> io::Result<SocketAddr> {
        s.local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound to a non-IP address"))
    };
    let mut sockets: Vec<Vec<(Socket, SocketAddr)>> = (0..workers).map(|_| Vec::new()).collect();
    let mut info = None;
    let mut all = Vec::new();
    for (g, &addr) in std::iter::once(&cfg.bind).chain(&cfg.also_bind).enumerate() {
        let n = if g == 0 { workers * per } else { workers };
        let reuse = !cfg.distinct_ports && n > 1;
        let mut group_addr = addr;
        for k in 0..n {
            let bind = match (cfg.distinct_ports, addr.port()) {
                // A port given: socket k takes the k-th port from it.
                (true, p) if p != 0 && g == 0 => {
                    let port = u16::try_from(usize::from(p) + k)
                        .map_err(|_| io::Error::other(format!("port {p} + {k} is past 65535")))?;
                    SocketAddr::new(addr.ip(), port)
                }
                (true, _) => addr,
                (false, _) => group_addr,
            };
            let (s, i) = socket::open(cfg, bind, reuse, g == 0)?;
            let a = bound(&s)?;
            if k == 0 {
                group_addr = a;
                if g == 0 {
                    info = Some(i);
                    if cfg.steer_by_cpu && reuse {
                        sys::socket::attach_reuseport_cpu(s.as_raw_fd())?;
                    }
                }
            }
            all.push(a);
            sockets[k % workers].push((s, a));
        }
    }
    let info = info.ok_or_else(|| io::Error::other("no socket opened"))?;
    Ok((sockets, all, info))
}

/// One worker's thread: pin, build the pool, the state and the handler,
/// and run the backend's loop. A panic in the handler's constructor fails
/// the worker before it receives; one in the handler is caught by the
/// worker (see `Worker::call`) and fails it after an orderly stop.
#[allow(clippy::too_many_arguments)]
fn run_worker<H: Handler>(
    i: usize,
    cpu: Option<usize>,
    sockets: Vec<(Socket, SocketAddr)>,
    cfg: &Config,
    run: &backend::Run,
    shared: Arc<WorkerShared>,
    guard: GuardState,
    make_handler: impl FnOnce() -> H,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    let r = worker_body(
        i,
        cpu,
        sockets,
        cfg,
        run,
        shared.clone(),
        guard,
        make_handler,
        ready,
    );
    // Whatever happened, Senders learn the worker is gone.
    shared.inbox.close();
    match (r, shared.failed()) {
        (Ok(()), Some(why)) => Err(io::Error::other(why)),
        (r, _) => r,
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_body<H: Handler>(
    i: usize,
    cpu: Option<usize>,
    sockets: Vec<(Socket, SocketAddr)>,
    cfg: &Config,
    run: &backend::Run,
    shared: Arc<WorkerShared>,
    guard: GuardState,
    make_handler: impl FnOnce() -> H,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    let backend = run.backend;
    if let Some(c) = cpu {
        // Pinning can fail in a restricted cpuset; the worker still runs.
        let _ = sys::cpu::pin_to_cpu(c);
    }
    let ring = backend == Backend::Uring;
    let recv_slots = if ring {
        cfg.effective_recv_slots().next_power_of_two().min(32768)
    } else {
        cfg.effective_recv_slots()
    };
    let pool = Pool::new(cfg.effective_slot_size(), recv_slots, cfg.send_slots, ring)?;
    let (sockets, local): (Vec<Socket>, Vec<SocketAddr>) = sockets.into_iter().unzip();
    let per = cfg.sockets_per_worker.max(1);
    let socks = Sockets {
        fds: sockets.iter().map(|s| s.as_raw_fd()).collect(),
        // `connect` applies to the sockets on `bind`.
        connected: local
            .iter()
            .enumerate()
            .map(|(j, a)| {
                cfg.connect
                    .filter(|_| j < per)
                    .map(|p| sys::RawAddr::from_socket_addr(p, a.is_ipv6()))
            })
            .collect(),
        v6: local.iter().map(|a| a.is_ipv6()).collect(),
        fixed_dst: local.iter().map(|&a| sys::fixed_destination(a)).collect(),
        local,
    };
    // Frames carry one datagram each: trains are cut before the xdp backend.
    let gso = cfg.gso && backend != Backend::Xdp;
    let mut core = Core::new(pool, socks, i, gso, cfg.max_queued_sends, shared, guard);
    core.busy_poll = cfg.busy_poll;
    core.reflect_tos = cfg.reflect_tos;
    core.tx_timestamps = cfg.tx_timestamps;
    core.socket_segment = cfg.udp_segment.and_then(std::num::NonZeroU16::new);
    core.publish();
    let handler = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(make_handler)) {
        Ok(h) => h,
        Err(p) => {
            let why = format!(
                "the handler's constructor panicked: {}",
                crate::backend::worker::panic_text(p.as_ref())
            );
            core.shared.fail(why.clone());
            return Err(io::Error::other(why));
        }
    };
    let mut w = Worker::new(core, handler);
    let r = backend::run(run, &sockets, &mut w, cfg, ready);
    // The last word on drops, while the sockets are still open; direct
    // sends end before they close.
    w.core.read_drops();
    w.core.publish();
    w.core.shared.inbox.close();
    r
}
