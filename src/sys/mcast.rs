//! Multicast and broadcast socket options, on a worker's raw descriptor.
//!
//! Most go through socket2; IPv6 source-specific membership
//! (`MCAST_JOIN_SOURCE_GROUP`), which socket2 lacks, through libc.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{BorrowedFd, RawFd};

use socket2::SockRef;

use super::addr::RawAddr;

/// Which interface a membership or the outgoing multicast uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    /// Let the kernel pick (by route).
    Any,
    /// By index (`if_nametoindex`).
    Index(u32),
    /// By a local IPv4 address (IPv4 only).
    Addr(Ipv4Addr),
    /// By name, e.g. `eth0`.
    Name(String),
}

/// Why a multicast operation was refused.
#[derive(Debug)]
pub enum McastError {
    /// The address is not a multicast group (224.0.0.0/4, ff00::/8).
    NotMulticast(IpAddr),
    /// The group (or source) is not of the socket's family.
    WrongFamily(IpAddr),
    /// No interface by that name or index.
    NoSuchInterface(String),
    /// Already a member (`EADDRINUSE`).
    AlreadyJoined(IpAddr),
    /// Not a member (`EADDRNOTAVAIL` on leave).
    NotJoined(IpAddr),
    /// Any other error from the kernel.
    Os(io::Error),
}

impl std::fmt::Display for McastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McastError::NotMulticast(a) => {
                write!(f, "{a} is not a multicast group (224.0.0.0/4 or ff00::/8)")
            }
            McastError::WrongFamily(a) => write!(f, "{a} is not of the socket's address family"),
            McastError::NoSuchInterface(i) => write!(f, "no interface {i}"),
            McastError::AlreadyJoined(a) => write!(f, "already a member of {a}"),
            McastError::NotJoined(a) => write!(f, "not a member of {a}"),
            McastError::Os(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for McastError {}

impl From<McastError> for io::Error {
    fn from(e: McastError) -> io::Error {
        match e {
            McastError::Os(e) => e,
            McastError::NoSuchInterface(_) => {
                io::Error::new(io::ErrorKind::NotFound, e.to_string())
            }
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// Runs `f` on a socket2 view of `fd`.
fn with<T>(fd: RawFd, f: impl FnOnce(SockRef<'_>) -> T) -> T {
    // SAFETY: the descriptor belongs to a worker socket that stays open for
    // as long as the worker lives, longer than this call.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    f(SockRef::from(&b))
}

/// The index of interface `name`.
pub fn if_index(name: &str) -> Result<u32, McastError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| McastError::NoSuchInterface(name.to_string()))
}

fn index_of(iface: &Interface) -> Result<u32, McastError> {
    match iface {
        Interface::Any => Ok(0),
        Interface::Index(i) => {
            if *i != 0 && nix::net::if_::if_indextoname(*i).is_err() {
                return Err(McastError::NoSuchInterface(format!("index {i}")));
            }
            Ok(*i)
        }
        Interface::Name(n) => if_index(n),
        Interface::Addr(a) => Err(McastError::NoSuchInterface(format!(
            "{a}: IPv6 memberships need an interface index or name"
        ))),
    }
}

fn check_group(group: IpAddr, v6_socket: bool) -> Result<(), McastError> {
    if !group.is_multicast() {
        return Err(McastError::NotMulticast(group));
    }
    if group.is_ipv6() != v6_socket {
        return Err(McastError::WrongFamily(group));
    }
    Ok(())
}

fn os(e: io::Error, group: IpAddr, joining: bool) -> McastError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) if joining => McastError::AlreadyJoined(group),
        Some(libc::EADDRNOTAVAIL) if !joining => McastError::NotJoined(group),
        Some(libc::ENODEV) => McastError::NoSuchInterface(e.to_string()),
        _ => McastError::Os(e),
    }
}

/// Joins (or leaves) any-source group `group` on `iface`.
pub fn membership(
    fd: RawFd,
    v6: bool,
    group: IpAddr,
    iface: &Interface,
    join: bool,
) -> Result<(), McastError> {
    check_group(group, v6)?;
    let r = match group {
        IpAddr::V4(g) => {
            let req = match iface {
                Interface::Addr(a) => socket2::InterfaceIndexOrAddress::Address(*a),
                other => socket2::InterfaceIndexOrAddress::Index(index_of(other)?),
            };
            with(fd, |s| {
                if join {
                    s.join_multicast_v4_n(&g, &req)
                } else {
                    s.leave_multicast_v4_n(&g, &req)
                }
            })
        }
        IpAddr::V6(g) => {
            let i = index_of(iface)?;
            with(fd, |s| {
                if join {
                    s.join_multicast_v6(&g, i)
                } else {
                    s.leave_multicast_v6(&g, i)
                }
            })
        }
    };
    r.map_err(|e| os(e, group, join))
}

/// Joins (or leaves) source-specific group (`group`, `source`) on `iface`:
/// only `source`'s datagrams to `group` arrive.
pub fn source_membership(
    fd: RawFd,
    v6: bool,
    group: IpAddr,
    source: IpAddr,
    iface: &Interface,
    join: bool,
) -> Result<(), McastError> {
    check_group(group, v6)?;
    if source.is_ipv6() != v6 || source.is_multicast() {
        return Err(McastError::WrongFamily(source));
    }
    let index = match iface {
        Interface::Addr(_) => None,
        other => Some(index_of(other)?),
    };
    match (group, source, iface, index) {
        (IpAddr::V4(g), IpAddr::V4(src), Interface::Addr(a), _) => with(fd, |s| {
            if join {
                s.join_ssm_v4(&src, &g, a)
            } else {
                s.leave_ssm_v4(&src, &g, a)
            }
        })
        .map_err(|e| os(e, group, join)),
        (_, _, _, Some(i)) => {
            group_source_req(fd, v6, group, source, i, join).map_err(|e| os(e, group, join))
        }
        _ => Err(McastError::NoSuchInterface("unusable interface".into())),
    }
}

/// `struct group_source_req` (RFC 3678), as Linux lays it out.
#[repr(C)]
struct GroupSourceReq {
    interface: u32,
    group: libc::sockaddr_storage,
    source: libc::sockaddr_storage,
}

fn storage(a: IpAddr, v6: bool) -> libc::sockaddr_storage {
    let raw = RawAddr::from_socket_addr(SocketAddr::new(a, 0), v6);
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: raw holds at most a sockaddr_in6 (28 bytes), which fits the
    // 128-byte storage; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            raw.as_ptr().cast::<u8>(),
            (&mut st as *mut libc::sockaddr_storage).cast::<u8>(),
            raw.len() as usize,
        )
    };
    st
}

fn group_source_req(
    fd: RawFd,
    v6: bool,
    group: IpAddr,
    source: IpAddr,
    index: u32,
    join: bool,
) -> io::Result<()> {
    let req = GroupSourceReq {
        interface: index,
        group: storage(group, v6),
        source: storage(source, v6),
    };
    let level = if v6 {
        libc::IPPROTO_IPV6
    } else {
        libc::IPPROTO_IP
    };
    let name = if join {
        libc::MCAST_JOIN_SOURCE_GROUP
    } else {
        libc::MCAST_LEAVE_SOURCE_GROUP
    };
    // The kernel copies the request during the call.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&req as *const GroupSourceReq).cast(),
        mem::size_of::<GroupSourceReq>() as libc::socklen_t
    ))
    .map(drop)
}

/// Multicast TTL (IPv4) or hop limit (IPv6) of sent datagrams.
pub fn set_ttl(fd: RawFd, v6: bool, ttl: u32) -> io::Result<()> {
    with(fd, |s| {
        if v6 {
            s.set_multicast_hops_v6(ttl)
        } else {
            s.set_multicast_ttl_v4(ttl)
        }
    })
}

/// The multicast TTL / hop limit in force.
pub fn ttl(fd: RawFd, v6: bool) -> io::Result<u32> {
    with(fd, |s| {
        if v6 {
            s.multicast_hops_v6()
        } else {
            s.multicast_ttl_v4()
        }
    })
}

/// Whether the sender's own host hears its multicast.
pub fn set_loop(fd: RawFd, v6: bool, on: bool) -> io::Result<()> {
    with(fd, |s| {
        if v6 {
            s.set_multicast_loop_v6(on)
        } else {
            s.set_multicast_loop_v4(on)
        }
    })
}

/// `IPV6_MULTICAST_ALL` (`linux/in6.h`; not in the libc crate).
const IPV6_MULTICAST_ALL: libc::c_int = 29;

/// `IP_MULTICAST_ALL` / `IPV6_MULTICAST_ALL`: whether the socket hears
/// every group this host joined on its port (the default) or only those it
/// joined itself. On an IPv6 socket both (it hears IPv4 as v4-mapped).
pub fn set_multicast_all(fd: RawFd, v6: bool, on: bool) -> io::Result<()> {
    let v = libc::c_int::from(on);
    if v6 {
        super::socket::setsockopt_int(fd, libc::IPPROTO_IPV6, IPV6_MULTICAST_ALL, v)?;
        let _ = super::socket::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, v);
        Ok(())
    } else {
        super::socket::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, v)
    }
}

/// The loopback setting in force.
pub fn loop_enabled(fd: RawFd, v6: bool) -> io::Result<bool> {
    with(fd, |s| {
        if v6 {
            s.multicast_loop_v6()
        } else {
            s.multicast_loop_v4()
        }
    })
}

/// The interface multicast leaves by.
pub fn set_interface(fd: RawFd, v6: bool, iface: &Interface) -> Result<(), McastError> {
    let r = match (v6, iface) {
        (false, Interface::Addr(a)) => with(fd, |s| s.set_multicast_if_v4(a)),
        (false, other) => {
            let i = index_of(other)?;
            // IP_MULTICAST_IF with an ip_mreqn selects by index.
            let req = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: i as libc::c_int,
            };
            // The kernel copies the request during the call.
            syscall!(setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&req as *const libc::ip_mreqn).cast(),
                mem::size_of::<libc::ip_mreqn>() as libc::socklen_t
            ))
            .map(drop)
        }
        (true, other) => {
            let i = index_of(other)?;
            with(fd, |s| s.set_multicast_if_v6(i))
        }
    };
    r.map_err(McastError::Os)
}

/// The interface index (IPv6) or address (IPv4, as an index of 0 and the
/// address) multicast leaves by.
pub fn interface(fd: RawFd, v6: bool) -> io::Result<Interface> {
    if v6 {
        Ok(match with(fd, |s| s.multicast_if_v6())? {
            0 => Interface::Any,
            i => Interface::Index(i),
        })
    } else {
        let a = with(fd, |s| s.multicast_if_v4())?;
        Ok(if a.is_unspecified() {
            Interface::Any
        } else {
            Interface::Addr(a)
        })
    }
}

/// `SO_BROADCAST`.
pub fn set_broadcast(fd: RawFd, on: bool) -> io::Result<()> {
    with(fd, |s| s.set_broadcast(on))
}

/// `SO_BROADCAST` in force.
pub fn broadcast(fd: RawFd) -> io::Result<bool> {
    with(fd, |s| s.broadcast())
}
