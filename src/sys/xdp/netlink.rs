//! What the kernel knows about links, routes and neighbours, asked over
//! `NETLINK_ROUTE`: an interface's MAC address, MTU and receive queues; the
//! route to a destination (its interface, gateway and preferred source);
//! and a neighbour's MAC address. Frames the `xdp` backend builds need all
//! three; the kernel's answer is authoritative (nothing is learned from
//! frames a stranger could forge).
//!
//! The parsers are plain functions over bytes, fuzzed with the rest.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states whose address can be used: REACHABLE, STALE, DELAY,
/// PROBE, PERMANENT, NOARP.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80 | 0x40;

/// A link as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Its receive queues.
    pub rx_queues: u32,
}

/// The kernel's route to one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The interface it leaves by.
    pub oif: u32,
    /// The gateway, or `None` when the destination is on the link.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would choose.
    pub prefsrc: Option<IpAddr>,
}

impl Route {
    /// Whose MAC address a frame to `dst` carries.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

/// A `NETLINK_ROUTE` socket for one thread's questions.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// Appends an attribute (`rtattr`), padded to 4 bytes.
fn put_attr(msg: &mut Vec<u8>, ty: u16, data: &[u8]) {
    msg.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(data);
    while msg.len() % 4 != 0 {
        msg.push(0);
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// Walks the attributes in `b`: `(type, data)`; stops at the first one
/// that does not fit.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, data))
    })
}

/// One reply message: its type and body (after `nlmsghdr`), or the errno
/// of an `NLMSG_ERROR`.
pub fn parse_reply(b: &[u8]) -> Result<(u16, &[u8]), i32> {
    if b.len() < 16 {
        return Err(libc::EBADMSG);
    }
    let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    if len < 16 || len > b.len() {
        return Err(libc::EBADMSG);
    }
    let body = &b[16..len];
    match ty {
        NLMSG_ERROR => {
            let e = body
                .get(..4)
                .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                .ok_or(libc::EBADMSG)?;
            // The kernel sends a negative errno (0: an acknowledgement);
            // anything else is not an answer it gives.
            Err(match e {
                0 => libc::ENOMSG,
                e => e.checked_neg().filter(|&n| n > 0).unwrap_or(libc::EBADMSG),
            })
        }
        NLMSG_DONE => Err(libc::ENOENT),
        _ => Ok((ty, body)),
    }
}

/// Reads an `RTM_NEWLINK` body.
pub fn parse_link(body: &[u8]) -> Option<LinkInfo> {
    let mut info = LinkInfo {
        mac: [0; 6],
        mtu: 0,
        rx_queues: 1,
    };
    for (ty, d) in attrs(body.get(16..)?) {
        match ty {
            IFLA_ADDRESS if d.len() == 6 => info.mac.copy_from_slice(d),
            IFLA_MTU if d.len() == 4 => info.mtu = u32::from_ne_bytes(d.try_into().ok()?),
            IFLA_NUM_RX_QUEUES if d.len() == 4 => {
                info.rx_queues = u32::from_ne_bytes(d.try_into().ok()?).max(1)
            }
            _ => {}
        }
    }
    Some(info)
}

/// Reads an `RTM_NEWROUTE` body.
pub fn parse_route(body: &[u8]) -> Option<Route> {
    let family = *body.first()?;
    let mut r = Route {
        oif: 0,
        gateway: None,
        prefsrc: None,
    };
    for (ty, d) in attrs(body.get(12..)?) {
        match ty {
            RTA_OIF if d.len() == 4 => r.oif = u32::from_ne_bytes(d.try_into().ok()?),
            RTA_GATEWAY => r.gateway = ip_from(family, d),
            RTA_PREFSRC => r.prefsrc = ip_from(family, d),
            _ => {}
        }
    }
    (r.oif != 0).then_some(r)
}

/// Reads an `RTM_NEWNEIGH` body: the MAC address, if the entry is usable.
pub fn parse_neigh(body: &[u8]) -> Option<[u8; 6]> {
    let state = u16::from_ne_bytes([*body.get(8)?, *body.get(9)?]);
    if state & NUD_USABLE == 0 {
        return None;
    }
    attrs(body.get(12..)?)
        .find(|(ty, d)| *ty == NDA_LLADDR && d.len() == 6)
        .and_then(|(_, d)| d.try_into().ok())
}

impl Netlink {
    /// Opens the socket.
    pub fn new() -> io::Result<Self> {
        let raw = syscall!(socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE
        ))?;
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Single-entry gets (RTM_GETNEIGH by address) want strict checking.
        let one: libc::c_int = 1;
        let _ = syscall!(setsockopt(
            raw,
            libc::SOL_NETLINK,
            libc::NETLINK_GET_STRICT_CHK,
            (&one as *const libc::c_int).cast(),
            4
        ));
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 16 << 10],
        })
    }

    /// Sends one request (`ty`, body) and returns the reply's body (of
    /// type `want`).
    fn ask(&mut self, ty: u16, body: &[u8], want: u16) -> io::Result<&[u8]> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        let fd = self.fd.as_raw_fd();
        // The kernel is the peer (address zero): a plain send reaches it.
        syscall!(send(fd, msg.as_ptr().cast(), msg.len(), 0))?;
        loop {
            let n = syscall!(recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0))?;
            let b = &self.buf[..n as usize];
            // A stale answer to an earlier question (a timed-out one) is skipped.
            if b.len() >= 12 && u32::from_ne_bytes([b[8], b[9], b[10], b[11]]) != self.seq {
                continue;
            }
            return match parse_reply(&self.buf[..n as usize]) {
                Ok((t, body)) if t == want => Ok(body),
                Ok(_) => Err(io::Error::from_raw_os_error(libc::EBADMSG)),
                Err(errno) => Err(io::Error::from_raw_os_error(errno)),
            };
        }
    }

    /// Interface `ifindex`'s MAC address, MTU and receive queues.
    pub fn link(&mut self, ifindex: u32) -> io::Result<LinkInfo> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let b = self.ask(RTM_GETLINK, &body, RTM_NEWLINK)?;
        parse_link(b).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADMSG))
    }

    /// The route the kernel would use to `dst`.
    pub fn route(&mut self, dst: IpAddr) -> io::Result<Route> {
        let bytes = ip_bytes(dst);
        let mut body = vec![0u8; 12];
        body[0] = family_of(dst);
        body[1] = (bytes.len() * 8) as u8;
        put_attr(&mut body, RTA_DST, &bytes);
        let b = self.ask(RTM_GETROUTE, &body, RTM_NEWROUTE)?;
        parse_route(b).ok_or_else(|| io::Error::from_raw_os_error(libc::ENETUNREACH))
    }

    /// The MAC address of neighbour `ip` on `ifindex`, if the kernel has a
    /// usable entry.
    pub fn neighbour(&mut self, ip: IpAddr, ifindex: u32) -> io::Result<Option<[u8; 6]>> {
        let mut body = vec![0u8; 12];
        body[0] = family_of(ip);
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        put_attr(&mut body, NDA_DST, &ip_bytes(ip));
        match self.ask(RTM_GETNEIGH, &body, RTM_NEWNEIGH) {
            Ok(b) => Ok(parse_neigh(b)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_reads_loopback_and_its_route() {
        let mut nl = Netlink::new().unwrap();
        let lo = nl.link(1).unwrap();
        assert_eq!(lo.mac, [0; 6], "loopback has an all-zero address");
        assert!(lo.mtu >= 1280 && lo.rx_queues >= 1, "{lo:?}");
        let r = nl.route("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(r.oif, 1);
        assert_eq!(r.gateway, None);
        assert_eq!(r.prefsrc, Some("127.0.0.1".parse().unwrap()));
        assert!(nl.link(u32::MAX >> 1).is_err(), "no such link");
    }

    #[test]
    fn netlink_attrs_stop_at_what_does_not_fit() {
        let mut m = Vec::new();
        put_attr(&mut m, 7, &[1, 2, 3]);
        put_attr(&mut m, 8, &[]);
        let all: Vec<_> = attrs(&m).collect();
        assert_eq!(all, vec![(7, &[1u8, 2, 3][..]), (8, &[][..])]);
        m.extend_from_slice(&[200, 0, 1, 0]); // claims 200 bytes
        assert_eq!(attrs(&m).count(), 2);
        assert_eq!(parse_reply(&[0; 8]), Err(libc::EBADMSG));
        // An error message whose errno is no errno (found by the fuzzer:
        // i32::MIN could not be negated).
        let err = |e: i32| {
            let mut m = vec![0u8; 20];
            m[..4].copy_from_slice(&20u32.to_ne_bytes());
            m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m[16..20].copy_from_slice(&e.to_ne_bytes());
            parse_reply(&m).map(|(t, _)| t)
        };
        assert_eq!(err(i32::MIN), Err(libc::EBADMSG));
        assert_eq!(err(5), Err(libc::EBADMSG));
        assert_eq!(err(-libc::ENOENT), Err(libc::ENOENT));
        assert_eq!(err(0), Err(libc::ENOMSG));
    }
}
