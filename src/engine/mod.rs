//! The engine: N workers, each with its own `SO_REUSEPORT` socket(s),
//! buffer pool, backend loop and handler, optionally pinned to a CPU.

mod launch;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use launch::{adopt_sockets, open_sockets, run_worker};

use crate::backend;
use crate::config::{Backend, Config};
use crate::guard::{GuardState, HostAddrs};
use crate::socket::SocketInfo;
use crate::stats::{SharedStats, Stats};
use crate::sys;
use crate::worker::handler::Handler;
use crate::worker::sender::{Inbox, Sender};
use crate::worker::stream::{Incoming, StreamHandler, StreamShared};

/// Most datagrams an [`Engine::start_stream`] worker keeps waiting.
pub const MAX_STREAM_DEPTH: usize = 1 << 16;
use crate::worker::WorkerShared;

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

    /// [`Engine::launch`], its errors about the open-files limit said
    /// with what to do ([`crate::os::explain_open_files`]).
    fn start_inner<H, M, G>(
        cfg: Config,
        adopted: Option<Vec<std::os::fd::OwnedFd>>,
        make: M,
    ) -> io::Result<Engine>
    where
        H: Handler,
        M: FnMut(usize) -> G,
        G: FnOnce() -> H + Send + 'static,
    {
        Engine::launch(cfg, adopted, make).map_err(crate::os::explain_open_files)
    }

    fn launch<H, M, G>(
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
        let handed_in = adopted.is_some();
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
        // Filled worker by worker: should one not start (no thread, no
        // eventfd), the engine's drop stops and joins those that did,
        // rather than leaving them running on their sockets.
        let mut engine = Engine {
            threads: Vec::with_capacity(workers),
            shared: Vec::with_capacity(workers),
            local_addr,
            local_addrs,
            backend,
            fallback,
            socket_info,
            cpus: Vec::with_capacity(workers),
            xdp,
        };
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
            engine.shared.push(w.clone());
            let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[(cfg.first_cpu + i) % cpus.len()]);
            engine.cpus.push(cpu);
            let make_handler = make(i);
            let cfg = cfg.clone();
            let ready_tx = ready_tx.clone();
            let guard = GuardState::new(&cfg.guard, own_ports.clone(), host.clone());
            let run = backend::Run {
                backend,
                xdp: engine.xdp.clone(),
                adopted: handed_in,
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
                        ready(Err(crate::error::copy(e)));
                    }
                    r
                })
                .map_err(|e| {
                    let e = crate::os::explain_thread_limit(e);
                    io::Error::new(e.kind(), format!("worker {i}: {e}"))
                })?;
            engine.threads.push(t);
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => {
                    let _ = engine.shutdown();
                    let e = crate::os::explain_open_files(e);
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

    /// Workers that failed (their handler panicked, or their loop ended on
    /// an error, such as the xdp backend's interface removed) and why;
    /// empty while all is well. A failed worker has stopped; the others go
    /// on.
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
    /// when there are any. Each counter is read as its worker bumps it
    /// (the set is not one instant: a reply may be counted sent before
    /// another counter catches up); the slot gauges and the failed sends
    /// by errno are published once per batch and may trail by one.
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
