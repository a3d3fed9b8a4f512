//! Socket addresses in the kernel's layout, and the small conversions every
//! caller needs.

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address in the kernel's layout, inline.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RawAddr {
    pub(super) storage: libc::sockaddr_in6,
    pub(super) len: libc::socklen_t,
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

/// `ip` with a v4-mapped IPv6 address shown as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The destination of every datagram a socket bound to `bound` receives,
/// with the interface its address names (an IPv6 scope; 0: none), when
/// there is a single one: the kernel delivers to a socket bound to one
/// unicast address only what was sent to that address. `None` for the
/// wildcard, groups and IPv4's limited broadcast, where each datagram's
/// own destination (and the receiving interface) must come from the
/// kernel (`IP_PKTINFO`).
pub fn fixed_destination(bound: SocketAddr) -> Option<(IpAddr, u32)> {
    let ip = canonical(bound).ip();
    let many =
        ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    let scope = match bound {
        SocketAddr::V6(a) => a.scope_id(),
        SocketAddr::V4(_) => 0,
    };
    (!many).then_some((ip, scope))
}

/// The unspecified address (`0.0.0.0` or `::`) of `like`'s family, with
/// `port`: what a client binds to when it sends to `like`.
pub fn unspecified_like(like: SocketAddr, port: u16) -> SocketAddr {
    if like.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    }
}

/// The source address of a send, in the sending socket's family: what a
/// `IP_PKTINFO` (`ipi_spec_dst`) or `IPV6_PKTINFO` (`ipi6_addr`,
/// `ipi6_ifindex`) control message carries. IPv4 sources of an IPv6
/// socket are IPv4-mapped `V6` addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SrcIp {
    /// Let the kernel choose (the bound address, or the route's).
    #[default]
    Any,
    /// From this IPv4 address (an IPv4 socket).
    V4(Ipv4Addr),
    /// From this IPv6 address (an IPv6 socket), out of this interface
    /// (0: the route's; needed for link-local addresses).
    V6(Ipv6Addr, u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_destination_only_where_one_address_arrives() {
        let f = |a: &str| fixed_destination(a.parse().unwrap());
        assert_eq!(f("127.0.0.9:53"), Some(("127.0.0.9".parse().unwrap(), 0)));
        assert_eq!(f("[::1]:53"), Some(("::1".parse().unwrap(), 0)));
        assert_eq!(f("[fe80::1%7]:53"), Some(("fe80::1".parse().unwrap(), 7)));
        assert_eq!(
            f("[::ffff:10.0.0.1]:53"),
            Some(("10.0.0.1".parse().unwrap(), 0))
        );
        for many in [
            "0.0.0.0:53",
            "[::]:53",
            "239.1.2.3:5000",
            "[ff02::fb]:5353",
            "255.255.255.255:67",
            "[::ffff:0.0.0.0]:53",
        ] {
            assert_eq!(f(many), None, "{many}");
        }
    }

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
    fn unspecified_follows_the_family() {
        let a = unspecified_like("[::1]:5".parse().unwrap(), 0);
        assert_eq!(a, "[::]:0".parse().unwrap());
        let b = unspecified_like("10.0.0.1:5".parse().unwrap(), 7);
        assert_eq!(b, "0.0.0.0:7".parse().unwrap());
    }
}
