//! Backends: how a worker moves datagrams between its sockets and its
//! handler. Both loops live here side by side; this module also owns the
//! choice between them (the io_uring probe, `UDPRING_BACKEND`) and the
//! dispatch to the chosen one.
//!
//! # The contract
//!
//! Every backend runs one worker's loop on the worker's own thread, over
//! the worker's own sockets and [`Pool`](crate::bufring::Pool), and must:
//!
//! 1. **Receive into pool slots** with the payload at
//!    [`HEADROOM`](crate::bufring::HEADROOM) (so every backend truncates at
//!    the same size), and hand each datagram to [`Worker::dispatch`] as a
//!    lent slot with its [`RecvMeta`](crate::sys::RecvMeta): socket index,
//!    source, length, truncation, and the control messages (`UDP_GRO`
//!    segment size; `IP_PKTINFO` where the socket asked for it; a
//!    `SO_RXQ_OVFL` drop counter if a `socket_setup` hook turned it on).
//! 2. **Never lose a slot**: every slot it takes from the pool goes back,
//!    whatever happens (truncation, errors, an empty pool, shutdown), so
//!    that `Pool::counts().out` is zero whenever the worker is idle.
//! 3. **Send in batches**: after each batch of received datagrams, submit
//!    everything the handler queued (`Core::queue`) together, and report
//!    each send's outcome to [`Worker::complete`] — which counts it, drops
//!    the send's slot reference, and decides what a failure means (GSO
//!    fallback, resend after an ICMP report, events): backends do not.
//! 4. **Report errors**: a receive that fails with an errno goes to
//!    [`Worker::socket_error`]; readiness for the error queue to
//!    [`Worker::drain_errors`]; nothing is dropped without a counter.
//! 5. **Wake and stop**: watch the worker's eventfd (posted by `Sender`s
//!    and by the stop handle) and call [`Worker::woken`], fire timers on
//!    time ([`Worker::fire_timers`]), and when the stop flag is set, stop
//!    receiving, call [`Worker::stop`], finish in-flight sends and return
//!    with nothing of the pool held by the kernel.
//! 6. Count where it happens: the counters are shared as they are bumped
//!    (the worker is their only writer). Publish the rest (`Core::publish`:
//!    the pool's gauges, failed sends by errno, the sockets' drop counters
//!    every 100 ms) once per loop iteration, before the worker may sleep
//!    (a spin that found nothing publishes again before it sleeps): an
//!    idle worker's published figures are its own.
//!
//! # One datagram's path
//!
//! | step | where |
//! |---|---|
//! | the socket receives; the kernel writes the datagram into a slot (uring: a buffer of the registered ring, chosen by the kernel; mmsg: an iovec into a slot reserved for the call) | `sys/uring/mod.rs` `Ring::arm_recv`; `sys/mmsg.rs` `MmsgBufs::recv` |
//! | the backend reads the completion / the call's result and the slot's record into a `RecvMeta`, and lends the slot out of the pool | `backend/uring/mod.rs` `on_recv`; `backend/mmsg.rs` `drain_socket`; `bufring/mod.rs` `Pool::lend` |
//! | the worker counts it and hands the handler a `Datagram` borrowing the slot | `backend/worker` `Worker::dispatch` |
//! | the handler answers through its `Transport` (`reply`/`forward`: the same slot, one more reference; `send_to`: a copy into a send slot) | `worker/transport.rs` `Transport`; `worker/core.rs` `Core::push` |
//! | the send waits in the queue (a GSO train whole, or cut when GSO is off) | `worker/queue/mod.rs` `SendQueue::push` |
//! | after the batch, the backend submits the queue (uring: one SQE per send, submitted with the next wait; mmsg: `sendmmsg` per socket) | `backend/uring/mod.rs` `flush`; `backend/mmsg.rs` `flush` |
//! | the outcome is counted and the send's reference dropped | `backend/worker` `Worker::complete` |
//! | the last reference gone, the slot goes home (uring: back into the buffer ring, published once per batch) | `bufring/mod.rs` `Pool::unref`, `Pool::publish` |
//!
//! The backends:
//! - `uring` ([`uring`]): multishot `RecvMsgMulti` on a provided-buffer ring,
//!   many send SQEs per `io_uring_enter`.
//! - `mmsg` ([`mmsg`]): `recvmmsg`/`sendmmsg` batches over `ppoll`.
//! - `simple` ([`mmsg`] with one message per call): one `recvmsg`/`sendmsg`
//!   per datagram, the baseline every figure is compared with.
//! - `xdp` ([`xdp`]): AF_XDP frames from a socket per worker and receive
//!   queue, the worker's pool as the UMEM; the ordinary socket beside it
//!   for what the XDP program passes and what cannot go as a frame.

pub(crate) mod mmsg;
pub(crate) mod spin;
pub(crate) mod uring;
pub(crate) mod worker;
pub(crate) mod xdp;

use std::io;
use std::sync::OnceLock;

use crate::backend::worker::Worker;
use crate::config::{Backend, Config};
use crate::worker::handler::Handler;

/// Environment variable that forces a backend (`uring`, `mmsg`, `simple`,
/// `xdp`).
pub const BACKEND_ENV: &str = "UDPRING_BACKEND";

/// The backend the workers run, and what it shares between them.
#[derive(Clone)]
pub(crate) struct Run {
    pub backend: Backend,
    /// The xdp backend's program on its interface.
    pub xdp: Option<std::sync::Arc<xdp::XdpAttach>>,
    /// The sockets were handed in (`Engine::start_on`): what is queued at a
    /// stop stays with them, for whoever holds them next (systemd's socket
    /// activation starts the next instance on the same socket).
    pub adopted: bool,
}

/// Runs worker `w` on `run`'s backend until its stop flag is set. Calls
/// `ready` once the worker receives (or with the setup error).
pub(crate) fn run<H: Handler>(
    run: &Run,
    sockets: &[socket2::Socket],
    w: &mut Worker<H>,
    cfg: &Config,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    if cfg.spin_us > 0 && run.backend != Backend::Uring {
        // The backend was picked at start (no io_uring on this kernel).
        let e = io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "spin_us needs the uring backend, and this engine runs {} (io_uring is \
                 not available here); busy_poll spins on any backend",
                run.backend.name()
            ),
        );
        ready(Err(crate::error::copy(&e)));
        return Err(e);
    }
    match (run.backend, &run.xdp) {
        (Backend::Uring, _) => uring::run(sockets, w, cfg, ready),
        (Backend::Mmsg, _) => mmsg::run(sockets, w, cfg.batch, false, ready),
        (Backend::Simple, _) => mmsg::run(sockets, w, 1, true, ready),
        (Backend::Xdp, Some(x)) => xdp::run(sockets, w, cfg, x, ready),
        (Backend::Xdp, None) => {
            let e = io::Error::other("xdp backend without its program");
            ready(Err(io::Error::other(e.to_string())));
            Err(e)
        }
    }
}

/// Probes io_uring once per process; the error says what is missing.
pub fn uring_support() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    probe_once(&PROBE, crate::sys::uring_probe::probe)
}

/// Runs `probe` once per process, on a thread of its own: a probe's ring
/// may leave task work for the thread that made it, which would interrupt
/// that thread's next blocking call with EINTR; a thread that exits takes
/// that with it.
fn probe_once(
    cell: &'static OnceLock<Result<(), String>>,
    probe: fn() -> Result<(), String>,
) -> Result<(), String> {
    cell.get_or_init(|| match std::thread::Builder::new().spawn(probe) {
        Ok(t) => t
            .join()
            .unwrap_or_else(|_| Err("the probe panicked".into())),
        Err(e) => Err(format!(
            "no thread to probe on: {}",
            crate::os::explain_thread_limit(e)
        )),
    })
    .clone()
}

/// Whether the `uring` backend reads TX timestamps with io_uring's own
/// command (`SOCKET_URING_OP_TX_TIMESTAMP`, Linux 6.15; no system call per
/// timestamp) or, without it, from the error queue with `recvmsg` (one
/// each). Probed once per process; the error says why not.
pub fn uring_tx_timestamps() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    probe_once(&PROBE, crate::sys::txstamp::probe)
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
