//! The socket error queue (`MSG_ERRQUEUE`): ICMP and local errors, each
//! with the destination of the datagram that caused it.

use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::addr::{RawAddr, canonical};
use super::cmsg::{Cmsg, CmsgIter};
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
    let peer = name.to_socket_addr().map(canonical);
    Some(CmsgIter::new(ctl).find_map(|c| parse_extended_err(c, peer)))
}

/// A `sock_extended_err` record (`IP_RECVERR`/`IPV6_RECVERR`), if `c` is one.
fn parse_extended_err(c: Cmsg<'_>, peer: Option<SocketAddr>) -> Option<QueuedError> {
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
    Some(QueuedError {
        errno: ee.ee_errno as i32,
        origin: ee.ee_origin,
        icmp_type: ee.ee_type,
        icmp_code: ee.ee_code,
        info: ee.ee_info,
        peer,
    })
}

/// Takes the pending socket error (`SO_ERROR`), clearing it.
pub fn take_socket_error(fd: RawFd) -> Option<i32> {
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(0) | Err(_) => None,
        Ok(e) => Some(e),
    }
}
