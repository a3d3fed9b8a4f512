//! Header arrays for `recvmmsg(2)` / `sendmmsg(2)` (and their one-message
//! forms `recvmsg`/`sendmsg`, used by the `simple` baseline).
//!
//! The calls are synchronous: the kernel reads the headers, names, control
//! areas and slot memory only during the call, so nothing here outlives it.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use super::addr::RawAddr;
use super::addr::SrcIp;
use super::cmsg::{CmsgSpace, RecvCmsg, SEND_CMSG_LEN, write_send};
use super::meta::{RecvMeta, Transmit};
use crate::bufring::{HEADROOM, Lent, NAME_LEN, Pool, RECV_CMSG_LEN};

/// Preallocated headers for up to `batch` messages per call.
pub(crate) struct MmsgBufs {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<RawAddr>,
    ctrls: Vec<CmsgSpace<RECV_CMSG_LEN>>,
    send_ctrls: Vec<CmsgSpace<SEND_CMSG_LEN>>,
    slots: Vec<u32>,
    reserved: usize,
}

impl MmsgBufs {
    pub fn new(batch: usize) -> Self {
        let batch = batch.max(1);
        // SAFETY: mmsghdr and iovec are plain old data; all-zero is valid
        // (null pointers, zero lengths).
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        MmsgBufs {
            hdrs: vec![zero_hdr; batch],
            iovs: vec![zero_iov; batch],
            names: vec![RawAddr::zeroed(); batch],
            ctrls: vec![CmsgSpace::default(); batch],
            send_ctrls: vec![CmsgSpace::default(); batch],
            slots: vec![0; batch],
            reserved: 0,
        }
    }

    pub fn batch(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `batch` datagrams into free receive slots without
    /// blocking; returns how many arrived. Read each with [`MmsgBufs::take`].
    /// With `single`, one `recvmsg` call (the baseline).
    pub fn recv(&mut self, fd: RawFd, pool: &mut Pool, single: bool) -> io::Result<usize> {
        let want = if single { 1 } else { self.hdrs.len() };
        let cap = pool.slot_size() - HEADROOM;
        let mut n = 0;
        while n < want {
            let Some(slot) = pool.reserve_recv() else {
                break;
            };
            self.slots[n] = slot;
            self.arm(
                n,
                libc::iovec {
                    // SAFETY: HEADROOM < slot size, so the pointer stays in the slot.
                    iov_base: unsafe { pool.slot_addr(slot).add(HEADROOM) }.cast(),
                    iov_len: cap,
                },
            );
            n += 1;
        }
        self.reserved = n;
        if n == 0 {
            return Ok(0);
        }
        // recvmmsg(sockfd, msgvec, vlen, flags, timeout): "receives multiple
        // messages on a socket"; MSG_DONTWAIT makes it return what is queued
        // now; a null timeout means no timeout. The headers point at names,
        // control areas and reserved slots that nothing else touches during
        // the call.
        let res = if single {
            syscall!(recvmsg(fd, &mut self.hdrs[0].msg_hdr, libc::MSG_DONTWAIT)).map(|len| {
                self.hdrs[0].msg_len = len as u32;
                1
            })
        } else {
            syscall!(recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut()
            ))
            .map(|k| k as usize)
        };
        match res {
            Ok(k) => {
                for i in k..n {
                    pool.unreserve(self.slots[i]);
                }
                self.reserved = k;
                Ok(k)
            }
            Err(e) => {
                for i in 0..n {
                    pool.unreserve(self.slots[i]);
                }
                self.reserved = 0;
                Err(e)
            }
        }
    }

    /// Receives one datagram on socket `sock` (`fd`) into `lent`'s slot,
    /// after [`HEADROOM`], waiting for it as the socket says (a blocking
    /// socket: until one comes, a signal, or its `SO_RCVTIMEO`, then
    /// `EAGAIN`), unless `flags` say `MSG_DONTWAIT`. The parked `uring` worker's receive. The source and the
    /// control records go in the slot's headroom, where the ring's
    /// receive puts them, not in this header's arrays: the kernel writes
    /// one page, the slot's (asked every 2 ms, where each receive finds
    /// its pages cold, ~0.02x less CPU in the kv bench). On success the
    /// window of `lent` is the payload; on an error it is left covering
    /// what the call could have written.
    pub fn recv_lent(
        &mut self,
        fd: RawFd,
        sock: u16,
        flags: i32,
        lent: &mut Lent,
    ) -> io::Result<RecvMeta> {
        let cap = lent.cap().saturating_sub(HEADROOM as u32);
        lent.set_window(0, HEADROOM as u32 + cap);
        let (head, payload) = lent.bytes_mut().split_at_mut(HEADROOM);
        let (name, ctrl) = head[HEADROOM - RECV_CMSG_LEN - NAME_LEN..].split_at_mut(NAME_LEN);
        self.iovs[0] = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        let h = &mut self.hdrs[0].msg_hdr;
        point_recv(h, name.as_mut_ptr().cast(), &mut self.iovs[0], ctrl);
        // recvmsg(sockfd, msg, flags): waits for a datagram (unless
        // MSG_DONTWAIT). The header points
        // at the lent slot's name, control and payload room, which nothing
        // else touches during the call; the kernel keeps none of them
        // afterwards.
        let len = direct!(SYS_recvmsg(fd, &raw mut *h, flags))? as u32;
        let meta = received(h, sock, RawAddr::from_bytes(name), ctrl, len.min(cap));
        lent.set_window(HEADROOM as u32, meta.len);
        Ok(meta)
    }

    /// Points header `i` at its name, its control area and `iov`, for a
    /// receive.
    fn arm(&mut self, i: usize, iov: libc::iovec) {
        self.iovs[i] = iov;
        let h = &mut self.hdrs[i];
        point_recv(
            &mut h.msg_hdr,
            (&mut self.names[i] as *mut RawAddr).cast(),
            &mut self.iovs[i],
            &mut self.ctrls[i].0,
        );
        h.msg_len = 0;
    }

    /// The record of the datagram header `i` received on socket `sock`
    /// into `cap` bytes of room.
    fn meta(&self, i: usize, sock: u16, cap: u32) -> RecvMeta {
        let h = &self.hdrs[i];
        received(
            &h.msg_hdr,
            sock,
            self.names[i],
            &self.ctrls[i].0,
            h.msg_len.min(cap),
        )
    }

    /// Lends the `i`th datagram of the last [`MmsgBufs::recv`] (which
    /// arrived on socket `sock`) with its record. `None` if the pool refused
    /// the slot (cannot happen for a reserved one).
    pub fn take(&mut self, i: usize, sock: u16, pool: &mut Pool) -> Option<(Lent, RecvMeta)> {
        debug_assert!(i < self.reserved);
        let meta = self.meta(i, sock, (pool.slot_size() - HEADROOM) as u32);
        let lent = pool.lend(self.slots[i], HEADROOM as u32, meta.len)?;
        Some((lent, meta))
    }

    /// Sends the transmits at the front of `txs` (at most `batch`, all from
    /// the socket of the first one, `fd`) without blocking. Returns how many
    /// the kernel took; `Err` when the first one failed (its errno tells why).
    pub fn send(
        &mut self,
        fd: RawFd,
        pool: &Pool,
        txs: &[Transmit],
        single: bool,
    ) -> io::Result<usize> {
        let max = if single { 1 } else { self.hdrs.len() }.min(txs.len());
        let sock = txs.first().map_or(0, |t| t.sock);
        let n = txs[..max].iter().take_while(|t| t.sock == sock).count();
        for (i, t) in txs[..n].iter().enumerate() {
            self.names[i] = t.dst;
            self.iovs[i] = libc::iovec {
                // SAFETY: off + len lie inside the slot (checked when queued).
                iov_base: unsafe { pool.slot_addr(t.slot).add(t.off as usize) }.cast(),
                iov_len: t.len as usize,
            };
            point_send(
                &mut self.hdrs[i].msg_hdr,
                &mut self.names[i],
                &mut self.iovs[i],
                &mut self.send_ctrls[i],
                t,
            );
        }
        if n == 0 {
            return Ok(0);
        }
        // sendmmsg(sockfd, msgvec, vlen, flags): "returns the number of
        // messages sent from msgvec; if this is less than vlen, the caller can
        // retry with a further sendmmsg() call to send the remaining
        // messages"; an error is returned only if no message was sent.
        if single {
            syscall!(sendmsg(fd, &self.hdrs[0].msg_hdr, libc::MSG_DONTWAIT)).map(|_| 1)
        } else {
            syscall!(sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT
            ))
            .map(|k| k as usize)
        }
    }
}

/// Whether `t` goes without a control message: no segment size for the
/// kernel to cut by, no source address, mark or timestamp request.
fn plain(t: &Transmit) -> bool {
    t.segment_cmsg().is_none() && t.src == SrcIp::Any && t.tos.is_none() && t.ts_id.is_none()
}

/// Points `h` at the destination `name` (empty: the connected peer), the
/// one buffer `iov` and, when `t` needs any, its control messages written
/// into `ctrl`.
fn point_send(
    h: &mut libc::msghdr,
    name: &mut RawAddr,
    iov: &mut libc::iovec,
    ctrl: &mut CmsgSpace<SEND_CMSG_LEN>,
    t: &Transmit,
) {
    h.msg_name = name.name_ptr();
    h.msg_namelen = name.len();
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    // Most sends carry no control message (a train the socket's own
    // UDP_SEGMENT cuts needs none): no writer for them.
    let len = if plain(t) {
        0
    } else {
        write_send(ctrl, t.segment_cmsg(), t.src, t.tos_cmsg(), t.ts_id)
    };
    if len > 0 {
        h.msg_control = ctrl.0.as_mut_ptr().cast();
        h.msg_controllen = len;
    } else {
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
    }
    h.msg_flags = 0;
}

/// One datagram from `fd` into `buf` by `recvmsg(2)` (blocking as the
/// socket is; the rest of a longer one is dropped, as `recv_from` drops
/// it), with its source and the control messages the engine reads. For
/// programs with a socket loop of their own ([`crate::os::recv_from_hops`]).
pub fn recv_one(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, RawAddr, RecvCmsg)> {
    let mut name = RawAddr::zeroed();
    let mut ctrl = CmsgSpace::<RECV_CMSG_LEN>::default();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data (pointers and integers): all zeros is
    // an empty header, filled in next.
    let mut h: libc::msghdr = unsafe { mem::zeroed() };
    point_recv(
        &mut h,
        (&mut name as *mut RawAddr).cast(),
        &mut iov,
        &mut ctrl.0,
    );
    // recvmsg(sockfd, msg, 0): the header points at `name`, `iov` (over
    // `buf`) and `ctrl`, all alive and not otherwise touched during the
    // call; the kernel keeps none of them afterwards.
    let len = syscall!(recvmsg(fd, &mut h, 0))? as usize;
    let m = received(&h, 0, name, &ctrl.0, 0);
    Ok((len.min(buf.len()), m.src, m.cmsg))
}

/// Points `h` at `name` (room for a `sockaddr_in6`), `iov` and `ctrl`,
/// for a receive.
fn point_recv(
    h: &mut libc::msghdr,
    name: *mut libc::c_void,
    iov: &mut libc::iovec,
    ctrl: &mut [u8],
) {
    h.msg_name = name;
    h.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h.msg_control = ctrl.as_mut_ptr().cast();
    h.msg_controllen = ctrl.len();
    h.msg_flags = 0;
}

/// The record of a datagram of `len` bytes (as kept) received on socket
/// `sock` through `h` (set by [`point_recv`]): its source (`name`, the
/// bytes of its name room), whether it was cut, and the records in `ctrl`.
fn received(h: &libc::msghdr, sock: u16, mut name: RawAddr, ctrl: &[u8], len: u32) -> RecvMeta {
    name.len = h
        .msg_namelen
        .min(mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t);
    let ctl_len = h.msg_controllen.min(ctrl.len());
    RecvMeta {
        sock,
        src: name,
        len,
        truncated: h.msg_flags & libc::MSG_TRUNC != 0,
        cmsg: RecvCmsg::parse(&ctrl[..ctl_len]),
    }
}

/// Sends `data` at once (`MSG_DONTWAIT`), one datagram as `t` says (its
/// destination, source and mark; not its slot, unused): from bytes the
/// caller holds, with no copy into a send slot. The parked `uring`
/// worker's answer while nothing is queued before it. A datagram without
/// control messages (most answers) goes by `sendto`, which spares the
/// kernel copying in and checking a message header and its vector: ~0.4 µs
/// of the ~20 µs a parked kv request kept its CPU busy, traced (PERF.md,
/// the kv bench).
pub fn send_bytes(fd: RawFd, data: &[u8], t: &Transmit) -> io::Result<()> {
    let mut name = t.dst;
    if plain(t) {
        // sendto(sockfd, buf, len, MSG_DONTWAIT, dest_addr, addrlen): `data`
        // and `name` (null with length 0 for the connected peer) are alive
        // for the call; the kernel keeps neither.
        return direct!(SYS_sendto(
            fd,
            data.as_ptr(),
            data.len(),
            libc::MSG_DONTWAIT,
            name.name_ptr().cast_const(),
            name.len()
        ))
        .map(|_| ());
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut ctrl = CmsgSpace::default();
    // SAFETY: msghdr is plain data (pointers and integers): all zeros is
    // an empty header, filled in next.
    let mut h: libc::msghdr = unsafe { mem::zeroed() };
    point_send(&mut h, &mut name, &mut iov, &mut ctrl, t);
    // sendmsg(sockfd, msg, MSG_DONTWAIT): the header points at `name`,
    // `iov` (over `data`) and `ctrl`, all alive for the call; the kernel
    // reads them during the call and keeps nothing.
    syscall!(sendmsg(fd, &h, libc::MSG_DONTWAIT)).map(|_| ())
}
