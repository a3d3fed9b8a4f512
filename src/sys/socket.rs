//! Options and calls on one socket: those socket2 and nix do not cover
//! (`SO_MEMINFO`, `UDP_GRO`, `*_RECVERR`, path MTU discovery, the `FORCE`
//! buffer sizes, the reuseport CPU steering program), and the few calls the
//! engine makes on a live descriptor (connect, disconnect, bind).

use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::RawFd;

use super::addr::RawAddr;
use super::addr::SrcIp;
use super::cmsg::{CmsgSpace, SEND_CMSG_LEN, UDP_GRO, write_send};

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

/// Asks for each datagram's destination address and interface
/// (`IP_PKTINFO`; on an IPv6 socket `IPV6_RECVPKTINFO`, and `IP_PKTINFO`
/// for the IPv4 traffic it may carry).
pub fn set_recv_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // An IPv6-only socket refuses the IPv4 option; that is fine.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        Ok(())
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Asks for each datagram's TOS byte (`IP_RECVTOS`) or, on an IPv6 socket,
/// traffic class (`IPV6_RECVTCLASS`, and `IP_RECVTOS` for the IPv4 it may
/// carry): DSCP and ECN as they arrived.
pub fn set_recv_tos(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
        // An IPv6-only socket refuses the IPv4 option; that is fine.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
        Ok(())
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)
    }
}

/// Sends every unicast datagram with TTL / hop limit `hops` (`IP_TTL`; on
/// an IPv6 socket `IPV6_UNICAST_HOPS`, and `IP_TTL` for the IPv4 it may
/// carry as v4-mapped).
pub fn set_unicast_hops(fd: RawFd, v6: bool, hops: u8) -> io::Result<()> {
    let h = libc::c_int::from(hops);
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, h)?;
        // An IPv6-only socket may refuse the IPv4 option; that is fine.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, h);
        Ok(())
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, h)
    }
}

/// Asks for each datagram's TTL (`IP_RECVTTL`) or, on an IPv6 socket, hop
/// limit (`IPV6_RECVHOPLIMIT`, and `IP_RECVTTL` for the IPv4 it may
/// carry).
pub fn set_recv_hops(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
        Ok(())
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// Software receive timestamps (`SO_TIMESTAMPNS`): every datagram carries
/// an `SCM_TIMESTAMPNS` with the `CLOCK_REALTIME` time the kernel took it.
pub fn set_rx_timestamps(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, super::cmsg::SO_TIMESTAMPNS, 1)
}

/// Software TX timestamps on request (`SO_TIMESTAMPING`): the socket
/// reports (`SOFTWARE`) with an ID (`OPT_ID`; each send that asks gives
/// its own with `SCM_TS_OPT_ID`), without the payload (`OPT_TSONLY`);
/// nothing is recorded unless a send's own `SO_TIMESTAMPING` control
/// message asks (`TX_SOFTWARE` per send), and received datagrams carry no
/// `SCM_TIMESTAMPING` (`OPT_RX_FILTER`). The stamps arrive on the error
/// queue. `SCM_TS_OPT_ID` needs Linux 6.13: an older kernel refuses the
/// first send that asks (`EINVAL`).
pub fn set_tx_timestamps(fd: RawFd) -> io::Result<()> {
    let flags = libc::SOF_TIMESTAMPING_SOFTWARE
        | libc::SOF_TIMESTAMPING_OPT_ID
        | libc::SOF_TIMESTAMPING_OPT_TSONLY
        | libc::SOF_TIMESTAMPING_OPT_RX_FILTER;
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        super::cmsg::SO_TIMESTAMPING,
        flags as libc::c_int,
    )
}

/// The socket's kernel drop counter (`SO_MEMINFO`, `SK_MEMINFO_DROPS`):
/// every buffer the kernel dropped for this socket since it was made (a
/// GRO train counts once), readable at any time, unlike `SO_RXQ_OVFL`
/// which arrives only with a later datagram.
pub fn drops(fd: RawFd) -> io::Result<u32> {
    const SK_MEMINFO_DROPS: usize = 8;
    let mut v = [0u32; 16];
    let mut len = mem::size_of_val(&v) as libc::socklen_t;
    // The kernel writes at most `len` bytes into `v`, a local.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_MEMINFO,
        v.as_mut_ptr().cast(),
        &mut len,
    ))?;
    if (len as usize) <= SK_MEMINFO_DROPS * 4 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO without a drop counter",
        ));
    }
    Ok(v[SK_MEMINFO_DROPS])
}

/// Reads and drops what is queued at socket `fd` without waiting, up to
/// `limit` buffers (a flood that goes on must not hold a stop); returns
/// how many it dropped. `MSG_TRUNC`: nothing is copied but a byte. A
/// pending socket error (an ICMP error: the kernel reports it before the
/// queue, once) does not end it.
pub fn discard_queued(fd: RawFd, limit: u64) -> u64 {
    const BATCH: usize = 64;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    // SAFETY: mmsghdr is plain old data; all-zero is valid.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for m in &mut msgs {
        // Every message's one byte lands in `byte`: never read.
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut dropped = 0u64;
    let mut errors = 0;
    while dropped < limit {
        let want = (limit - dropped).min(BATCH as u64) as libc::c_uint;
        // The kernel writes one byte into `byte` and the lengths into
        // `msgs`, locals that outlive the call.
        match syscall!(recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            want,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )) {
            Ok(n) if n > 0 => dropped += n as u64,
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // Reported once, then cleared; a bound all the same.
            Err(_) if errors < 16 => errors += 1,
            Err(_) => break,
        }
    }
    dropped
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

/// Sends one datagram without blocking (`sendto`, `MSG_DONTWAIT`).
pub fn send_to(fd: RawFd, data: &[u8], to: &RawAddr) -> io::Result<()> {
    // The kernel reads `data` and the address during the call.
    syscall!(sendto(
        fd,
        data.as_ptr().cast(),
        data.len(),
        libc::MSG_DONTWAIT,
        to.as_ptr().cast(),
        to.len(),
    ))
    .map(drop)
}

/// Sends `data` to `to` from the source `src` (a `PKTINFO` control
/// message; [`SrcIp::Any`] sends plainly) without blocking.
pub fn send_from(fd: RawFd, data: &[u8], to: &RawAddr, src: SrcIp) -> io::Result<()> {
    if src == SrcIp::Any {
        return send_to(fd, data, to);
    }
    send_msg(fd, data, to, src, None)
}

/// Sends `data` to a connected socket's peer asking for its software TX
/// timestamp under `id` (see [`set_tx_timestamps`]), without blocking.
pub fn send_stamped(fd: RawFd, data: &[u8], id: u32) -> io::Result<()> {
    send_msg(fd, data, &RawAddr::zeroed(), SrcIp::Any, Some(id))
}

/// `sendmsg` with the control messages of [`write_send`] (the empty
/// address: the connected peer).
fn send_msg(
    fd: RawFd,
    data: &[u8],
    to: &RawAddr,
    src: SrcIp,
    ts_id: Option<u32>,
) -> io::Result<()> {
    let mut ctl = CmsgSpace::<SEND_CMSG_LEN>::default();
    let ctl_len = write_send(&mut ctl, None, src, None, ts_id);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = to.as_ptr().cast_mut().cast();
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.0.as_mut_ptr().cast();
    msg.msg_controllen = ctl_len;
    // sendmsg(2): the kernel reads the name, the iovec's bytes (which it
    // does not write: iov_base is only read for a send) and the control
    // area during the call; all live on this frame or in `data`.
    syscall!(sendmsg(fd, &msg, libc::MSG_DONTWAIT)).map(drop)
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

/// Whether [`listen_fds`] handed its descriptors out already.
static LISTEN_FDS_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Most descriptors a socket activator may pass (systemd's own limit is
/// lower in practice; this bounds what an environment can make us take).
const MAX_LISTEN_FDS: usize = 1024;

/// The descriptors a socket activator (systemd, `systemd-socket-activate`,
/// a parent following the same protocol, `sd_listen_fds`) passed this
/// process, for [`crate::Engine::start_on`]: `LISTEN_FDS` of them from
/// descriptor 3 on,
/// when `LISTEN_PID` is this process. Empty when the variables are absent
/// or name another process. Marked close-on-exec. A second call is an
/// error, so the descriptors are owned once (the variables stay set: the
/// standard library's `remove_var` is unsafe beside other threads).
///
/// # Safety
///
/// When `LISTEN_PID` names this process, descriptors 3 to 3 +
/// `LISTEN_FDS` - 1 must be owned by nothing else in it: nothing may have
/// wrapped or closed them before, and nothing may use them after but
/// through the returned `OwnedFd`s. That holds when this is the first thing
/// to look at them (socket activation puts them there before `exec`).
pub unsafe fn listen_fds() -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return Ok(Vec::new());
    }
    let n: usize = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n <= MAX_LISTEN_FDS)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTEN_FDS is not a count of 0..{MAX_LISTEN_FDS}"),
            )
        })?;
    if LISTEN_FDS_TAKEN.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the activator's descriptors were taken already",
        ));
    }
    let mut out = Vec::with_capacity(n);
    for fd in 3..3 + n as RawFd {
        // Open, and close-on-exec so that no child inherits it.
        let flags = syscall!(fcntl(fd, libc::F_GETFD)).map_err(|e| {
            io::Error::new(e.kind(), format!("LISTEN_FDS names descriptor {fd}: {e}"))
        })?;
        syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
        // SAFETY: `fd` is open (F_GETFD succeeded) and, by this function's
        // contract, owned by nothing else; the flag above makes this the
        // only call that wraps it.
        out.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    }
    Ok(out)
}
