//! What a program on the engine needs from the host beside the engine:
//! the engine's own helpers for addresses, CPUs and the socket options
//! that neither the standard library nor `socket2` sets, on any socket the
//! program holds (a probe, a client of its own). Each is one system call
//! or none, made at once.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use crate::error::ErrorEvent;
use crate::sys;

/// `addr` with a v4-mapped IPv6 address (`[::ffff:10.0.0.1]:9`) shown as
/// IPv4 (`10.0.0.1:9`), as the engine shows every source.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    sys::canonical(addr)
}

/// `ip` with a v4-mapped IPv6 address shown as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    sys::canonical_ip(ip)
}

/// The unspecified address (`0.0.0.0` or `::`) of `like`'s family, with
/// `port`.
pub fn unspecified_like(like: SocketAddr, port: u16) -> SocketAddr {
    sys::unspecified_like(like, port)
}

/// Whether `ip` is an IPv4 broadcast address of this host: the limited
/// broadcast (255.255.255.255) or the subnet broadcast of one of its IPv4
/// addresses, as the engine's guard reads them at start (`getifaddrs`;
/// none for a /31 or /32).
pub fn is_broadcast(ip: IpAddr) -> bool {
    crate::guard::HostAddrs::read().is_broadcast(canonical_ip(ip))
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    sys::cpu::allowed_cpus()
}

/// Pins the calling thread to CPU `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    sys::cpu::pin_to_cpu(cpu)
}

/// Sets a socket's receive (`recv`) or send buffer to `bytes`: the
/// `FORCE` variant where allowed (root, `CAP_NET_ADMIN`: past the sysctl
/// maximum), else the plain one. Returns what the kernel granted, read
/// back (it doubles requests).
pub fn set_buffer_size(sock: &impl AsFd, recv: bool, bytes: usize) -> io::Result<usize> {
    sys::socket::set_buffer_size(sock.as_fd().as_raw_fd(), recv, bytes)
}

/// Turns UDP generic receive offload on or off (`UDP_GRO`): trains of
/// segments arrive as one buffer with their segment size.
pub fn set_udp_gro(sock: &impl AsFd, on: bool) -> io::Result<()> {
    sys::socket::set_udp_gro(sock.as_fd().as_raw_fd(), on)
}

/// The socket's kernel drop counter (`SO_MEMINFO`'s `SK_MEMINFO_DROPS`):
/// the buffers the kernel dropped for it since it was made, its receive
/// buffer full (a GRO train counts once) — what the engine reports as
/// `kernel_drops`, for a socket of the program's own.
pub fn socket_drops(sock: &impl AsFd) -> io::Result<u32> {
    sys::socket::drops(sock.as_fd().as_raw_fd())
}

/// Asks for the kernel's error reports on the socket's error queue
/// (`IP_RECVERR`, and `IPV6_RECVERR` on an IPv6 socket): ICMP errors
/// about datagrams sent, read with [`read_error`].
pub fn set_recv_errors(sock: &impl AsFd, v6: bool) -> io::Result<()> {
    sys::socket::set_recverr(sock.as_fd().as_raw_fd(), v6)
}

/// Makes a socket that is not on the engine speak the engine's server
/// mark (see [`crate::Guard`]): what it sends leaves with TTL / hop limit
/// [`crate::MARK_HOPS`], so that udpring servers do not answer it, and each
/// datagram it receives carries its TTL / hop limit in a control message
/// (`IP_TTL`, `IPV6_HOPLIMIT`), so that it can refuse theirs
/// ([`recv_from_hops`], [`crate::is_marked`]). For a program that answers
/// datagrams on its own socket loop (`udpring reference echo`).
pub fn set_server_mark(sock: &impl AsFd, v6: bool) -> io::Result<()> {
    let fd = sock.as_fd().as_raw_fd();
    sys::socket::set_unicast_hops(fd, v6, crate::MARK_HOPS)?;
    sys::socket::set_recv_hops(fd, v6)
}

/// Receives one datagram on `sock` into `buf` as `UdpSocket::recv_from`
/// does (blocking as the socket is; what a longer datagram has past
/// `buf.len()` is dropped) and says the TTL / hop limit it arrived with:
/// `None` unless the socket asks for it ([`set_server_mark`]). The source
/// is as the kernel gives it (v4-mapped on an IPv6 socket), ready for
/// `send_to`. For a program that answers on a socket loop of its own and
/// must not answer another udpring server:
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let sock = std::net::UdpSocket::bind("127.0.0.1:9000")?;
/// udpring::os::set_server_mark(&sock, false)?;
/// let mut buf = [0u8; 2048];
/// loop {
///     let (n, from, hops) = udpring::os::recv_from_hops(&sock, &mut buf)?;
///     if hops.is_some_and(udpring::is_marked) {
///         continue; // another udpring server's answer: answering it loops
///     }
///     sock.send_to(&buf[..n], from)?;
/// }
/// # }
/// ```
pub fn recv_from_hops(
    sock: &impl AsFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    let (n, name, cmsg) = sys::mmsg::recv_one(sock.as_fd().as_raw_fd(), buf)?;
    let from = name.to_socket_addr().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a datagram without a source address",
        )
    })?;
    Ok((n, from, cmsg.hops))
}

/// How a socket treats the path MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMtu {
    /// Never fragment, and refuse sends over the path MTU the kernel
    /// knows (`EMSGSIZE`): `IP_PMTUDISC_DO`.
    Discover,
    /// Never fragment, and send whatever size is asked: probes over the
    /// known path MTU go out (`IP_PMTUDISC_PROBE`), as RFC 8899 wants.
    Probe,
    /// The kernel's default (`IP_PMTUDISC_WANT`).
    Default,
}

/// Sets how the socket treats the path MTU (`IP_MTU_DISCOVER`, and
/// `IPV6_MTU_DISCOVER` on an IPv6 socket).
pub fn set_path_mtu(sock: &impl AsFd, v6: bool, mode: PathMtu) -> io::Result<()> {
    let fd = sock.as_fd().as_raw_fd();
    match mode {
        PathMtu::Discover => sys::socket::set_pmtu_discover(fd, v6, true),
        PathMtu::Default => sys::socket::set_pmtu_discover(fd, v6, false),
        PathMtu::Probe => sys::socket::set_pmtu_mode(fd, v6, true),
    }
}

/// The path MTU the kernel knows towards a connected socket's peer
/// (`IP_MTU` / `IPV6_MTU`); an error on an unconnected socket.
pub fn path_mtu(sock: &impl AsFd, v6: bool) -> io::Result<u32> {
    sys::socket::path_mtu(sock.as_fd().as_raw_fd(), v6)
}

/// The MTU of the interface that holds the local address `local`.
pub fn interface_mtu(local: IpAddr) -> Option<u32> {
    sys::socket::interface_mtu(local)
}

/// Reads one report from the socket's error queue (`MSG_ERRQUEUE`,
/// without waiting), as an [`ErrorEvent`]; `None` when the queue is
/// empty. Entries that are not errors (TX timestamps) are skipped. The
/// kernel's own report of a send it refused as too big
/// ([`ErrorEvent::MessageTooLong`]) may name the destination with port 0
/// (seen on an unconnected IPv4 socket: the report carries the socket's
/// peer port, which it has none of); the engine tells its handlers of
/// those sends itself, with the port.
pub fn read_error(sock: &impl AsFd) -> Option<ErrorEvent> {
    let fd = sock.as_fd().as_raw_fd();
    loop {
        match sys::read_errqueue(fd)? {
            sys::Queued::Error(e) => return Some(ErrorEvent::from_queued(e)),
            sys::Queued::TxTimestamp { .. } | sys::Queued::Unknown => {}
        }
    }
}

/// `e` with what to do about it when it is the open-files limit, any
/// other error as it is. `EMFILE`: this process's `RLIMIT_NOFILE` (`ulimit
/// -n`), said with its value and what a worker holds; `ENFILE`: the
/// system's (`fs.file-max`). The engine's start says it of its own errors;
/// this is for a program's sockets beside it.
pub fn explain_open_files(e: io::Error) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::EMFILE) => {
            use nix::sys::resource::{Resource, getrlimit};
            let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
                Ok((soft, hard)) if soft < hard => {
                    format!("{soft} open files (`ulimit -n`; up to {hard} without privileges)")
                }
                Ok((soft, _)) => format!("{soft} open files (`ulimit -n`)"),
                Err(_) => "only so many open files (`ulimit -n`)".into(),
            };
            format!(
                "this process may hold {limit}, and each worker holds a socket per address it \
                 serves, an eventfd and (uring) a ring: raise the limit, or run fewer workers \
                 or sockets"
            )
        }
        Some(libc::ENFILE) => {
            "the whole system's open files are at its limit (`sysctl fs.file-max`)".into()
        }
        _ => return e,
    };
    io::Error::new(e.kind(), format!("{e}: {why}"))
}

/// `e` from starting a thread, with what to do when it is a limit
/// (`EAGAIN`: this user's `RLIMIT_NPROC`, `ulimit -u`, counts every
/// process and thread of the user; or the system's, or the cgroup's
/// `pids.max`; or the address space for its stack, `ulimit -v`), any
/// other error as it is.
pub fn explain_thread_limit(e: io::Error) -> io::Error {
    if e.raw_os_error() != Some(libc::EAGAIN) {
        return e;
    }
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let limit = match getrlimit(Resource::RLIMIT_NPROC) {
        Ok((soft, _)) if soft != RLIM_INFINITY => format!("{soft}"),
        _ => "only so many".into(),
    };
    io::Error::new(
        e.kind(),
        format!(
            "no thread could be started ({e}): this user may run {limit} processes and \
             threads together (`ulimit -u`), or the system or its cgroup is at its limit \
             (kernel.threads-max, pids.max), or there was no memory for its stack (`ulimit -v`)"
        ),
    )
}

/// `e` from connecting or sending to `to`, with what it means where the
/// errno alone misleads ([`why_unsendable`]), any other error as it is.
pub fn explain_unreachable(to: SocketAddr, e: io::Error) -> io::Error {
    match e.raw_os_error().and_then(|n| why_unsendable(to, n)) {
        // The blackhole's EINVAL is the route's doing, not an invalid
        // input of the caller's (which a command may take for a usage error).
        Some(why) if e.raw_os_error() == Some(libc::EINVAL) => {
            io::Error::other(format!("{e}: {why}"))
        }
        Some(why) => io::Error::new(e.kind(), format!("{e}: {why}")),
        None => e,
    }
}

/// What the kernel means by refusing, with this errno, to connect or send
/// to `to`: no local address of its family (`EADDRNOTAVAIL`; for IPv6,
/// IPv6 turned off), no route (`ENETUNREACH`, `EHOSTUNREACH`), a broadcast
/// address or a `prohibit` route (`EACCES`, "Permission denied" even to
/// root), a firewall's drop (`EPERM`), a `blackhole` route (`EINVAL`).
/// `None` for an errno that says enough.
pub fn why_unsendable(to: SocketAddr, errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EADDRNOTAVAIL if to.is_ipv6() => {
            "this host has no IPv6 address to send from (is IPv6 off? sysctl \
             net.ipv6.conf.all.disable_ipv6)"
        }
        libc::EADDRNOTAVAIL => "this host has no address to send from",
        libc::ENETUNREACH => "no route to it (`ip route get` says which is missing)",
        libc::EHOSTUNREACH => {
            "an `unreachable` route, or no neighbour answering for it on the link \
             (`ip route get`, `ip neigh`)"
        }
        libc::EACCES => {
            "a broadcast address, which takes SO_BROADCAST (`Config::broadcast`; of the \
             command's tools, `mcast` sends to one) or a `prohibit` route (`ip route get`)"
        }
        libc::EPERM => {
            "a firewall rule drops it on the way out (netfilter's output hook: \
             `nft list ruleset`, `iptables -S OUTPUT`)"
        }
        libc::EINVAL if matches!(to, SocketAddr::V6(a) if a.ip().is_unicast_link_local()) => {
            "a link-local address takes the interface it is on (%IFACE), the one the \
             socket is bound to if it is (SO_BINDTODEVICE)"
        }
        libc::EINVAL => "a `blackhole` route gives this (`ip route get` shows one)",
        _ => return None,
    })
}

pub use crate::sys::socket::listen_fds;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addresses_are_the_limited_one_and_this_hosts_subnets() {
        // Loopback's 127.0.0.1/8 is on every host: its subnet broadcast.
        for yes in [
            "255.255.255.255",
            "127.255.255.255",
            "::ffff:127.255.255.255",
        ] {
            assert!(is_broadcast(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.1", "127.0.0.255", "224.0.0.1", "::1", "ff02::1"] {
            assert!(!is_broadcast(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn only_limits_and_unreachable_peers_are_explained() {
        let emfile = explain_open_files(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(emfile.to_string().contains("`ulimit -n`"), "{emfile}");
        let enfile = explain_open_files(io::Error::from_raw_os_error(libc::ENFILE));
        assert!(enfile.to_string().contains("fs.file-max"), "{enfile}");
        let other = explain_open_files(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(other.raw_os_error(), Some(libc::ECONNREFUSED), "as it was");
        let eagain = explain_thread_limit(io::Error::from_raw_os_error(libc::EAGAIN));
        assert!(eagain.to_string().contains("`ulimit -u`"), "{eagain}");
        let other = explain_thread_limit(io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(other.raw_os_error(), Some(libc::EMFILE), "as it was");
        let to: SocketAddr = "[::1]:9".parse().unwrap();
        let v6off = explain_unreachable(to, io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
        assert!(v6off.to_string().contains("disable_ipv6"), "{v6off}");
        for (errno, says) in [
            (libc::EACCES, "broadcast"),
            (libc::EPERM, "firewall"),
            (libc::EINVAL, "blackhole"),
            (libc::EHOSTUNREACH, "neighbour"),
        ] {
            let e = explain_unreachable(to, io::Error::from_raw_os_error(errno)).to_string();
            assert!(e.contains(says), "{e}");
        }
        let link_local = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0, 1).into();
        for (errno, says) in [
            (libc::EINVAL, "takes the interface it is on"),
            (libc::EHOSTUNREACH, "neighbour"),
        ] {
            let e = explain_unreachable(link_local, io::Error::from_raw_os_error(errno));
            let e = e.to_string();
            assert!(e.contains(says), "{e}");
        }
        let refused = explain_unreachable(to, io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(
            refused.raw_os_error(),
            Some(libc::ECONNREFUSED),
            "as it was"
        );
        // A worker's error copied for its start keeps its errno to be read.
        let copied = crate::error::copy(&io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(copied.raw_os_error(), Some(libc::EMFILE));
    }

    #[test]
    fn a_sockets_drop_counter_counts_what_its_full_buffer_refused() {
        use std::net::UdpSocket;
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The smallest buffer the kernel grants: a few datagrams fill it.
        let _ = set_buffer_size(&rx, true, 1);
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        const SENT: u32 = 200;
        for _ in 0..SENT {
            tx.send_to(&[0u8; 512], to).unwrap();
        }
        let mut queued = 0;
        let mut buf = [0u8; 1024];
        while rx.recv_from(&mut buf).is_ok() {
            queued += 1;
        }
        let drops = socket_drops(&rx).unwrap();
        assert!(drops > 0 && queued > 0, "queued {queued}, dropped {drops}");
        assert_eq!(queued + drops, SENT, "queued {queued}, dropped {drops}");
    }
}
