//! What the engine does for each worker: opens (or adopts) its sockets,
//! then, on the worker's own thread, pins it, builds its pool, state and
//! handler, and runs its backend's loop.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::Socket;

use crate::backend;
use crate::backend::worker::Worker;
use crate::bufring::Pool;
use crate::config::{Backend, Config};
use crate::guard::GuardState;
use crate::socket::{self, SocketInfo};
use crate::sys;
use crate::worker::handler::Handler;
use crate::worker::{Core, Sockets, WorkerShared};

/// The sockets of [`Engine::start_on`]: each checked and configured, one
/// per worker.
#[allow(clippy::type_complexity)]
pub(super) fn adopt_sockets(
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
pub(super) fn open_sockets(
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
        // Groups on a multicast port, and with `reuse_addr`, share it on
        // purpose; any other group is refused an address in use.
        let mut group_addr = if reuse && !cfg.reuse_addr && cfg.multicast.joins.is_empty() {
            socket::free_for_group(cfg, addr)?
        } else {
            addr
        };
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
            let role = match (g, k) {
                (0, 0) => socket::Role::First,
                // Each on a port of its own: each joins (no copies).
                (0, _) if cfg.distinct_ports => socket::Role::First,
                (0, _) => socket::Role::Twin,
                _ => socket::Role::Also,
            };
            let (s, i) = socket::open(cfg, bind, reuse, role)?;
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
pub(super) fn run_worker<H: Handler>(
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
    let mut started = false;
    let r = worker_body(
        i,
        cpu,
        sockets,
        cfg,
        run,
        shared.clone(),
        guard,
        make_handler,
        &mut |r: io::Result<()>| {
            started |= r.is_ok();
            ready(r)
        },
    );
    // Whatever happened, Senders learn the worker is gone.
    shared.inbox.close();
    match (r, shared.failed()) {
        (Ok(()), Some(why)) => Err(io::Error::other(why)),
        // A loop that ended on an error once running (an xdp interface
        // gone) is a failure the engine's owner hears of as of a panic's
        // (`Engine::failures`, `Config::on_failure`); one before is the
        // start's error.
        (Err(e), None) if started => {
            shared.fail(e.to_string());
            Err(e)
        }
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
    // Zero-copy asked for sends as small as a coalesced datagram: those
    // go from their own buffers, as asked, not copied into trains.
    let zc_small = cfg
        .send_zero_copy_min
        .is_some_and(|m| m <= crate::worker::queue::COALESCE_MAX as usize);
    core.queue.set_coalesce(cfg.coalesce && !zc_small);
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
    // What the kernel queued that the handler never saw, counted (on
    // sockets handed in, left for their next holder); then the last word
    // on drops, while the sockets are still open; direct sends end before
    // they close.
    if !run.adopted {
        w.core.discard_unread();
    }
    w.core.read_drops();
    w.core.publish();
    w.core.shared.inbox.close();
    r
}
