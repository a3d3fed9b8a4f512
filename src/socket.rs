//! The sockets an engine opens: every option from [`Config`] applied, the
//! bind, and what the kernel granted.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, Multicast};
use crate::sys;

/// What the kernel granted each socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SocketInfo {
    /// `SO_RCVBUF` as read back (the kernel doubles requests).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` as read back.
    pub send_buffer: usize,
    /// Whether `UDP_GRO` is on.
    pub gro: bool,
}

/// What a socket is to its engine, for what it joins and connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// On `Config::bind`, the first of its port: joins the groups of
    /// `Config::multicast` (and hears only the groups it joined:
    /// `IP_MULTICAST_ALL` off) and connects to `Config::connect`.
    First,
    /// On `Config::bind`, another worker's socket on the same port:
    /// connects, joins nothing, and hears no group (`IP_MULTICAST_ALL`
    /// off when there are groups): the kernel hands a group's datagram to
    /// every socket on its port, so each worker would get a copy. A
    /// group's datagrams all reach the first socket's worker.
    Twin,
    /// On `Config::also_bind`: neither joins nor connects.
    Also,
}

/// Opens one socket bound to `bind`, as `role` says.
pub(crate) fn open(
    cfg: &Config,
    bind: SocketAddr,
    reuse_port: bool,
    role: Role,
) -> io::Result<(Socket, SocketInfo)> {
    let s = unbound(cfg, bind)?;
    if reuse_port || cfg.reuse_addr {
        s.set_reuse_port(true)?;
    }
    if cfg.reuse_addr {
        s.set_reuse_address(true)?;
    }
    let info = configure(cfg, &s, bind, role)?;
    s.bind(&bind.into()).map_err(|e| bind_error(bind, e))?;
    if let Some(peer) = cfg.connect.filter(|_| role != Role::Also) {
        s.connect(&peer.into())
            .map_err(|e| connect_error(peer, e))?;
    }
    Ok((s, info))
}

/// A UDP socket of `bind`'s family with what `cfg` sets before any bind
/// that decides where it may bind: its device, IPv6-only or not.
fn unbound(cfg: &Config, bind: SocketAddr) -> io::Result<Socket> {
    let domain = if bind.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if let Some(dev) = &cfg.bind_device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {dev}: {e}")))?;
    }
    if let (Some(v6only), true) = (cfg.only_v6, bind.is_ipv6()) {
        s.set_only_v6(v6only)?;
    }
    Ok(s)
}

/// A refused `bind` to `bind`, with what it means there.
fn bind_error(bind: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            e.kind(),
            format!(
                "{bind}: address already in use (by another socket; `ss -ulpn 'sport = :{}'` \
                 names its program)",
                bind.port()
            ),
        )
    } else if e.kind() == io::ErrorKind::PermissionDenied
        && let Some(first) = unprivileged_port_start().filter(|&f| bind.port() < f)
    {
        io::Error::new(
            e.kind(),
            format!(
                "bind {bind}: {e}: ports below {first} need root or CAP_NET_BIND_SERVICE \
                 (sysctl net.ipv4.ip_unprivileged_port_start)"
            ),
        )
    } else if e.kind() == io::ErrorKind::AddrNotAvailable {
        io::Error::new(
            e.kind(),
            format!("{bind}: address not available on this host"),
        )
    } else {
        io::Error::new(e.kind(), format!("bind {bind}: {e}"))
    }
}

/// Where a `SO_REUSEPORT` group on `bind` may go. The kernel lets a
/// socket with that option join any socket of the same user that has it
/// on the address, another process's too (a second `udpring echo`, a
/// service of the user's), and the two would split the traffic without a
/// word. A socket bound without the option finds whether the address is
/// free (for port 0, takes a free port), and gives it up to the group.
pub(crate) fn free_for_group(cfg: &Config, bind: SocketAddr) -> io::Result<SocketAddr> {
    let s = unbound(cfg, bind)?;
    s.bind(&bind.into()).map_err(|e| bind_error(bind, e))?;
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound to a non-IP address"))
}

/// A failed `connect` to `peer`, with what it means there.
fn connect_error(peer: SocketAddr, e: io::Error) -> io::Error {
    let e = crate::os::explain_unreachable(peer, e);
    io::Error::new(e.kind(), format!("connect to {peer}: {e}"))
}

/// The first port a process without `CAP_NET_BIND_SERVICE` may bind
/// (`net.ipv4.ip_unprivileged_port_start`, IPv6 too).
fn unprivileged_port_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Takes a socket the caller opened and bound (handed to
/// [`crate::Engine::start_on`]): it must be a UDP socket bound to an IP
/// address and port. [`configure`] applies the engine's options, as on a
/// socket it opened itself; the options that must come before the bind
/// (`reuse_addr`, `bind_device`, `only_v6`) are the caller's, set on the
/// socket before binding it, and refused in `cfg`. `main`: the first
/// socket (it joins the groups and connects).
pub(crate) fn adopt(
    cfg: &Config,
    fd: std::os::fd::OwnedFd,
    main: bool,
) -> io::Result<(Socket, SocketAddr, SocketInfo)> {
    let s = Socket::from(fd);
    let raw = s.as_raw_fd();
    let kind = sys::socket::getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(|e| io::Error::new(e.kind(), format!("descriptor {raw} is not a socket: {e}")))?;
    let proto = sys::socket::getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    if kind != libc::SOCK_DGRAM || proto != libc::IPPROTO_UDP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is not a UDP socket"),
        ));
    }
    let bound = s
        .local_addr()?
        .as_socket()
        .filter(|a| a.port() != 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("UDP socket {raw} is not bound to an address and port: bind it first"),
            )
        })?;
    if cfg.reuse_addr || cfg.bind_device.is_some() || cfg.only_v6.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "reuse_addr, bind_device and only_v6 act before the bind: set them on the \
             socket before binding it, not in the Config of an engine started on it",
        ));
    }
    let role = if main { Role::First } else { Role::Also };
    let info = configure(cfg, &s, bound, role)?;
    if let Some(peer) = cfg.connect.filter(|_| main) {
        s.connect(&peer.into())
            .map_err(|e| connect_error(peer, e))?;
    }
    Ok((s, bound, info))
}

/// Every option of `cfg` that a socket can take before or after its bind,
/// for a socket bound (or to be bound) to `bind`; returns what the kernel
/// granted.
fn configure(cfg: &Config, s: &Socket, bind: SocketAddr, role: Role) -> io::Result<SocketInfo> {
    if cfg.broadcast {
        s.set_broadcast(true)?;
    }
    if let Some(m) = cfg.mark {
        s.set_mark(m)
            .map_err(|e| io::Error::new(e.kind(), format!("SO_MARK {m}: {e}")))?;
    }
    if let Some(tos) = cfg.tos {
        if bind.is_ipv6() {
            s.set_tclass_v6(u32::from(tos))?;
            // A dual-stack socket sends IPv4 too: mark those as well.
            let _ = s.set_tos_v4(u32::from(tos));
        } else {
            s.set_tos_v4(u32::from(tos))?;
        }
    }
    let fd = s.as_raw_fd();
    sys::socket::set_recverr(fd, bind.is_ipv6())?;
    // Each datagram's destination from the kernel only where it can differ
    // from the bound address (a control message per datagram costs the
    // kernel a put_cmsg: see sys::fixed_destination, PERF.md). Drops are
    // read with SO_MEMINFO, not SO_RXQ_OVFL's control message per datagram.
    if sys::fixed_destination(bind).is_none() {
        sys::socket::set_recv_pktinfo(fd, bind.is_ipv6())?;
    }
    if cfg.recv_tos {
        sys::socket::set_recv_tos(fd, bind.is_ipv6())?;
    }
    // The server mark (see the guard's module doc): what this engine sends
    // says it is a udpring server, and what other servers sent is read.
    if cfg.guard.marks() {
        sys::socket::set_unicast_hops(fd, bind.is_ipv6(), crate::guard::MARK_HOPS)?;
    }
    if cfg.guard.reads_marks() {
        sys::socket::set_recv_hops(fd, bind.is_ipv6())?;
    }
    if let Some(seg) = cfg.udp_segment {
        sys::socket::setsockopt_int(fd, libc::SOL_UDP, sys::cmsg::UDP_SEGMENT, i32::from(seg))
            .map_err(|e| io::Error::new(e.kind(), format!("UDP_SEGMENT {seg}: {e}")))?;
    }
    if cfg.rx_timestamps {
        sys::socket::set_rx_timestamps(fd)?;
    }
    if cfg.tx_timestamps {
        sys::socket::set_tx_timestamps(fd)
            .map_err(|e| io::Error::new(e.kind(), format!("SO_TIMESTAMPING: {e}")))?;
    }
    if cfg.pmtu_discover {
        sys::socket::set_pmtu_discover(fd, bind.is_ipv6(), true)?;
    }
    if cfg.gro {
        sys::socket::set_udp_gro(fd, true).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("UDP_GRO not available on this kernel: {e}"),
            )
        })?;
    }
    let mut info = SocketInfo {
        recv_buffer: sys::socket::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize,
        send_buffer: sys::socket::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)? as usize,
        gro: cfg.gro,
    };
    if let Some(n) = cfg.recv_buffer {
        info.recv_buffer = sys::socket::set_buffer_size(fd, true, n)?;
    }
    if let Some(n) = cfg.send_buffer {
        info.send_buffer = sys::socket::set_buffer_size(fd, false, n)?;
    }
    apply_multicast(fd, bind.is_ipv6(), &cfg.multicast, role == Role::First)?;
    // With groups to join, each socket on the bound port hears the groups
    // it joined itself, not every group the host joined on the port: the
    // twins none (the first socket's worker gets each datagram once), and
    // a group one worker joins later reaches that worker alone.
    if role != Role::Also && !cfg.multicast.joins.is_empty() {
        sys::mcast::set_multicast_all(fd, bind.is_ipv6(), false)?;
    }
    if let Some(setup) = &cfg.socket_setup {
        (setup.0)(std::os::fd::AsFd::as_fd(s), bind)
            .map_err(|e| io::Error::new(e.kind(), format!("socket_setup for {bind}: {e}")))?;
    }
    Ok(info)
}

fn apply_multicast(fd: std::os::fd::RawFd, v6: bool, m: &Multicast, join: bool) -> io::Result<()> {
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
    for j in m.joins.iter().filter(|_| join) {
        match j.source {
            Some(src) => mcast::source_membership(fd, v6, j.group, src, &j.interface, true)?,
            None => mcast::membership(fd, v6, j.group, &j.interface, true)?,
        }
    }
    Ok(())
}
