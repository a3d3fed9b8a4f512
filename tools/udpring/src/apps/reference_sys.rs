//! The kernel-level references udpring is measured against: the loops a
//! C program would run, one system call at a time, with nothing of the
//! engine's (no ring, no pool, no handler). In Rust over raw libc, so the
//! bench needs no C compiler at run time; each call is the one named.
//!
//! - [`send_loop`]: `send(2)` on a connected socket, one datagram per call
//!   (the plain sender's limit).
//! - [`gso_loop`]: `sendmsg(2)` on a connected socket with a `UDP_SEGMENT`
//!   control message, `segs` datagrams of `size` bytes per call (the GSO
//!   sender's limit).
//! - [`mmsg_loop`]: `sendmmsg(2)` of `n` messages per call on a connected
//!   socket, each the same buffer (with `UDP_SEGMENT` if given): the
//!   limit of the system call udpring's `mmsg` backend makes.
//! - [`sink_loop`]: `recvmmsg(2)` of up to 64 messages with `UDP_GRO` on,
//!   counting datagrams (segments of a train each) and buffers.
//!
//! - [`echo_loop`]: `recvmmsg` of up to 64 messages with `UDP_GRO`, then
//!   one `sendmmsg` of them back to their sources, each train with its
//!   segment size as `UDP_SEGMENT` (the C GRO -> GSO echo).
//!
//! All stop when `stop` is set (checked between calls; the sockets have a
//! receive timeout so the sink wakes to see it).

use std::io;
use std::mem;
use std::num::NonZeroU16;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A system call by name; `Err` with `errno` when it returns -1.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: every call site passes pointers to live, correctly sized
        // memory owned by the caller for the duration of the call; see the
        // comment at each call site for what the kernel reads and writes.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// `UDP_SEGMENT` (a send's GSO segment size) and `UDP_GRO` (a received
/// train's), `linux/udp.h`.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Room for the one control message a loop sends or reads.
const SEND_CMSG_LEN: usize = 32;

/// A control area with the alignment the kernel's `cmsghdr` has.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgSpace<const N: usize>([u8; N]);

impl<const N: usize> Default for CmsgSpace<N> {
    fn default() -> Self {
        CmsgSpace([0; N])
    }
}

const HDR_LEN: usize = mem::size_of::<libc::cmsghdr>();

/// `CMSG_ALIGN`.
const fn align(n: usize) -> usize {
    (n + mem::size_of::<usize>() - 1) & !(mem::size_of::<usize>() - 1)
}

/// Writes a `UDP_SEGMENT` control message of `segment` (if any) into
/// `ctl`; returns its length for `msg_controllen` (0: none).
fn write_segment<const N: usize>(ctl: &mut CmsgSpace<N>, segment: Option<NonZeroU16>) -> usize {
    let Some(seg) = segment else { return 0 };
    let need = align(HDR_LEN) + align(2);
    assert!(need <= N, "a control area too small for UDP_SEGMENT");
    ctl.0[..need].fill(0);
    // SAFETY: cmsghdr is plain old data; all-zero is valid.
    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
    hdr.cmsg_len = HDR_LEN + 2;
    hdr.cmsg_level = libc::SOL_UDP;
    hdr.cmsg_type = UDP_SEGMENT;
    // SAFETY: the area holds `need` >= HDR_LEN bytes (asserted);
    // write_unaligned needs no alignment.
    unsafe { std::ptr::write_unaligned(ctl.0.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
    ctl.0[HDR_LEN..HDR_LEN + 2].copy_from_slice(&seg.get().to_ne_bytes());
    need
}

/// The int the kernel wrote as the record `level`/`kind` among those of
/// a received control area, if there is one. A record that does not fit
/// ends the walk.
fn cmsg_int(ctl: &[u8], level: libc::c_int, kind: libc::c_int) -> Option<i32> {
    let mut off = 0;
    while let Some(rest) = ctl.get(off..).filter(|r| r.len() >= HDR_LEN) {
        // SAFETY: `rest` holds at least HDR_LEN bytes; read_unaligned copes
        // with any alignment, and cmsghdr is plain old data.
        let hdr: libc::cmsghdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
        let len = hdr.cmsg_len;
        if len < HDR_LEN || len > rest.len() {
            return None;
        }
        if hdr.cmsg_level == level && hdr.cmsg_type == kind {
            let d = rest.get(HDR_LEN..HDR_LEN + 4)?;
            return Some(i32::from_ne_bytes([d[0], d[1], d[2], d[3]]));
        }
        off += align(len);
    }
    None
}

/// The `UDP_GRO` segment size of a received control area; `None` for a
/// single datagram.
fn gro_segment(ctl: &[u8]) -> Option<NonZeroU16> {
    let v = cmsg_int(ctl, libc::SOL_UDP, UDP_GRO)?;
    u16::try_from(v).ok().and_then(NonZeroU16::new)
}

/// The TTL (`IP_TTL`) or hop limit (`IPV6_HOPLIMIT`) a datagram arrived
/// with, when the socket asked for it.
fn arrival_hops(ctl: &[u8]) -> Option<u8> {
    let v = cmsg_int(ctl, libc::IPPROTO_IP, libc::IP_TTL)
        .or_else(|| cmsg_int(ctl, libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT))?;
    u8::try_from(v).ok()
}

/// What a loop counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Datagrams (each segment of a train counts).
    pub datagrams: u64,
    /// System calls that succeeded (sends) or buffers received (sink).
    pub calls: u64,
    /// Calls that failed (`ENOBUFS`, `EAGAIN`, refused, ...).
    pub errors: u64,
    /// The errno of the last that failed (0: none failed).
    pub last_errno: i32,
    /// The echo: datagrams not answered, by the engine's guard's reasons.
    pub refused: Refused,
}

/// What the reference echo would not answer (each a buffer: a train
/// counts once), by the reasons of the engine's guard of the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// Sent by a udpring server (the server mark).
    pub guard_marked: u64,
    /// From the echo's own port.
    pub guard_loop: u64,
    /// From the port of a service that answers everything.
    pub guard_port: u64,
    /// From port 0.
    pub guard_bad_source: u64,
}

impl Counted {
    /// `n` calls failed with `e`.
    #[cold]
    fn failed(&mut self, e: &io::Error, n: u64) {
        self.errors += n;
        self.last_errno = e.raw_os_error().unwrap_or(0);
    }
}

impl Refused {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.guard_marked + self.guard_loop + self.guard_port + self.guard_bad_source
    }
}

/// `send(fd, buf, len, 0)` until `stop`: the C loop
/// `for (;;) send(fd, buf, len, 0);` on a connected socket.
pub fn send_loop(fd: RawFd, buf: &[u8], stop: &AtomicBool) -> Counted {
    let mut c = Counted::default();
    while !stop.load(Ordering::Relaxed) {
        // send(2): "The only difference between send() and write(2) is
        // the presence of flags"; the kernel reads `len` bytes of `buf`
        // during the call.
        match syscall!(send(fd, buf.as_ptr().cast(), buf.len(), 0)) {
            Ok(_) => {
                c.datagrams += 1;
                c.calls += 1;
            }
            Err(e) => c.failed(&e, 1),
        }
    }
    c
}

/// `sendmsg` with `UDP_SEGMENT` = `size` of `buf` (`buf.len() / size`
/// segments, the last may be shorter) until `stop`.
pub fn gso_loop(fd: RawFd, buf: &[u8], size: u16, stop: &AtomicBool) -> io::Result<Counted> {
    let seg = NonZeroU16::new(size).ok_or(io::ErrorKind::InvalidInput)?;
    let segs = buf.len().div_ceil(usize::from(size)) as u64;
    let mut ctl = CmsgSpace::<SEND_CMSG_LEN>::default();
    let ctl_len = write_segment(&mut ctl, Some(seg));
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.0.as_mut_ptr().cast();
    msg.msg_controllen = ctl_len;
    let mut c = Counted::default();
    while !stop.load(Ordering::Relaxed) {
        // sendmsg(2) on a connected socket (no msg_name): the kernel reads
        // the iovec's bytes and the control area (UDP_SEGMENT, udp(7):
        // "the payload is split into segments of the given size") during
        // the call; all live on this frame or in `buf`.
        match syscall!(sendmsg(fd, &msg, 0)) {
            Ok(_) => {
                c.datagrams += segs;
                c.calls += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                return Err(io::Error::other("the kernel refused UDP_SEGMENT (EIO)"));
            }
            Err(e) => c.failed(&e, 1),
        }
    }
    Ok(c)
}

/// `sendmmsg` of `n` messages per call until `stop`, every message the
/// whole of `buf` (a train of `segment`-byte segments when given), on a
/// connected socket: the C loop `for (;;) sendmmsg(fd, msgs, n, 0);`.
pub fn mmsg_loop(
    fd: RawFd,
    buf: &[u8],
    segment: Option<NonZeroU16>,
    n: usize,
    stop: &AtomicBool,
) -> io::Result<Counted> {
    if n == 0 || n > 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sendmmsg takes 1..1024 messages (UIO_MAXIOV)",
        ));
    }
    let segs = segment.map_or(1, |s| buf.len().div_ceil(usize::from(s.get())) as u64);
    let mut ctl = CmsgSpace::<SEND_CMSG_LEN>::default();
    let ctl_len = write_segment(&mut ctl, segment);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: mmsghdr is plain old data; all-zero is valid.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; n];
    for h in &mut hdrs {
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
        if ctl_len > 0 {
            h.msg_hdr.msg_control = ctl.0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = ctl_len;
        }
    }
    let mut c = Counted::default();
    while !stop.load(Ordering::Relaxed) {
        // sendmmsg(sockfd, msgvec, vlen, flags): "returns the number of
        // messages sent from msgvec"; the kernel reads every header, its
        // iovec, the bytes and the control area during the call, and
        // writes each msg_len: all live in `hdrs`, `iov`, `ctl` and `buf`.
        match syscall!(sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0)) {
            Ok(k) => {
                c.datagrams += k as u64 * segs;
                c.calls += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                return Err(io::Error::other("the kernel refused UDP_SEGMENT (EIO)"));
            }
            Err(e) => c.failed(&e, 1),
        }
    }
    Ok(c)
}

/// Messages per `recvmmsg` of the sink and the echo.
const BATCH: usize = 64;
/// Bytes per message: a whole GRO train.
const BUF: usize = 65536;

/// The buffers, control areas, source names and headers of one
/// `recvmmsg` of up to [`BATCH`] messages. The headers point into the
/// other vectors' heap memory, which moving this does not move.
struct RecvBatch {
    _bufs: Vec<u8>,
    ctls: Vec<CmsgSpace<64>>,
    /// Source addresses, as the kernel writes them (`sockaddr_in6` holds
    /// either family).
    names: Vec<libc::sockaddr_in6>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

impl RecvBatch {
    fn new() -> Self {
        let mut bufs = vec![0u8; BATCH * BUF];
        let iovs = bufs
            .chunks_mut(BUF)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        RecvBatch {
            _bufs: bufs,
            ctls: vec![CmsgSpace::<64>::default(); BATCH],
            // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
            names: vec![unsafe { mem::zeroed() }; BATCH],
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            hdrs: vec![unsafe { mem::zeroed() }; BATCH],
            iovs,
        }
    }

    /// One `recvmmsg` (blocking for the first message, as the socket's
    /// `SO_RCVTIMEO` allows, or with `flags` `MSG_DONTWAIT` not at all);
    /// `names`: also each source address. Returns how many arrived (0 on
    /// a timeout, nothing queued, or an error).
    fn recv(&mut self, fd: RawFd, names: bool, flags: libc::c_int) -> usize {
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            self.iovs[i].iov_len = BUF;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctls[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = 64;
            if names {
                h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in6).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            } else {
                h.msg_hdr.msg_name = std::ptr::null_mut();
                h.msg_hdr.msg_namelen = 0;
            }
        }
        // recvmmsg(2): "receive multiple messages on a socket"; vlen =
        // BATCH headers, each pointing at its own iovec, control area and
        // (with `names`) name, all owned by `self` and alive for the call;
        // flags 0 (or MSG_DONTWAIT: return at once when nothing is queued)
        // and no timeout.
        syscall!(recvmmsg(
            fd,
            self.hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            flags,
            std::ptr::null_mut()
        ))
        .map_or(0, |n| n as usize)
    }

    /// Message `i`'s control area as the kernel filled it.
    fn ctl(&self, i: usize) -> &[u8] {
        &self.ctls[i].0[..self.hdrs[i].msg_hdr.msg_controllen.min(64)]
    }

    /// Message `i` of the last `recv`: its length, its GRO segment size,
    /// and how many datagrams it holds.
    fn message(&self, i: usize) -> (usize, Option<NonZeroU16>, u64) {
        let h = &self.hdrs[i];
        let len = h.msg_len as usize;
        let clen = h.msg_hdr.msg_controllen.min(64);
        let seg = gro_segment(&self.ctls[i].0[..clen]);
        let n = match seg {
            Some(s) if len > 0 => len.div_ceil(usize::from(s.get())) as u64,
            _ => 1,
        };
        (len, seg, n)
    }
}

/// Receives with `recvmmsg` until `stop` (the socket should have `UDP_GRO`
/// on and a receive timeout); counts datagrams by their GRO segment size.
/// Also returns when the first and the last batch arrived. `spin`: never
/// sleep (`MSG_DONTWAIT`, called again at once when nothing is queued),
/// so that no sender pays for waking it.
pub fn sink_loop(
    fd: RawFd,
    stop: &AtomicBool,
    spin: bool,
) -> (Counted, Option<Instant>, Option<Instant>) {
    let mut b = RecvBatch::new();
    let mut c = Counted::default();
    let (mut first, mut last) = (None, None);
    let flags = if spin { libc::MSG_DONTWAIT } else { 0 };
    while !stop.load(Ordering::Relaxed) {
        let n = b.recv(fd, false, flags);
        if n == 0 {
            continue;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = Some(now);
        for i in 0..n {
            c.calls += 1;
            c.datagrams += b.message(i).2;
        }
    }
    (c, first, last)
}

/// The C GRO -> GSO echo: `recvmmsg` a batch (GRO trains whole), then
/// `sendmmsg` each back to its source, a train as a train, until `stop`.
/// Counts datagrams echoed (segments) and buffers.
///
/// A udpring server all the same: the socket should carry the server mark
/// ([`udpring::os::set_server_mark`]), and what the engine's guard would
/// refuse is not answered (counted in [`Counted::refused`]): datagrams
/// with the mark (another udpring server's answers), from `own_port`,
/// from a reflector port ([`udpring::REFLECTOR_PORTS`]) or from port 0.
/// Two udpring servers of any kind then never keep a datagram going
/// between them. One control message per buffer, as the engine reads.
pub fn echo_loop(fd: RawFd, own_port: u16, stop: &AtomicBool) -> Counted {
    let mut b = RecvBatch::new();
    let mut send_ctls = vec![CmsgSpace::<SEND_CMSG_LEN>::default(); BATCH];
    let mut segs = [0u64; BATCH];
    let mut c = Counted::default();
    while !stop.load(Ordering::Relaxed) {
        let n = b.recv(fd, true, 0);
        if n == 0 {
            continue;
        }
        // The answered ones move to the front: 0..m.
        let mut m = 0;
        for i in 0..n {
            let (len, seg, k) = b.message(i);
            let port = u16::from_be(b.names[i].sin6_port);
            let refused = &mut c.refused;
            if arrival_hops(b.ctl(i)).is_some_and(udpring::is_marked) {
                refused.guard_marked += 1;
                continue;
            }
            if port == 0 {
                refused.guard_bad_source += 1;
                continue;
            }
            if port == own_port {
                refused.guard_loop += 1;
                continue;
            }
            if udpring::REFLECTOR_PORTS.contains(&port) {
                refused.guard_port += 1;
                continue;
            }
            // The same header goes back: the source as the destination,
            // the bytes received, the train's segment size. Its pointers
            // name message i's own iovec and name wherever it sits (the
            // next receive sets every header afresh).
            b.iovs[i].iov_len = len;
            b.hdrs.swap(m, i);
            let ctl = &mut send_ctls[m];
            let l = write_segment(ctl, seg);
            let h = &mut b.hdrs[m].msg_hdr;
            h.msg_control = if l > 0 {
                ctl.0.as_mut_ptr().cast()
            } else {
                std::ptr::null_mut()
            };
            h.msg_controllen = l;
            h.msg_flags = 0;
            segs[m] = k;
            m += 1;
        }
        if m == 0 {
            continue;
        }
        // sendmmsg(2): "send multiple messages on a socket"; the first m
        // headers, each naming its source, bytes and control area, all
        // alive for the call.
        match syscall!(sendmmsg(fd, b.hdrs.as_mut_ptr(), m as libc::c_uint, 0)) {
            Ok(k) => {
                let k = k as usize;
                c.calls += k as u64;
                c.datagrams += segs[..k].iter().sum::<u64>();
                c.errors += (m - k) as u64;
            }
            Err(e) => c.failed(&e, m as u64),
        }
    }
    c
}
