//! The kernel-level references (`udpring reference`): what a C program
//! making the same system calls gets on this host, for the `C limit` rows
//! beside udpring's own (see `reference_sys` for the loops).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::reference_sys::{
    Counted, Refused, echo_loop, gso_loop, mmsg_loop, send_loop, sink_loop,
};

/// What a reference loop did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefReport {
    /// Datagrams sent or received (each segment of a train counts).
    pub datagrams: u64,
    /// System calls that succeeded (sends) or buffers received (sink).
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// The errno of the last call that failed, if any did.
    pub last_error: Option<i32>,
    /// Seconds it ran (the sink: from its first datagram to its last).
    pub duration_s: f64,
    /// Datagrams per second over `duration_s`.
    pub pps: f64,
    /// The echo: what it would not answer, and why.
    pub refused: Refused,
    /// The sink: buffers its socket's receive queue dropped, full
    /// (`SO_MEMINFO`; a GRO train counts once).
    pub kernel_drops: u64,
}

impl RefReport {
    fn new(c: Counted, duration_s: f64) -> Self {
        RefReport {
            datagrams: c.datagrams,
            calls: c.calls,
            errors: c.errors,
            last_error: (c.errors > 0).then_some(c.last_errno),
            duration_s,
            pps: rate(c.datagrams, duration_s),
            refused: c.refused,
            kernel_drops: 0,
        }
    }
}

/// `n` per second over `secs` (0 when no time passed).
fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Seconds from the first arrival to the last (0 with fewer than two).
fn span(first: Option<Instant>, last: Option<Instant>) -> f64 {
    match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
}

/// The sender loop of `gso` (1: `send`; more: `sendmsg` + `UDP_SEGMENT`
/// of `size`-byte segments) on `fd` until `stop`; with `mmsg` > 1, the
/// same messages `mmsg` at a time by `sendmmsg`.
fn send_any(
    fd: std::os::fd::RawFd,
    buf: &[u8],
    size: usize,
    gso: usize,
    mmsg: usize,
    stop: &AtomicBool,
) -> io::Result<Counted> {
    let seg = u16::try_from(size).map_err(|_| io::ErrorKind::InvalidInput)?;
    let segment = std::num::NonZeroU16::new(seg).filter(|_| gso > 1);
    match (segment, mmsg) {
        (_, 2..) => mmsg_loop(fd, buf, segment, mmsg, stop),
        (Some(s), _) => gso_loop(fd, buf, s.get(), stop),
        (None, _) => Ok(send_loop(fd, buf, stop)),
    }
}

fn pin(cpu: Option<usize>) -> io::Result<()> {
    match cpu {
        Some(c) => {
            let cpus = udpring::os::allowed_cpus();
            let c = cpus.get(c).copied().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no CPU index {c} here"),
                )
            })?;
            udpring::os::pin_to_cpu(c)
        }
        None => Ok(()),
    }
}

/// Sends to `to` for `secs` from a connected socket: one `send` per
/// datagram of `size` bytes, or with `gso` segments per `sendmsg`
/// (`UDP_SEGMENT`); with `mmsg` > 1, `mmsg` of those messages per
/// `sendmmsg`. On CPU index `cpu` if given.
pub fn send(
    to: SocketAddr,
    size: usize,
    gso: usize,
    mmsg: usize,
    secs: Duration,
    cpu: Option<usize>,
) -> io::Result<RefReport> {
    pin(cpu)?;
    let s = UdpSocket::bind(udpring::os::unspecified_like(to, 0))?;
    s.connect(to)?;
    let _ = udpring::os::set_buffer_size(&s, false, 4 << 20);
    let buf = vec![0x5au8; size * gso.max(1)];
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let timer = std::thread::Builder::new()
        .spawn(move || {
            std::thread::sleep(secs);
            st.store(true, Ordering::Relaxed);
        })
        .map_err(udpring::os::explain_thread_limit)?;
    let start = Instant::now();
    let c = send_any(s.as_raw_fd(), &buf, size, gso, mmsg, &stop)?;
    let d = start.elapsed().as_secs_f64();
    let _ = timer.join();
    Ok(RefReport::new(c, d))
}

/// A socket bound to `bind` with `UDP_GRO` on, a receive buffer of
/// `rcvbuf` bytes and a short receive timeout (so its loop sees a stop).
fn gro_socket(bind: SocketAddr, rcvbuf: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(bind)?;
    udpring::os::set_udp_gro(&s, true)?;
    let _ = udpring::os::set_buffer_size(&s, true, rcvbuf);
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(s)
}

/// A sink on `bind` (`UDP_GRO` on, `recvmmsg`): `ready` gets its address,
/// then it counts until `stop`. The rate is over the time from the first
/// datagram to the last.
pub fn sink(
    bind: SocketAddr,
    cpu: Option<usize>,
    spin: bool,
    stop: &AtomicBool,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<RefReport> {
    pin(cpu)?;
    let s = gro_socket(bind, 32 << 20)?;
    ready(s.local_addr()?);
    let (c, first, last) = sink_loop(s.as_raw_fd(), stop, spin);
    Ok(RefReport {
        kernel_drops: udpring::os::socket_drops(&s).map_or(0, u64::from),
        ..RefReport::new(c, span(first, last))
    })
}

/// What the C flood got from an echo server.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodEcho {
    /// Datagrams sent (segments counted).
    pub sent: u64,
    /// Datagrams echoed back (segments counted).
    pub echoed: u64,
    /// Echoed datagrams per second, from the first echo to the last.
    pub pps_echoed: f64,
    /// Seconds it sent.
    pub duration_s: f64,
}

/// The external C flood against an echo server at `to`: an open-loop
/// sender (`send`, or `sendmsg` + `UDP_SEGMENT` of `gso` segments) and a
/// `recvmmsg` + GRO receiver of the echoes on the same connected socket,
/// two threads, both on CPU index `cpu`, for `secs`.
pub fn flood_echo(
    to: SocketAddr,
    size: usize,
    gso: usize,
    secs: Duration,
    cpu: Option<usize>,
) -> io::Result<FloodEcho> {
    let s = UdpSocket::bind(udpring::os::unspecified_like(to, 0))?;
    s.connect(to)?;
    let fd = s.as_raw_fd();
    udpring::os::set_udp_gro(&s, true)?;
    let _ = udpring::os::set_buffer_size(&s, true, 32 << 20);
    let _ = udpring::os::set_buffer_size(&s, false, 4 << 20);
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    let buf = vec![0x5au8; size * gso.max(1)];
    let (stop_send, stop_sink) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|sc| {
        let sink = crate::common::spawn_scoped(sc, "udpring-ref-sink", || {
            pin(cpu)?;
            Ok::<_, io::Error>(sink_loop(fd, &stop_sink, false))
        })?;
        let sender = crate::common::spawn_scoped(sc, "udpring-ref-send", || {
            pin(cpu)?;
            let start = Instant::now();
            let c = send_any(fd, &buf, size, gso, 1, &stop_send)?;
            Ok::<_, io::Error>((c, start.elapsed().as_secs_f64()))
        })
        .inspect_err(|_| stop_sink.store(true, Ordering::Relaxed))?;
        std::thread::sleep(secs);
        stop_send.store(true, Ordering::Relaxed);
        let sent = sender
            .join()
            .map_err(|_| io::Error::other("the sender panicked"))?;
        // The last echoes of what is in flight.
        std::thread::sleep(Duration::from_millis(100));
        stop_sink.store(true, Ordering::Relaxed);
        let (got, first, last) = sink
            .join()
            .map_err(|_| io::Error::other("the sink panicked"))??;
        let (c, d) = sent?;
        Ok(FloodEcho {
            sent: c.datagrams,
            echoed: got.datagrams,
            pps_echoed: rate(got.datagrams, span(first, last)),
            duration_s: d,
        })
    })
}

/// The C GRO -> GSO echo on `bind` (`recvmmsg` + `UDP_GRO`, `sendmmsg`
/// back with `UDP_SEGMENT`): `ready` gets its address, then it echoes
/// until `stop`. Returns datagrams echoed (segments) and buffers.
pub fn echo(
    bind: SocketAddr,
    cpu: Option<usize>,
    stop: &AtomicBool,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<RefReport> {
    pin(cpu)?;
    let s = gro_socket(bind, 4 << 20)?;
    let _ = udpring::os::set_buffer_size(&s, false, 4 << 20);
    udpring::os::set_server_mark(&s, bind.is_ipv6())?;
    let local = s.local_addr()?;
    ready(local);
    let start = Instant::now();
    let c = echo_loop(s.as_raw_fd(), local.port(), stop);
    Ok(RefReport::new(c, start.elapsed().as_secs_f64()))
}
