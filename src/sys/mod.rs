//! Everything that talks to the kernel directly.
//!
//! The rest of the crate is safe code over the few types defined here and in
//! [`crate::bufring`]. Each libc call goes through [`syscall!`], which turns
//! the C convention (`-1` and `errno`) into `io::Result`.
//!
//! - [`RawAddr`]: a socket address in kernel form, stored inline (no heap), so
//!   a send can point the kernel at it for as long as the send is in flight.
//! - socket options that socket2 and nix do not cover (`SO_RXQ_OVFL`,
//!   `UDP_GRO`, `UDP_SEGMENT`, `*_RECVERR`, the `FORCE` buffer sizes, the
//!   reuseport CPU steering program).
//! - control-message parsing and building ([`RecvCmsg`], [`write_segment_cmsg`]).
//! - the socket error queue ([`drain_errqueue`]), eventfd, CPU pinning.
//! - [`mmsg`]: header arrays for `recvmmsg`/`sendmmsg`; [`uring`]: the
//!   io_uring ring, its buffer ring and the in-flight send headers.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Calls a libc function and turns `-1` into the thread's `errno`.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: every call site passes pointers to live, correctly sized
        // memory owned by the caller for the duration of the call; see the
        // comment at each call site for what the kernel keeps afterwards.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod mcast;
pub(crate) mod mmsg;
pub(crate) mod uring;

/// Size of the name area the engine reserves for a source address: a
/// `sockaddr_in6` (28 bytes) rounded up so what follows stays 8-byte aligned.
pub const NAME_LEN: usize = 32;
/// Size of the control area for received messages: room for `UDP_GRO` and
/// `SO_RXQ_OVFL` (`CMSG_SPACE(4)` each is 24 on 64-bit Linux) plus one more.
pub const RECV_CMSG_LEN: usize = 72;
/// Size of the control area for sends: one `UDP_SEGMENT` (a u16).
pub const SEND_CMSG_LEN: usize = 24;

// Constants that libc does not export on every target.
const SO_RXQ_OVFL: libc::c_int = 40;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// A socket address in the kernel's layout, inline.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RawAddr {
    storage: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl RawAddr {
    /// An all-zero address (family `AF_UNSPEC`).
    pub fn zeroed() -> Self {
        // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
        let storage = unsafe { mem::zeroed() };
        RawAddr { storage, len: 0 }
    }

    /// Builds the kernel form of `addr` for a socket of family `v6_socket`.
    /// An IPv4 address sent from an IPv6 socket becomes v4-mapped.
    pub fn from_socket_addr(addr: SocketAddr, v6_socket: bool) -> Self {
        let mut raw = RawAddr::zeroed();
        let addr = match (addr, v6_socket) {
            (SocketAddr::V4(a), true) => {
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
            }
            (a, _) => a,
        };
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in (16 bytes) fits inside sockaddr_in6 (28
                // bytes); both are plain old data; write_unaligned needs no
                // alignment.
                unsafe {
                    std::ptr::write_unaligned(
                        (&mut raw.storage as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>(),
                        sin,
                    )
                };
                raw.len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(a) => {
                raw.storage = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                raw.len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        raw
    }

    /// Copies an address the kernel wrote into a name buffer.
    pub fn from_bytes(name: &[u8]) -> Self {
        let mut raw = RawAddr::zeroed();
        let n = name.len().min(mem::size_of::<libc::sockaddr_in6>());
        // SAFETY: n is at most the size of storage; source and destination do
        // not overlap (storage is a fresh local).
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&mut raw.storage as *mut libc::sockaddr_in6).cast::<u8>(),
                n,
            )
        };
        raw.len = n as libc::socklen_t;
        raw
    }

    /// The address as std's type; `None` for an unknown family or short name.
    pub fn to_socket_addr(self) -> Option<SocketAddr> {
        match self.storage.sin6_family as libc::c_int {
            libc::AF_INET if self.len as usize >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the first 16 bytes are a sockaddr_in;
                // read_unaligned copes with any alignment.
                let sin: libc::sockaddr_in = unsafe {
                    std::ptr::read_unaligned(
                        (&self.storage as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>(),
                    )
                };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if self.len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
                let s = &self.storage;
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(s.sin6_addr.s6_addr),
                    u16::from_be(s.sin6_port),
                    u32::from_be(s.sin6_flowinfo),
                    s.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Pointer for `msg_name`.
    pub fn as_ptr(&self) -> *const libc::c_void {
        (&self.storage as *const libc::sockaddr_in6).cast()
    }

    /// Pointer for a send's `msg_name`: null for the empty address, which
    /// means "to the connected peer" (a non-null name of length 0 is EINVAL).
    pub fn name_ptr(&self) -> *mut libc::c_void {
        if self.len == 0 {
            std::ptr::null_mut()
        } else {
            self.as_ptr() as *mut libc::c_void
        }
    }

    /// Whether two addresses are the same (family, port, address, scope).
    pub fn same(&self, o: &RawAddr) -> bool {
        let (a, b) = (&self.storage, &o.storage);
        self.len == o.len
            && a.sin6_family == b.sin6_family
            && a.sin6_port == b.sin6_port
            && a.sin6_flowinfo == b.sin6_flowinfo
            && a.sin6_addr.s6_addr == b.sin6_addr.s6_addr
            && a.sin6_scope_id == b.sin6_scope_id
    }

    /// Length for `msg_namelen`.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }
}

/// A v4-mapped IPv6 address shown as the IPv4 address it carries.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        a => a,
    }
}

/// What the control messages of one received datagram said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvCmsg {
    /// `UDP_GRO`: the datagram is a train of segments of this size.
    pub gro_segment: Option<u16>,
    /// `SO_RXQ_OVFL`: the socket's cumulative drop counter.
    pub rxq_ovfl: Option<u32>,
}

/// Parses a control area as the kernel filled it (`cmsghdr` records).
/// Unknown records are skipped; a short or malformed area ends the walk.
pub fn parse_cmsgs(control: &[u8]) -> RecvCmsg {
    let mut out = RecvCmsg::default();
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    let mut off = 0usize;
    while off + hdr_len <= control.len() {
        // SAFETY: off + hdr_len <= len was just checked; read_unaligned
        // copes with any alignment of the caller's buffer.
        let hdr: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control.as_ptr().add(off).cast()) };
        let len = hdr.cmsg_len;
        if len < hdr_len || off + len > control.len() {
            break;
        }
        let data = &control[off + hdr_len..off + len];
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::SOL_UDP, UDP_GRO) if data.len() >= 4 => {
                let v = i32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                out.gro_segment = u16::try_from(v).ok();
            }
            (libc::SOL_UDP, UDP_GRO) if data.len() >= 2 => {
                out.gro_segment = Some(u16::from_ne_bytes([data[0], data[1]]));
            }
            (libc::SOL_SOCKET, SO_RXQ_OVFL) if data.len() >= 4 => {
                out.rxq_ovfl = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
            }
            _ => {}
        }
        // Records are padded to the size of a long.
        off += (len + mem::size_of::<usize>() - 1) & !(mem::size_of::<usize>() - 1);
    }
    out
}

/// Writes a `UDP_SEGMENT` control message into `buf`; returns its length
/// (for `msg_controllen`).
pub fn write_segment_cmsg(buf: &mut [u8; SEND_CMSG_LEN], segment: u16) -> usize {
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    // SAFETY: cmsghdr is plain old data; all-zero is valid.
    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
    hdr.cmsg_len = hdr_len + 2;
    hdr.cmsg_level = libc::SOL_UDP;
    hdr.cmsg_type = UDP_SEGMENT;
    // SAFETY: buf is 24 bytes, hdr is 16: the write stays inside buf.
    unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
    buf[hdr_len..hdr_len + 2].copy_from_slice(&segment.to_ne_bytes());
    buf[hdr_len + 2..].fill(0);
    SEND_CMSG_LEN
}

/// Sets an integer socket option.
pub fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&value as *const libc::c_int).cast(),
        mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

/// Reads an integer socket option.
pub fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(getsockopt(
        fd,
        level,
        name,
        (&mut value as *mut libc::c_int).cast(),
        &mut len,
    ))?;
    Ok(value)
}

/// Turns on the kernel's per-socket drop counter, delivered with each datagram.
pub fn set_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, SO_RXQ_OVFL, 1)
}

/// Turns on UDP generic receive offload: trains arrive as one buffer.
pub fn set_udp_gro(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, on as libc::c_int)
}

/// Connects a datagram socket to `peer` (only its datagrams arrive; sends
/// without an address go to it).
pub fn connect(fd: RawFd, peer: &RawAddr) -> io::Result<()> {
    // The kernel copies the address during the call.
    syscall!(connect(fd, peer.as_ptr().cast(), peer.len())).map(drop)
}

/// Dissolves a datagram socket's association (connect to `AF_UNSPEC`).
pub fn disconnect(fd: RawFd) -> io::Result<()> {
    // SAFETY: sockaddr is plain old data; all-zero with family AF_UNSPEC is
    // the documented way to disconnect.
    let mut sa: libc::sockaddr = unsafe { mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    syscall!(connect(
        fd,
        &sa,
        mem::size_of::<libc::sockaddr>() as libc::socklen_t
    ))
    .map(drop)
}

/// Binds a socket to `addr`.
pub fn bind(fd: RawFd, addr: &RawAddr) -> io::Result<()> {
    // The kernel copies the address during the call.
    syscall!(bind(fd, addr.as_ptr().cast(), addr.len())).map(drop)
}

/// The port a socket is bound to now (0 when unbound).
pub fn local_port(fd: RawFd) -> io::Result<u16> {
    let mut name = RawAddr::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    syscall!(getsockname(
        fd,
        (&mut name.storage as *mut libc::sockaddr_in6).cast(),
        &mut len
    ))?;
    name.len = len;
    Ok(name.to_socket_addr().map_or(0, |a| a.port()))
}

/// The MTU of the local interface that holds `local` (the source address a
/// connected socket picked), from `getifaddrs` and sysfs.
pub fn interface_mtu(local: IpAddr) -> Option<u32> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        let Some(a) = ifa.address else { continue };
        let ip = a
            .as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())));
        if ip == Some(local) {
            let path = format!("/sys/class/net/{}/mtu", ifa.interface_name);
            return std::fs::read_to_string(path).ok()?.trim().parse().ok();
        }
    }
    None
}

/// The path MTU the kernel knows for a connected socket's peer
/// (`IP_MTU` / `IPV6_MTU`); `ENOTCONN` on an unconnected socket.
pub fn path_mtu(fd: RawFd, v6: bool) -> io::Result<u32> {
    let v = if v6 {
        getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU)?
    } else {
        getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU)?
    };
    Ok(v as u32)
}

/// Sets the don't-fragment policy: `IP_PMTUDISC_DO` (never fragment; a
/// datagram larger than the known path MTU fails with `EMSGSIZE`) or the
/// kernel's default (`IP_PMTUDISC_WANT`). IPv6 sockets get
/// `IPV6_MTU_DISCOVER` and `IPV6_DONTFRAG` too.
pub fn set_pmtu_discover(fd: RawFd, v6: bool, on: bool) -> io::Result<()> {
    let (v4, v6v) = if on {
        (libc::IP_PMTUDISC_DO, libc::IPV6_PMTUDISC_DO)
    } else {
        (libc::IP_PMTUDISC_WANT, libc::IPV6_PMTUDISC_WANT)
    };
    set_pmtu_values(fd, v6, v4, v6v, on)
}

/// For path MTU probes: don't fragment, and with `probe` also ignore the
/// path MTU the kernel has learned (`IP_PMTUDISC_PROBE`), so a probe larger
/// than it still leaves (packetization-layer discovery).
pub fn set_pmtu_mode(fd: RawFd, v6: bool, probe: bool) -> io::Result<()> {
    if probe {
        set_pmtu_values(
            fd,
            v6,
            libc::IP_PMTUDISC_PROBE,
            libc::IPV6_PMTUDISC_PROBE,
            true,
        )
    } else {
        set_pmtu_discover(fd, v6, true)
    }
}

fn set_pmtu_values(
    fd: RawFd,
    v6: bool,
    v4: libc::c_int,
    v6v: libc::c_int,
    dontfrag: bool,
) -> io::Result<()> {
    let on = dontfrag;
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, v6v)?;
        setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_DONTFRAG,
            on as libc::c_int,
        )?;
        // v4-mapped traffic on an IPv6 socket follows the IPv4 option.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, v4);
        Ok(())
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, v4)
    }
}

/// Turns on extended error reporting through the error queue.
pub fn set_recverr(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
    }
    // An IPv6 socket may carry IPv4 traffic (v4-mapped); ask for both.
    match setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1) {
        Err(e) if v6 => {
            let _ = e;
            Ok(())
        }
        r => r,
    }
}

/// Sets a socket buffer size, trying the `FORCE` variant (needs
/// `CAP_NET_ADMIN`, ignores `rmem_max`) first; returns what the kernel
/// granted (the kernel doubles the request for bookkeeping and reports that).
pub fn set_buffer_size(fd: RawFd, recv: bool, bytes: usize) -> io::Result<usize> {
    let bytes = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    let (force, plain) = if recv {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    } else {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    };
    if setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
        setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes)?;
    }
    Ok(getsockopt_int(fd, libc::SOL_SOCKET, plain)? as usize)
}

/// Attaches a classic BPF program to a reuseport group that picks the socket
/// whose index equals the CPU the packet is processed on (sockets join the
/// group in worker order). Indexes past the group fall back to the hash.
pub fn attach_reuseport_cpu(fd: RawFd) -> io::Result<()> {
    // SKF_AD_OFF + SKF_AD_CPU: "load the current CPU" in classic BPF.
    const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
    const SKF_AD_CPU: u32 = 36;
    let code = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: SKF_AD_OFF.wrapping_add(SKF_AD_CPU),
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr() as *mut libc::sock_filter,
    };
    // The kernel copies the program during the call.
    syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        (&prog as *const libc::sock_fprog).cast(),
        mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
    ))
    .map(drop)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// A non-blocking eventfd used to wake a worker from another thread.
pub struct EventFd(RawFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        Ok(EventFd(fd))
    }
    /// The descriptor, for poll or io_uring.
    pub fn fd(&self) -> RawFd {
        self.0
    }
    /// Adds one to the counter, waking any poller.
    pub fn notify(&self) {
        let one: u64 = 1;
        // An EAGAIN here means the counter is saturated: a wake is pending anyway.
        let _ = syscall!(write(self.0, (&one as *const u64).cast(), 8));
    }
    /// Resets the counter; returns whether it was non-zero.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        syscall!(read(self.0, (&mut v as *mut u64).cast(), 8)).is_ok()
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// One entry of the socket error queue, as the kernel described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedError {
    /// The error (`ee_errno`), e.g. `ECONNREFUSED`, `EMSGSIZE`.
    pub errno: i32,
    /// Where it came from (`SO_EE_ORIGIN_*`).
    pub origin: u8,
    /// ICMP type and code when the origin is ICMP/ICMP6.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// `ee_info`: for "fragmentation needed" / "packet too big", the MTU.
    pub info: u32,
    /// The destination of the datagram that caused the error.
    pub peer: Option<SocketAddr>,
}

/// Reads one entry of the socket's error queue (`MSG_ERRQUEUE`) without
/// blocking: `None` when the queue is empty, `Some(None)` for an entry that
/// carried no extended error the engine understands.
pub fn read_errqueue(fd: RawFd) -> Option<Option<QueuedError>> {
    let mut name = RawAddr::zeroed();
    let mut control = [0u64; 64];
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut name.storage as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // All pointers refer to locals that outlive this synchronous call.
    syscall!(recvmsg(
        fd,
        &mut msg,
        libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT
    ))
    .ok()?;
    name.len = msg.msg_namelen;
    let ctl_len = (msg.msg_controllen).min(mem::size_of_val(&control));
    // SAFETY: control is a u64 array; viewing its first ctl_len bytes as u8
    // is valid.
    let ctl = unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), ctl_len) };
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    let mut off = 0;
    while off + hdr_len <= ctl.len() {
        // SAFETY: bounds checked above; read_unaligned copes with alignment.
        let hdr: libc::cmsghdr = unsafe { std::ptr::read_unaligned(ctl.as_ptr().add(off).cast()) };
        if hdr.cmsg_len < hdr_len || off + hdr.cmsg_len > ctl.len() {
            break;
        }
        let is_err = matches!(
            (hdr.cmsg_level, hdr.cmsg_type),
            (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
        );
        if is_err && hdr.cmsg_len >= hdr_len + mem::size_of::<libc::sock_extended_err>() {
            // SAFETY: the record is long enough for a sock_extended_err.
            let ee: libc::sock_extended_err =
                unsafe { std::ptr::read_unaligned(ctl.as_ptr().add(off + hdr_len).cast()) };
            return Some(Some(QueuedError {
                errno: ee.ee_errno as i32,
                origin: ee.ee_origin,
                icmp_type: ee.ee_type,
                icmp_code: ee.ee_code,
                info: ee.ee_info,
                peer: name.to_socket_addr().map(canonical),
            }));
        }
        off += (hdr.cmsg_len + 7) & !7;
    }
    Some(None)
}

/// Takes the pending socket error (`SO_ERROR`), clearing it.
pub fn take_socket_error(fd: RawFd) -> Option<i32> {
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(0) | Err(_) => None,
        Ok(e) => Some(e),
    }
}

/// Waits for readiness (`ppoll`, nanosecond timeout; `None` waits for ever).
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    match syscall!(ppoll(
        fds.as_mut_ptr(),
        fds.len() as libc::nfds_t,
        tsp,
        std::ptr::null()
    )) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

static STOP_SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing the process, so a
/// command can stop its engine cleanly and print totals.
pub fn install_stop_signals() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(sig, &act) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_signals`].
pub fn stop_signalled() -> bool {
    STOP_SIGNALLED.load(std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_addr_round_trips_v4_v6_and_mapped() {
        let v4: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            RawAddr::from_socket_addr(v4, false).to_socket_addr(),
            Some(v4)
        );
        let mapped = RawAddr::from_socket_addr(v4, true)
            .to_socket_addr()
            .unwrap();
        assert!(mapped.is_ipv6());
        assert_eq!(canonical(mapped), v4);
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(
            RawAddr::from_socket_addr(v6, true).to_socket_addr(),
            Some(v6)
        );
        assert_eq!(RawAddr::zeroed().to_socket_addr(), None);
        assert_eq!(RawAddr::from_bytes(&[2, 0]).to_socket_addr(), None);
    }

    #[test]
    fn cmsg_parser_reads_gro_and_ovfl_and_survives_garbage() {
        let mut buf = [0u8; RECV_CMSG_LEN];
        let hdr_len = mem::size_of::<libc::cmsghdr>();
        let put = |buf: &mut [u8], off: usize, level: i32, ty: i32, v: u32| {
            // SAFETY: zeroed cmsghdr is valid.
            let mut h: libc::cmsghdr = unsafe { mem::zeroed() };
            h.cmsg_len = hdr_len + 4;
            h.cmsg_level = level;
            h.cmsg_type = ty;
            // SAFETY: the test writes within buf's bounds.
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().add(off).cast(), h) };
            buf[off + hdr_len..off + hdr_len + 4].copy_from_slice(&v.to_ne_bytes());
        };
        put(&mut buf, 0, libc::SOL_UDP, UDP_GRO, 1400);
        put(&mut buf, 24, libc::SOL_SOCKET, SO_RXQ_OVFL, 7);
        let c = parse_cmsgs(&buf[..48]);
        assert_eq!(c.gro_segment, Some(1400));
        assert_eq!(c.rxq_ovfl, Some(7));
        // A length that runs past the area ends the walk without a panic.
        let mut bad = buf;
        bad[0] = 200;
        assert_eq!(parse_cmsgs(&bad[..48]).gro_segment, None);
        assert_eq!(parse_cmsgs(&buf[..5]), RecvCmsg::default());
    }
}
