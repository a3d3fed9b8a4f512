//! One worker's io_uring: setup, the registered buffer ring and files, the
//! submission entries the `uring` backend uses, and its completions.
//!
//! This module knows the kernel's side only; the loop that drives it is in
//! `backend/uring.rs`.
//!
//! - Receive: one multishot `RecvMsgMulti` per socket (a registered file
//!   when the kernel allows) selecting buffers from the pool's
//!   provided-buffer ring (group [`BGID`]). The kernel writes
//!   `io_uring_recvmsg_out`, the source name
//!   ([`crate::bufring::NAME_LEN`] bytes), the control data
//!   ([`crate::bufring::RECV_CMSG_LEN`] bytes) and the payload
//!   into the buffer it picks, and names it in the CQE. A CQE without
//!   `F_MORE` ends the multishot (ring empty: `-ENOBUFS`; an error from the
//!   socket; cancellation).
//! - Send: a plain datagram is `IORING_OP_SEND` with a destination address
//!   (no msghdr for the kernel to copy); a GSO train or a send from a
//!   chosen source is `IORING_OP_SENDMSG` with its `UDP_SEGMENT` and
//!   `IP_PKTINFO`/`IPV6_PKTINFO` control messages. The msghdr, iovec, address and
//!   control data of each send live in a [`SendHdr`] owned here, one per
//!   send in flight, taken off a free list when pushed and given back when
//!   its CQE is reaped.
//!   With zero copy on, a plain send of at least the threshold is
//!   `IORING_OP_SEND_ZC` from the pool's arena (registered as fixed
//!   buffer 0): its first CQE says the result (`F_MORE`: a notification
//!   follows), the second (`F_NOTIF`) that the kernel no longer reads the
//!   slot, and whether it copied after all (`SEND_ZC_REPORT_USAGE`); the
//!   send header, and the slot, stay taken until then.
//! - Wake: a multishot poll on the worker's eventfd.
//! - `SINGLE_ISSUER` + `DEFER_TASKRUN` when the kernel has them:
//!   completions are produced only when the worker enters the ring to wait.
//! - Enter: through the ring's index in the worker thread's table of
//!   registered rings when the kernel has one (`enter`), else by fd; with
//!   `IORING_ENTER_NO_IOWAIT` where the kernel has it, so that a worker
//!   waiting for datagrams is idle, not waiting for I/O.
//!
//! What each request points at, and for how long, is what the `unsafe fn`s
//! here ask of their callers.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::types::{Fd, Fixed, Timespec};
use io_uring::{IoUring, opcode, squeue, types};

use super::addr::RawAddr;
use super::cmsg::{CmsgSpace, RecvCmsg, SEND_CMSG_LEN, write_send};
use super::meta::{RecvMeta, Transmit};
use crate::bufring::{NAME_LEN, Pool, RECV_CMSG_LEN};

mod enter;
mod op;
mod setup;
use enter::RegisteredRing;
pub use op::{Completion, Op};
pub use setup::RingOpts;
use setup::{build, explain_memlock};

/// `IORING_SEND_ZC_REPORT_USAGE` and the bit its notification sets when
/// the kernel copied (`IORING_NOTIF_USAGE_ZC_COPIED`).
pub mod sys_zc {
    /// Asks the notification to say whether the bytes were copied.
    pub const REPORT_USAGE: u16 = 8;
    /// In the notification's `res`: they were.
    pub const COPIED: u32 = 1 << 31;
}

/// Buffer group id of the receive ring.
pub const BGID: u16 = 0;

/// Everything a send SQE points at, kept alive until its CQE.
#[repr(C)]
struct SendHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: RawAddr,
    cmsg: CmsgSpace<SEND_CMSG_LEN>,
    tx: Option<Transmit>,
}

/// A worker's io_uring with its registered files and buffer ring.
pub struct Ring {
    ring: IoUring,
    recv_msg: Box<libc::msghdr>,
    hdrs: Box<[SendHdr]>,
    hdr_free: Vec<u32>,
    fds: Vec<RawFd>,
    fixed: bool,
    completions: Vec<Completion>,
    /// Sends of at least this many bytes go zero-copy (and whether the
    /// arena is registered as fixed buffer 0).
    zc_min: Option<u32>,
    zc_fixed: bool,
    /// What the last timer SQE points at; the kernel copies it when it
    /// takes the SQE in (at the next submit).
    timer_ts: Box<Timespec>,
    /// A timer SQE is queued and perhaps not yet submitted: its timespec
    /// must not be rewritten before it is.
    timer_queued: bool,
    /// The ring in the worker thread's table of rings, when the kernel
    /// lets it: waits enter by that index.
    registered: Option<RegisteredRing>,
    /// What `io_uring_enter` is given: that index or the ring's fd, and
    /// the flags every enter carries (`REGISTERED_RING`, `NO_IOWAIT`).
    enter_as: (u32, libc::c_uint),
}

impl Ring {
    /// Sets up a ring for the sockets `fds`, registers them (as fixed
    /// files, when the kernel lets it) and `pool`'s buffer ring, and
    /// prepares `sends` send headers.
    ///
    /// # Safety
    ///
    /// The kernel writes received datagrams into `pool`'s receive slots for
    /// as long as the ring exists: `pool` must outlive the returned `Ring`,
    /// or the ring must be leaked (`mem::forget`) together with the pool if
    /// requests may still be in flight when it goes.
    pub unsafe fn new(
        fds: &[RawFd],
        pool: &Pool,
        sends: usize,
        opts: &RingOpts,
    ) -> io::Result<Ring> {
        let ring = build(opts).map_err(|e| explain_memlock(e, opts.sq_entries))?;
        // A send the socket cannot take is polled, and after many wake-ups
        // that find no room (a congested link) the kernel hands it to an
        // io-wq thread that blocks in sendmsg: one thread per such send,
        // up to the process's task limit (156 threads in one congested-link
        // run here). One per socket is as many as can make progress; the
        // rest wait in io-wq's queue, where give-ups and the stop cancel
        // them. (Per thread; older kernels refuse, and stay unbounded.)
        let mut iowq = [0, u32::try_from(fds.len().max(1)).unwrap_or(u32::MAX)];
        let _ = ring.submitter().register_iowq_max_workers(&mut iowq);
        let fixed = ring.submitter().register_files(fds).is_ok();
        let registered = RegisteredRing::new(ring.as_raw_fd());
        let mut enter_as = match &registered {
            Some(r) => (r.index(), enter::REGISTERED_RING),
            // A valid fd is not negative.
            None => (ring.as_raw_fd() as u32, 0),
        };
        if ring.params().is_feature_no_iowait() {
            enter_as.1 |= enter::NO_IOWAIT;
        }
        let br = pool.ring().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the uring backend needs a pool with a buffer ring",
            )
        })?;
        // SAFETY: the buffer ring memory is owned by the pool, which the
        // caller keeps alive for as long as this ring (see # Safety).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.addr(), br.entries(), BGID, 0)
                .map_err(|e| explain_memlock(e, opts.sq_entries))?
        };
        let recv_msg = Box::new(recv_template());
        let hdrs = (0..sends)
            .map(|_| SendHdr {
                // SAFETY: plain old data; all-zero is valid.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                addr: RawAddr::zeroed(),
                cmsg: CmsgSpace::default(),
                tx: None,
            })
            .collect();
        Ok(Ring {
            completions: Vec::with_capacity(ring.params().cq_entries() as usize),
            ring,
            recv_msg,
            hdrs,
            hdr_free: (0..sends as u32).rev().collect(),
            zc_min: None,
            zc_fixed: false,
            fds: fds.to_vec(),
            fixed,
            timer_ts: Box::new(Timespec::new()),
            timer_queued: false,
            registered,
            enter_as,
        })
    }

    /// Pushes an SQE, submitting first if the queue is full.
    ///
    /// # Safety
    ///
    /// Everything `e` points at must stay valid (and, for a receive buffer,
    /// unwritten by us) until the request's last completion is reaped.
    unsafe fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps what `e` points at alive (# Safety).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.enter(0, Some(Duration::ZERO))?;
        }
    }

    /// Arms the multishot receive on socket `sock`.
    pub fn arm_recv(&mut self, sock: usize) -> io::Result<()> {
        let msg = &*self.recv_msg as *const libc::msghdr;
        let e = if self.fixed {
            opcode::RecvMsgMulti::new(Fixed(sock as u32), msg, BGID).build()
        } else {
            opcode::RecvMsgMulti::new(Fd(self.fds[sock]), msg, BGID).build()
        };
        // SAFETY: the kernel reads the boxed msghdr (owned by the ring, so
        // alive as long as any request) and writes into buffers of the
        // registered buffer ring, which `Ring::new`'s caller keeps alive.
        unsafe { self.push(&e.user_data(Op::Recv(sock as u32).encode())) }
    }

    /// Arms a multishot poll for input on `fd` (the wake-up eventfd).
    pub fn arm_wake(&mut self, fd: RawFd) -> io::Result<()> {
        let e = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build();
        // SAFETY: a poll points at no memory of ours.
        unsafe { self.push(&e.user_data(Op::Wake.encode())) }
    }

    /// Arms a multishot poll for `POLLERR` on socket `sock`: an entry on
    /// its error queue (a TX timestamp, an ICMP error).
    pub fn arm_errors(&mut self, sock: usize) -> io::Result<()> {
        let ev = libc::POLLERR as u32;
        let e = if self.fixed {
            opcode::PollAdd::new(Fixed(sock as u32), ev)
        } else {
            opcode::PollAdd::new(Fd(self.fds[sock]), ev)
        }
        .multi(true)
        .build();
        // SAFETY: a poll points at no memory of ours.
        unsafe { self.push(&e.user_data(Op::Errors(sock as u32).encode())) }
    }

    /// Arms the worker's timer ([`Op::Timer`]) to complete after `after`;
    /// with `update`, moves the one armed instead (`IORING_TIMEOUT_UPDATE`,
    /// whose own completion is an [`Op::Cancel`]'s: nothing to read; if
    /// the timer completed meanwhile, the update finds nothing and the
    /// timer's completion says so).
    pub fn arm_timer(&mut self, after: Duration, update: bool) -> io::Result<()> {
        if self.timer_queued {
            // One timespec: let the kernel take the queued SQE first.
            self.submit()?;
        }
        *self.timer_ts = Timespec::from(after);
        let ts: *const Timespec = &*self.timer_ts;
        let e = if update {
            opcode::TimeoutUpdate::new(Op::Timer.encode(), ts)
                .build()
                .user_data(Op::Cancel.encode())
        } else {
            opcode::Timeout::new(ts)
                .build()
                .user_data(Op::Timer.encode())
        };
        // SAFETY: the kernel reads the timespec when it takes the SQE in
        // (the request's prep, at the next submit) and keeps a copy; it is
        // boxed in the ring, so alive until then, and not rewritten before
        // that submit (`timer_queued`).
        unsafe { self.push(&e)? };
        self.timer_queued = true;
        Ok(())
    }

    /// Asks the kernel to cancel the request `op`.
    pub fn cancel(&mut self, op: Op) -> io::Result<()> {
        let e = opcode::AsyncCancel::new(op.encode()).build();
        // SAFETY: a cancel points at no memory of ours.
        unsafe { self.push(&e.user_data(Op::Cancel.encode())) }
    }

    /// Turns `t` into a send SQE. Returns `t` back when every send header
    /// is in flight (nothing pushed).
    ///
    /// # Safety
    ///
    /// The kernel reads `t.len` bytes at `t.off` of pool slot `t.slot` until
    /// the send's completion is reaped ([`Ring::finish_send`]): the slot
    /// must lie in `pool`, hold those bytes, and not be written or handed
    /// back to the pool until then (the caller holds a reference on it).
    pub unsafe fn push_send(&mut self, t: Transmit, pool: &Pool) -> io::Result<Option<Transmit>> {
        let Some(i) = self.hdr_free.pop() else {
            return Ok(Some(t));
        };
        let h = &mut self.hdrs[i as usize];
        h.addr = t.dst;
        // SAFETY: off + len lie inside the slot (checked when queued).
        let buf = unsafe { pool.slot_addr(t.slot).add(t.off as usize) }.cast_const();
        let ctl = write_send(&mut h.cmsg, t.segment_cmsg(), t.src, t.tos_cmsg(), t.ts_id);
        if ctl > 0 {
            // Only IORING_OP_SENDMSG (below) reads the msghdr.
            h.iov = libc::iovec {
                iov_base: buf.cast_mut().cast(),
                iov_len: t.len as usize,
            };
            h.msg.msg_name = h.addr.name_ptr();
            h.msg.msg_namelen = h.addr.len();
            h.msg.msg_iov = &mut h.iov;
            h.msg.msg_iovlen = 1;
            h.msg.msg_controllen = ctl;
            h.msg.msg_control = h.cmsg.0.as_mut_ptr().cast();
        }
        h.tx = Some(t);
        let msg = &h.msg as *const libc::msghdr;
        let (name, name_len) = (h.addr.name_ptr().cast_const().cast(), h.addr.len());
        let sock = usize::from(t.sock);
        if ctl == 0 && self.zc_min.is_some_and(|m| t.len >= m) {
            let zc = |e: opcode::SendZc| {
                e.dest_addr(name)
                    .dest_addr_len(name_len)
                    .buf_index(self.zc_fixed.then_some(0))
                    .zc_flags(sys_zc::REPORT_USAGE)
                    .build()
            };
            let e = if self.fixed {
                zc(opcode::SendZc::new(Fixed(sock as u32), buf, t.len))
            } else {
                zc(opcode::SendZc::new(Fd(self.fds[sock]), buf, t.len))
            };
            // SAFETY: as below; the slot stays referenced until the
            // notification (the backend keeps the header until then).
            unsafe { self.push(&e.user_data(Op::Send(i).encode()))? };
            return Ok(None);
        }
        let e = match (ctl > 0, self.fixed) {
            // A plain datagram: IORING_OP_SEND with a destination address
            // spares the kernel copying a msghdr and iovec.
            (false, true) => opcode::Send::new(Fixed(sock as u32), buf, t.len)
                .dest_addr(name)
                .dest_addr_len(name_len)
                .build(),
            (false, false) => opcode::Send::new(Fd(self.fds[sock]), buf, t.len)
                .dest_addr(name)
                .dest_addr_len(name_len)
                .build(),
            // A GSO train (UDP_SEGMENT) or a chosen source (PKTINFO)
            // needs its control messages: IORING_OP_SENDMSG.
            (true, true) => opcode::SendMsg::new(Fixed(sock as u32), msg).build(),
            (true, false) => opcode::SendMsg::new(Fd(self.fds[sock]), msg).build(),
        };
        // SAFETY: the entry points at the send header (owned by the ring,
        // off the free list until `finish_send`) and at the slot bytes,
        // which the caller keeps alive and unwritten (# Safety).
        unsafe { self.push(&e.user_data(Op::Send(i).encode()))? };
        Ok(None)
    }

    /// The send headers whose sends are in flight (for cancelling them).
    pub fn sends_in_flight(&self) -> Vec<u32> {
        (0..self.hdrs.len() as u32)
            .filter(|&i| self.hdrs[i as usize].tx.is_some())
            .collect()
    }

    /// Sends of at least `min` bytes go as `IORING_OP_SEND_ZC`, from the
    /// pool's arena registered as a fixed buffer when the kernel lets it
    /// (else from plain memory, pinned per send).
    ///
    /// # Safety
    ///
    /// As for [`Ring::new`]: `pool` (whose arena the kernel may read for
    /// any send in flight) outlives the ring, or both are leaked.
    pub unsafe fn enable_zero_copy(&mut self, pool: &Pool, min: u32) {
        let (base, len) = pool.arena();
        let iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        // SAFETY: the arena lives as long as the ring (# Safety); the
        // kernel only reads it, for sends we submit.
        self.zc_fixed = unsafe { self.ring.submitter().register_buffers(&[iov]) }.is_ok();
        self.zc_min = Some(min);
    }

    /// The send of header `i`, left in flight (the first completion of a
    /// zero-copy send: its notification follows).
    pub fn send_of(&self, i: u32) -> Option<Transmit> {
        self.hdrs.get(i as usize)?.tx
    }

    /// The send whose completion carried `Op::Send(i)`; frees its header.
    /// `None` for a header that has no send (a kernel or driver bug).
    pub fn finish_send(&mut self, i: u32) -> Option<Transmit> {
        let t = self.hdrs.get_mut(i as usize)?.tx.take()?;
        self.hdr_free.push(i);
        Some(t)
    }

    /// Whether the kernel defers this ring's task work (`DEFER_TASKRUN`,
    /// set up with `SINGLE_ISSUER` or not at all): a receive it has armed
    /// then runs only when this thread waits on the ring.
    pub fn defers_task_work(&self) -> bool {
        self.ring.params().is_setup_single_issuer()
    }

    /// Reads the record the kernel wrote at the start of a filled receive
    /// buffer (`io_uring_recvmsg_out`, name, control data) for socket
    /// `sock`. `None` when it does not parse.
    pub fn recv_meta(&self, sock: u16, buf: &[u8]) -> Option<RecvMeta> {
        parse_recv(sock, buf, &self.recv_msg)
    }

    /// Submits what is queued and waits for `want` completions or the
    /// timeout (`None`: no timeout; zero: do not wait, but run deferred
    /// completions the kernel flags).
    pub fn wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let r = self.enter(want, timeout);
        self.note_submitted();
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// One `io_uring_enter`: submits what is queued and, as `wait` says,
    /// waits (through the registered ring when there is one).
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<usize> {
        // As the crate's `submit_and_wait`: deferred completions run only
        // in an enter that asks for events; the kernel flags them.
        let (to_submit, flagged) = {
            let sq = self.ring.submission();
            (sq.len(), sq.taskrun() || sq.cq_overflow())
        };
        let (want, ts) = match timeout {
            // Something is due now: do not arm a zero timer and sleep on it.
            Some(d) if d.is_zero() => (0, None),
            t => (want, t),
        };
        let to_submit = u32::try_from(to_submit).unwrap_or(u32::MAX);
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        let (ring, flags) = self.enter_as;
        enter::enter(ring, flags, to_submit, want, want > 0 || flagged, ts)
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        let r = self.enter(0, Some(Duration::ZERO));
        self.note_submitted();
        r.map(drop)
    }

    /// After a submit: a queued timer SQE is in the kernel's hands once
    /// the submission queue is empty (a failed enter may have left it).
    fn note_submitted(&mut self) {
        if self.timer_queued && self.ring.submission().is_empty() {
            self.timer_queued = false;
        }
    }

    /// Completions posted and not yet reaped: memory reads only.
    pub fn ready(&mut self) -> usize {
        self.ring.completion().len()
    }

    /// Whether a wait would find work at once: completions past `seen`
    /// (what [`Ring::ready`] read before), or deferred completions for the
    /// kernel to run (`IORING_SQ_TASKRUN`, set by the kernel where the ring
    /// defers them: a datagram's receive waits there until the worker next
    /// enters). Memory reads only, no system call: what a spin checks.
    pub fn work_pending(&mut self, seen: usize) -> bool {
        let flagged = {
            let sq = self.ring.submission();
            sq.taskrun() || sq.cq_overflow()
        };
        flagged || self.ring.completion().len() > seen
    }

    /// Copies the ready completions out of the completion queue, in place
    /// of the last batch; returns how many.
    pub fn reap(&mut self) -> usize {
        self.completions.clear();
        self.reap_more()
    }

    /// Appends the completions ready now to the batch being handled (after
    /// a submit in its middle); returns the batch's new length.
    pub fn reap_more(&mut self) -> usize {
        for c in self.ring.completion() {
            self.completions.push(Completion {
                op: Op::decode(c.user_data()),
                res: c.result(),
                flags: c.flags(),
            });
        }
        self.completions.len()
    }

    /// Marks completion `k` of the batch as handled out of turn: it reads
    /// as a cancel's (ignored) from now on.
    pub fn mark_handled(&mut self, k: usize) {
        self.completions[k].op = Some(Op::Cancel);
    }

    /// Completions in the batch being handled.
    pub fn len(&self) -> usize {
        self.completions.len()
    }

    /// Completion `k` of the batch of [`Ring::reap`] (and [`Ring::reap_more`]).
    pub fn completion(&self, k: usize) -> Completion {
        self.completions[k]
    }

    /// Unregisters the sockets: the kernel tears a closed ring down
    /// asynchronously, and until then a registered socket stays bound (and
    /// in its reuseport group). This waits until the kernel lets go.
    pub fn release_files(&mut self) {
        if self.fixed {
            let _ = self.ring.submitter().unregister_files();
            self.fixed = false;
        }
    }
}

impl Drop for Ring {
    /// Takes the ring out of the thread's table before its fd closes (a
    /// ring leaked with `mem::forget` stays there, as it should).
    fn drop(&mut self) {
        if let Some(r) = self.registered.take() {
            r.unregister(self.ring.as_raw_fd());
        }
    }
}

/// Reads the `io_uring_recvmsg_out` record, name and control data at the
/// start of a receive buffer, laid out for `msg` (the multishot receive's
/// template). `None` when it does not parse. A free function so that the
/// fuzzer reaches it without a ring.
pub(crate) fn parse_recv(sock: u16, buf: &[u8], msg: &libc::msghdr) -> Option<RecvMeta> {
    let m = types::RecvMsgOut::parse(buf, msg).ok()?;
    let name_len = (m.incoming_name_len() as usize).min(m.name_data().len());
    Some(RecvMeta {
        sock,
        src: RawAddr::from_bytes(&m.name_data()[..name_len]),
        len: m.payload_data().len() as u32,
        truncated: m.is_payload_truncated(),
        cmsg: RecvCmsg::parse(m.control_data()),
    })
}

/// The template of the multishot receive: room for a name of
/// [`NAME_LEN`] bytes and [`RECV_CMSG_LEN`] bytes of control data.
pub(crate) fn recv_template() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_namelen = NAME_LEN as libc::socklen_t;
    m.msg_controllen = RECV_CMSG_LEN;
    m
}
