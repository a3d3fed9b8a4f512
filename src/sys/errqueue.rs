//! The socket error queue (`MSG_ERRQUEUE`): ICMP and local errors, each
//! with the destination of the datagram that caused it, and the TX
//! timestamps a send asked for (`SO_EE_ORIGIN_TIMESTAMPING`, with the ID
//! the send carried in `ee_data` and the time in `SCM_TIMESTAMPING`).

use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::addr::{RawAddr, canonical};
use super::cmsg::{Cmsg, CmsgIter, SO_TIMESTAMPING, timespec_ns};
use super::socket::getsockopt_int;

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

/// One entry of the error queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// An error about a datagram sent earlier.
    Error(QueuedError),
    /// The software TX timestamp of the send that carried `id`:
    /// nanoseconds since the epoch (`CLOCK_REALTIME`).
    TxTimestamp {
        /// The send's `SCM_TS_OPT_ID`.
        id: u32,
        /// When the kernel handed it to the device.
        ns: u64,
    },
    /// An entry the engine does not understand (counted, dropped).
    Unknown,
}

/// Reads one entry of the socket's error queue (`MSG_ERRQUEUE`) without
/// blocking: `None` when the queue is empty.
pub fn read_errqueue(fd: RawFd) -> Option<Queued> {
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
    let peer = name.to_socket_addr().map(canonical);
    Some(parse_entry(ctl, peer))
}

/// What one error-queue entry's control area says.
pub(crate) fn parse_entry(ctl: &[u8], peer: Option<SocketAddr>) -> Queued {
    let Some((e, data)) = CmsgIter::new(ctl).find_map(|c| parse_extended_err(c, peer)) else {
        return Queued::Unknown;
    };
    if e.origin != libc::SO_EE_ORIGIN_TIMESTAMPING {
        return Queued::Error(e);
    }
    // struct scm_timestamping { struct timespec ts[3]; }: ts[0] is the
    // software stamp (ts[2] hardware; ts[1] is unused).
    let ns = CmsgIter::new(ctl)
        .find(|c| (c.level, c.ty) == (libc::SOL_SOCKET, SO_TIMESTAMPING))
        .and_then(|c| timespec_ns(c.data));
    match ns {
        Some(ns) => Queued::TxTimestamp { id: data, ns },
        None => Queued::Unknown,
    }
}

/// A `sock_extended_err` record (`IP_RECVERR`/`IPV6_RECVERR`), if `c` is
/// one, with its `ee_data`.
fn parse_extended_err(c: Cmsg<'_>, peer: Option<SocketAddr>) -> Option<(QueuedError, u32)> {
    let is_err = matches!(
        (c.level, c.ty),
        (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
    );
    if !is_err || c.data.len() < mem::size_of::<libc::sock_extended_err>() {
        return None;
    }
    // SAFETY: the record holds a whole sock_extended_err (checked above),
    // plain old data; read_unaligned copes with any alignment.
    let ee: libc::sock_extended_err = unsafe { std::ptr::read_unaligned(c.data.as_ptr().cast()) };
    let e = QueuedError {
        errno: ee.ee_errno as i32,
        origin: ee.ee_origin,
        icmp_type: ee.ee_type,
        icmp_code: ee.ee_code,
        info: ee.ee_info,
        peer,
    };
    Some((e, ee.ee_data))
}

/// Takes the pending socket error (`SO_ERROR`), clearing it.
pub fn take_socket_error(fd: RawFd) -> Option<i32> {
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(0) | Err(_) => None,
        Ok(e) => Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cmsg::CmsgWriter;
    use super::*;

    /// A `sock_extended_err` as the kernel lays it out: ee_errno (u32),
    /// ee_origin, ee_type, ee_code, ee_pad (u8 each), ee_info, ee_data.
    fn ee(origin: u8, errno: u32, data: u32) -> Vec<u8> {
        let mut b = errno.to_ne_bytes().to_vec();
        b.extend_from_slice(&[origin, 0, 0, 0]);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&data.to_ne_bytes());
        assert_eq!(b.len(), mem::size_of::<libc::sock_extended_err>());
        b
    }

    #[test]
    fn tells_a_timestamp_from_an_error() {
        let mut stamps = vec![0u8; 48];
        stamps[..8].copy_from_slice(&1_700_000_000i64.to_ne_bytes());
        stamps[8..16].copy_from_slice(&5i64.to_ne_bytes());
        let mut buf = vec![0u8; 256];
        let mut w = CmsgWriter::new(&mut buf);
        assert!(w.push(libc::SOL_SOCKET, SO_TIMESTAMPING, &stamps));
        let e = ee(libc::SO_EE_ORIGIN_TIMESTAMPING, libc::ENOMSG as u32, 77);
        assert!(w.push(libc::SOL_IP, libc::IP_RECVERR, &e));
        let n = w.len();
        assert_eq!(
            parse_entry(&buf[..n], None),
            Queued::TxTimestamp {
                id: 77,
                ns: 1_700_000_000_000_000_005
            }
        );
        // The same entry without its stamp, or with a zero one: unknown.
        let mut buf2 = vec![0u8; 256];
        let mut w = CmsgWriter::new(&mut buf2);
        assert!(w.push(libc::SOL_IPV6, libc::IPV6_RECVERR, &e));
        let n2 = w.len();
        assert_eq!(parse_entry(&buf2[..n2], None), Queued::Unknown);
        // An ICMP error stays an error.
        let mut buf3 = vec![0u8; 256];
        let mut w = CmsgWriter::new(&mut buf3);
        let icmp = ee(libc::SO_EE_ORIGIN_ICMP, libc::ECONNREFUSED as u32, 0);
        assert!(w.push(libc::SOL_IP, libc::IP_RECVERR, &icmp));
        let n3 = w.len();
        assert!(matches!(
            parse_entry(&buf3[..n3], None),
            Queued::Error(QueuedError {
                errno: libc::ECONNREFUSED,
                ..
            })
        ));
        assert_eq!(parse_entry(&[], None), Queued::Unknown);
    }
}
