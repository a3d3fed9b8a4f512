//! The engine: N workers, each with its own `SO_REUSEPORT` socket, buffer
//! pool, backend loop and handler, pinned to its CPU.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

use crate::bufring::Pool;
use crate::config::{Backend, Config};
use crate::handler::{Handler, Inbox, Sender};
use crate::stats::Stats;
use crate::sys;
use crate::worker::{Core, SharedStats, WorkerShared};

/// Environment variable that forces a backend (`uring`, `mmsg`, `simple`).
pub const BACKEND_ENV: &str = "UDPRING_BACKEND";

/// Probes io_uring once per process; the error says what is missing.
pub fn uring_support() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    // On a thread of its own: the probe's ring may leave task work for the
    // thread that made it, which would interrupt that thread's next blocking
    // call with EINTR; a thread that exits takes that with it.
    PROBE
        .get_or_init(|| {
            std::thread::spawn(sys::uring::probe)
                .join()
                .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
        })
        .clone()
}

/// Picks the backend: an explicit choice, else `UDPRING_BACKEND`, else
/// `uring` when supported. Returns the backend and, when it fell back, why.
pub fn choose_backend(requested: Option<Backend>) -> io::Result<(Backend, Option<String>)> {
    let env = std::env::var(BACKEND_ENV).ok();
    decide_backend(requested, env.as_deref(), uring_support)
}

/// The decision of [`choose_backend`], given the environment variable's
/// value and the io_uring probe (called only if needed).
fn decide_backend(
    requested: Option<Backend>,
    env: Option<&str>,
    probe: impl FnOnce() -> Result<(), String>,
) -> io::Result<(Backend, Option<String>)> {
    let requested = match (requested, env) {
        (Some(b), _) => Some(b),
        (None, Some(v)) if !v.is_empty() => Some(v.parse::<Backend>().map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{BACKEND_ENV}: {e}"))
        })?),
        _ => None,
    };
    match requested {
        Some(Backend::Uring) => match probe() {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(why) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("uring backend unavailable: {why}"),
            )),
        },
        Some(b) => Ok((b, None)),
        None => match probe() {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(why) => Ok((
                Backend::Mmsg,
                Some(format!("io_uring unavailable ({why}); using mmsg")),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_choice_falls_back_forces_and_rejects() {
        let ok = || Ok(());
        let missing = || Err("io_uring_setup failed: EPERM".to_string());
        let d = |r, e, p: &dyn Fn() -> Result<(), String>| decide_backend(r, e, p);
        assert_eq!(d(None, None, &ok).unwrap(), (Backend::Uring, None));
        let (b, why) = d(None, None, &missing).unwrap();
        assert_eq!(b, Backend::Mmsg, "falls back when the probe fails");
        assert!(why.unwrap().contains("EPERM"), "and says why");
        assert_eq!(
            d(None, Some("simple"), &missing).unwrap().0,
            Backend::Simple
        );
        assert_eq!(
            d(Some(Backend::Mmsg), Some("uring"), &ok).unwrap().0,
            Backend::Mmsg
        );
        assert_eq!(d(None, Some(""), &ok).unwrap().0, Backend::Uring);
        let forced = d(None, Some("uring"), &missing).unwrap_err();
        assert_eq!(
            forced.kind(),
            io::ErrorKind::Unsupported,
            "a forced uring does not fall back"
        );
        let bad = d(None, Some("dpdk"), &ok).unwrap_err();
        assert!(bad.to_string().contains(BACKEND_ENV));
        // The probe is not run when it is not needed.
        let never = || -> Result<(), String> { panic!("probed") };
        assert_eq!(
            d(Some(Backend::Simple), None, &never).unwrap().0,
            Backend::Simple
        );
    }
}

/// What the kernel granted each socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SocketInfo {
    /// `SO_RCVBUF` as read back (the kernel doubles requests).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` as read back.
    pub send_buffer: usize,
    /// Whether `UDP_GRO` is on.
    pub gro: bool,
}

fn open_socket(
    cfg: &Config,
    bind: SocketAddr,
    reuse_port: bool,
) -> io::Result<(Socket, SocketInfo)> {
    let domain = if bind.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if reuse_port || cfg.reuse_addr {
        s.set_reuse_port(true)?;
    }
    if cfg.reuse_addr {
        s.set_reuse_address(true)?;
    }
    if cfg.broadcast {
        s.set_broadcast(true)?;
    }
    let fd = s.as_raw_fd();
    sys::set_recverr(fd, bind.is_ipv6())?;
    sys::set_rxq_ovfl(fd)?;
    if cfg.pmtu_discover {
        sys::set_pmtu_discover(fd, bind.is_ipv6(), true)?;
    }
    if cfg.gro {
        sys::set_udp_gro(fd, true).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("UDP_GRO not available on this kernel: {e}"),
            )
        })?;
    }
    let mut info = SocketInfo {
        recv_buffer: sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize,
        send_buffer: sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)? as usize,
        gro: cfg.gro,
    };
    if let Some(n) = cfg.recv_buffer {
        info.recv_buffer = sys::set_buffer_size(fd, true, n)?;
    }
    if let Some(n) = cfg.send_buffer {
        info.send_buffer = sys::set_buffer_size(fd, false, n)?;
    }
    apply_multicast(fd, bind.is_ipv6(), &cfg.multicast)?;
    s.bind(&bind.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(e.kind(), format!("{bind}: address already in use"))
        } else if e.kind() == io::ErrorKind::AddrNotAvailable {
            io::Error::new(
                e.kind(),
                format!("{bind}: address not available on this host"),
            )
        } else {
            io::Error::new(e.kind(), format!("bind {bind}: {e}"))
        }
    })?;
    if let Some(peer) = cfg.connect {
        s.connect(&peer.into())
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {peer}: {e}")))?;
    }
    Ok((s, info))
}

fn apply_multicast(
    fd: std::os::fd::RawFd,
    v6: bool,
    m: &crate::config::Multicast,
) -> io::Result<()> {
    use sys::mcast;
    if let Some(ttl) = m.ttl {
        mcast::set_ttl(fd, v6, ttl)?;
    }
    if let Some(on) = m.loopback {
        mcast::set_loop(fd, v6, on)?;
    }
    if let Some(i) = &m.interface {
        mcast::set_interface(fd, v6, i)?;
    }
    for j in &m.joins {
        match j.source {
            Some(src) => mcast::source_membership(fd, v6, j.group, src, &j.interface, true)?,
            None => mcast::membership(fd, v6, j.group, &j.interface, true)?,
        }
    }
    Ok(())
}

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
}

fn sum(shared: &[Arc<WorkerShared>]) -> Stats {
    let mut t = Stats::default();
    for w in shared {
        t.merge(&Stats::load(&w.stats));
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
}

impl Engine {
    /// Binds the sockets, starts the workers and returns once every worker
    /// is receiving. `factory(i)` makes worker `i`'s handler, on its thread.
    pub fn start<H, F>(cfg: Config, factory: F) -> io::Result<Engine>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (backend, fallback) = choose_backend(cfg.backend)?;
        let cpus = sys::allowed_cpus();
        let workers = if cfg.workers == 0 {
            cpus.len().max(1)
        } else {
            cfg.workers
        };
        let per = cfg.sockets_per_worker.max(1);
        let reuse = !cfg.distinct_ports && workers * per > 1;
        let bound = |s: &Socket| -> io::Result<SocketAddr> {
            s.local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("bound to a non-IP address"))
        };
        let (first, socket_info) = open_socket(&cfg, cfg.bind, reuse)?;
        let local_addr = bound(&first)?;
        if cfg.steer_by_cpu && reuse {
            sys::attach_reuseport_cpu(first.as_raw_fd())?;
        }
        // Socket j of worker i is number i + j * workers, so that the first
        // `workers` sockets of a reuseport group are one per worker (the CPU
        // steering program indexes the group by CPU).
        let mut sockets: Vec<Vec<(Socket, SocketAddr)>> =
            (0..workers).map(|_| Vec::new()).collect();
        sockets[0].push((first, local_addr));
        for n in 1..workers * per {
            let bind = if cfg.distinct_ports {
                cfg.bind
            } else {
                local_addr
            };
            let s = open_socket(&cfg, bind, reuse)?.0;
            let a = bound(&s)?;
            sockets[n % workers].push((s, a));
        }
        let local_addrs: Vec<SocketAddr> = (0..workers * per)
            .map(|n| sockets[n % workers][n / workers].1)
            .collect();
        let factory = Arc::new(factory);
        let mut threads = Vec::with_capacity(workers);
        let mut shared = Vec::with_capacity(workers);
        let mut pinned = Vec::with_capacity(workers);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
        for (i, socket) in sockets.into_iter().enumerate() {
            let w = Arc::new(WorkerShared {
                stop: AtomicBool::new(false),
                stats: SharedStats::new(),
                inbox: Inbox::new(4096)?,
            });
            shared.push(w.clone());
            let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[(cfg.first_cpu + i) % cpus.len()]);
            pinned.push(cpu);
            let factory = factory.clone();
            let cfg = cfg.clone();
            let ready_tx = ready_tx.clone();
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
                    let r = worker_main(i, cpu, socket, &cfg, backend, w, &*factory, &mut ready);
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
        Ok(engine)
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

    /// Counters summed over workers.
    pub fn stats(&self) -> Stats {
        sum(&self.shared)
    }

    /// Counters per worker.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.shared.iter().map(|w| Stats::load(&w.stats)).collect()
    }

    /// A handle that stops the engine from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: self.shared.clone(),
        }
    }

    /// A thread-safe sender through worker `i` (modulo the worker count).
    pub fn sender(&self, i: usize) -> Sender {
        Sender::new(self.shared[i % self.shared.len()].inbox.clone())
    }

    /// Joins every worker thread; the first error any of them returned.
    fn join_threads(&mut self) -> io::Result<()> {
        let mut first_err = None;
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
        }
        for w in &self.shared {
            w.inbox.closed.store(true, Ordering::Release);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn shutdown(&mut self) -> io::Result<()> {
        self.stop_handle().stop();
        self.join_threads()
    }

    /// Waits until every worker has stopped (after [`StopHandle::stop`]).
    pub fn join(mut self) -> io::Result<Stats> {
        self.join_threads()?;
        Ok(self.stats())
    }

    /// Stops the workers, waits for them, and returns the final counters.
    pub fn stop(mut self) -> io::Result<Stats> {
        self.shutdown()?;
        Ok(self.stats())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_main<H: Handler>(
    i: usize,
    cpu: Option<usize>,
    sockets: Vec<(Socket, SocketAddr)>,
    cfg: &Config,
    backend: Backend,
    shared: Arc<WorkerShared>,
    factory: &dyn Fn(usize) -> H,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    if let Some(c) = cpu {
        // Pinning can fail in a restricted cpuset; the worker still runs.
        let _ = sys::pin_to_cpu(c);
    }
    let ring = backend == Backend::Uring;
    let recv_slots = if ring {
        cfg.recv_slots.next_power_of_two().min(32768)
    } else {
        cfg.recv_slots
    };
    let pool = Pool::new(cfg.effective_slot_size(), recv_slots, cfg.send_slots, ring)?;
    let (sockets, addrs): (Vec<Socket>, Vec<SocketAddr>) = sockets.into_iter().unzip();
    let fds = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let mut core = Core::new(pool, addrs, fds, i, cfg.gso, shared);
    core.busy_poll = cfg.busy_poll;
    if let Some(peer) = cfg.connect {
        let raw = sys::RawAddr::from_socket_addr(peer, core.v6);
        core.connected.iter_mut().for_each(|c| *c = Some(raw));
    }
    core.publish();
    let mut h = factory(i);
    let r = match backend {
        Backend::Uring => {
            let opts = sys::uring::UringOpts {
                sq_entries: cfg.sq_entries,
                defer_taskrun: std::env::var("UDPRING_NO_DEFER").is_err(),
            };
            sys::uring::run(&sockets, &mut core, &mut h, &opts, ready)
        }
        Backend::Mmsg => {
            crate::backend::mmsg::run(&sockets, &mut core, &mut h, cfg.batch, false, ready)
        }
        Backend::Simple => crate::backend::mmsg::run(&sockets, &mut core, &mut h, 1, true, ready),
    };
    core.inbox.closed.store(true, Ordering::Release);
    core.publish();
    r
}
