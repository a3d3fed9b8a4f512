//! The `uring` backend: one io_uring per worker.
//!
//! - Receive: one multishot `RecvMsgMulti` on the worker's socket (a
//!   registered file) selecting buffers from the pool's provided-buffer ring
//!   (group [`BGID`]). Each CQE names a buffer; the kernel has written
//!   `io_uring_recvmsg_out`, the source name ([`NAME_LEN`] bytes), the control
//!   data ([`RECV_CMSG_LEN`] bytes) and the payload into it. When a CQE comes
//!   without `F_MORE` the multishot has ended (ring empty: `-ENOBUFS`; an
//!   error from the socket; cancellation) and is armed again once the ring has
//!   buffers. Datagrams left in the socket meanwhile stay there.
//! - Send: every send the handler queued in a batch becomes one `SendMsg`
//!   SQE; the whole batch goes to the kernel with the single
//!   `io_uring_enter` that also waits for the next completions. The msghdr,
//!   iovec, address and control data of each send live in [`SendHdr`]s owned
//!   here, one per send in flight, and the slot it reads keeps a reference
//!   in the pool until the send's CQE is reaped.
//! - Wake: a multishot poll on the worker's eventfd, written by `Sender`s and
//!   by the stop handle.
//! - `SINGLE_ISSUER` + `DEFER_TASKRUN` when the kernel has them: completions
//!   are produced only when the worker enters the ring to wait.
//!
//! Shutdown cancels the receive and the poll and reaps until every request
//! has posted its last CQE, so no buffer is held by the kernel when the ring
//! and then the pool are dropped.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::{NAME_LEN, RECV_CMSG_LEN, RawAddr, SEND_CMSG_LEN, parse_cmsgs, write_segment_cmsg};
use crate::bufring::Pool;
use crate::handler::{ErrorEvent, Handler};
use crate::worker::{Core, HEADROOM, Transmit};

/// Buffer group id of the receive ring.
pub const BGID: u16 = 0;

/// Receive on socket `i` has user data `UD_RECV + i`; sends use their
/// header index (below 2^32).
const UD_RECV: u64 = 1 << 62;
const UD_WAKE: u64 = u64::MAX;
const UD_CANCEL: u64 = u64::MAX - 1;

/// Longest wait while sends are in flight (see the main loop).
const SEND_WAIT: Duration = Duration::from_millis(1);

/// Everything a `SendMsg` SQE points at, kept alive until its CQE.
#[repr(C)]
struct SendHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: RawAddr,
    cmsg: [u8; SEND_CMSG_LEN],
    tx: Option<Transmit>,
}

/// Options of the uring backend.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UringOpts {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Try `SINGLE_ISSUER | DEFER_TASKRUN`.
    pub defer_taskrun: bool,
}

struct Driver {
    // Dropped first: closing the ring releases the registered buffer ring and
    // file. The pool (in Core) outlives it; see `shutdown`.
    ring: IoUring,
    recv_msg: Box<libc::msghdr>,
    hdrs: Box<[SendHdr]>,
    hdr_free: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
    in_flight: usize,
    recv_armed: Vec<bool>,
    wake_armed: bool,
    fds: Vec<RawFd>,
    fixed: bool,
    wake_fd: RawFd,
}

fn build_ring(opts: &UringOpts) -> io::Result<(IoUring, bool)> {
    let cq = opts.sq_entries * 8;
    if opts.defer_taskrun
        && let Ok(r) = IoUring::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            // The kernel flags pending deferred work, so a non-blocking
            // submit knows to run it (see `Driver::wait`).
            .setup_taskrun_flag()
            .setup_submit_all()
            .build(opts.sq_entries)
    {
        return Ok((r, true));
    }
    let r = IoUring::builder()
        .setup_cqsize(cq)
        .setup_submit_all()
        .build(opts.sq_entries)?;
    Ok((r, false))
}

impl Driver {
    fn new(fds: &[RawFd], wake_fd: RawFd, pool: &Pool, opts: &UringOpts) -> io::Result<Self> {
        let (ring, _defer) = build_ring(opts)?;
        let fixed = ring.submitter().register_files(fds).is_ok();
        let br = pool.ring().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "uring backend needs a ring pool",
            )
        })?;
        // SAFETY: the buffer ring memory is owned by the pool, which outlives
        // this io_uring (the driver is dropped before the pool); the kernel
        // reads entries and the tail only until the ring is closed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.addr(), br.entries(), BGID, 0)?
        };
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = NAME_LEN as libc::socklen_t;
        recv_msg.msg_controllen = RECV_CMSG_LEN;
        let n_hdrs = (pool.counts().total as usize * 2).max(64);
        let hdrs = (0..n_hdrs)
            .map(|_| SendHdr {
                // SAFETY: plain old data; all-zero is valid.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                addr: RawAddr::zeroed(),
                cmsg: [0; SEND_CMSG_LEN],
                tx: None,
            })
            .collect();
        Ok(Driver {
            cqes: Vec::with_capacity(ring.params().cq_entries() as usize),
            ring,
            recv_msg,
            hdrs,
            hdr_free: (0..n_hdrs as u32).rev().collect(),
            in_flight: 0,
            recv_armed: vec![false; fds.len()],
            wake_armed: false,
            fds: fds.to_vec(),
            fixed,
            wake_fd,
        })
    }

    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry built here points only at memory the driver
            // or the pool keeps alive until the entry's last CQE: the boxed
            // recv msghdr (read at prep), a SendHdr taken off the free list
            // (returned only when its CQE is reaped) and a slot holding a
            // reference (dropped only when that CQE is reaped).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_recv(&mut self, i: usize) -> io::Result<()> {
        let msg = &*self.recv_msg as *const libc::msghdr;
        let e = if self.fixed {
            opcode::RecvMsgMulti::new(Fixed(i as u32), msg, BGID).build()
        } else {
            opcode::RecvMsgMulti::new(Fd(self.fds[i]), msg, BGID).build()
        };
        self.push(&e.user_data(UD_RECV + i as u64))?;
        self.recv_armed[i] = true;
        Ok(())
    }

    fn any_recv_armed(&self) -> bool {
        self.recv_armed.iter().any(|&a| a)
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::PollAdd::new(Fd(self.wake_fd), libc::POLLIN as u32)
            .multi(true)
            .build();
        self.push(&e.user_data(UD_WAKE))?;
        self.wake_armed = true;
        Ok(())
    }

    /// Turns queued transmits into SQEs; stops early (leaving the rest
    /// queued) when every send header is in flight.
    fn flush(&mut self, core: &mut Core) -> io::Result<()> {
        let mut done = 0;
        while done < core.queue.len() {
            let Some(i) = self.hdr_free.pop() else { break };
            let t = core.queue[done];
            let h = &mut self.hdrs[i as usize];
            h.addr = t.dst;
            h.iov = libc::iovec {
                // SAFETY: off + len lie inside the slot (checked when queued).
                iov_base: unsafe { core.pool.slot_addr(t.slot).add(t.off as usize) }.cast(),
                iov_len: t.len as usize,
            };
            h.msg.msg_name = h.addr.name_ptr();
            h.msg.msg_namelen = h.addr.len();
            h.msg.msg_iov = &mut h.iov;
            h.msg.msg_iovlen = 1;
            if t.segment > 0 {
                h.msg.msg_controllen = write_segment_cmsg(&mut h.cmsg, t.segment);
                h.msg.msg_control = h.cmsg.as_mut_ptr().cast();
            } else {
                h.msg.msg_control = std::ptr::null_mut();
                h.msg.msg_controllen = 0;
            }
            h.tx = Some(t);
            let msg = &h.msg as *const libc::msghdr;
            let e = match (t.segment, self.fixed) {
                // A plain datagram: IORING_OP_SEND with a destination
                // address spares the kernel copying a msghdr and iovec.
                (0, true) => {
                    opcode::Send::new(Fixed(t.sock as u32), h.iov.iov_base as *const u8, t.len)
                        .dest_addr(h.addr.name_ptr().cast_const().cast())
                        .dest_addr_len(h.addr.len())
                        .build()
                }
                (0, false) => opcode::Send::new(
                    Fd(self.fds[t.sock as usize]),
                    h.iov.iov_base as *const u8,
                    t.len,
                )
                .dest_addr(h.addr.name_ptr().cast_const().cast())
                .dest_addr_len(h.addr.len())
                .build(),
                // A GSO train needs its UDP_SEGMENT control message.
                (_, true) => opcode::SendMsg::new(Fixed(t.sock as u32), msg).build(),
                (_, false) => opcode::SendMsg::new(Fd(self.fds[t.sock as usize]), msg).build(),
            };
            self.push(&e.user_data(i as u64))?;
            self.in_flight += 1;
            done += 1;
        }
        core.queue.drain(..done);
        Ok(())
    }

    /// Submits what is queued and waits for `want` completions or the
    /// timeout.
    fn wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let r = match timeout {
            // Something is due now: do not arm a zero timer and sleep on it;
            // submit, and run deferred completions if the kernel flags any.
            Some(d) if d.is_zero() => self.ring.submit(),
            Some(d) => {
                let ts = Timespec::from(d);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submitter().submit_and_wait(want),
        };
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

    fn collect(&mut self) {
        self.cqes.clear();
        for c in self.ring.completion() {
            self.cqes.push((c.user_data(), c.result(), c.flags()));
        }
    }

    /// Handles one receive CQE.
    fn on_recv<H: Handler>(
        &mut self,
        core: &mut Core,
        h: &mut H,
        sock: usize,
        res: i32,
        flags: u32,
        dispatch: bool,
    ) {
        let Some(fd) = self.fds.get(sock).copied() else {
            core.stats.invalid_completions += 1;
            return;
        };
        if !cqueue::more(flags) {
            self.recv_armed[sock] = false;
        }
        if res < 0 {
            let errno = -res;
            if errno == libc::ENOBUFS {
                core.stats.enobufs += 1;
            } else if errno != libc::ECANCELED {
                // With IP_RECVERR an ICMP error ends the multishot with the
                // error; the details wait in the error queue.
                if core.drain_errors(h, fd) == 0 {
                    core.error_event(h, ErrorEvent::from_errno(errno, None));
                }
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            core.stats.invalid_completions += 1;
            return;
        };
        let Some(mut lent) = core.pool.lend(bid as u32, 0, res as u32) else {
            core.stats.invalid_completions += 1;
            return;
        };
        let parsed = types::RecvMsgOut::parse(lent.bytes(), &self.recv_msg).map(|m| {
            let name_len = (m.incoming_name_len() as usize).min(m.name_data().len());
            (
                RawAddr::from_bytes(&m.name_data()[..name_len]),
                parse_cmsgs(m.control_data()),
                m.is_payload_truncated(),
                m.payload_data().len() as u32,
            )
        });
        match parsed {
            Ok((src, cmsg, truncated, len)) if dispatch => {
                lent.set_window(HEADROOM as u32, len);
                core.dispatch(h, sock as u16, lent, src, truncated, cmsg);
            }
            Ok(_) => {
                core.stats.received += 1;
                core.pool.release(lent);
            }
            Err(()) => {
                core.stats.invalid_completions += 1;
                core.pool.release(lent);
            }
        }
    }

    fn on_send<H: Handler>(&mut self, core: &mut Core, h: &mut H, i: u64, res: i32) {
        let Some(hdr) = self.hdrs.get_mut(i as usize) else {
            core.stats.invalid_completions += 1;
            return;
        };
        let Some(t) = hdr.tx.take() else {
            core.stats.invalid_completions += 1;
            return;
        };
        self.hdr_free.push(i as u32);
        self.in_flight -= 1;
        if res >= 0 {
            core.count_sent(&t);
        } else {
            let errno = -res;
            if t.segment > 0 && matches!(errno, libc::EIO | libc::EINVAL) && core.gso {
                core.gso_failed(&t);
            } else {
                core.send_failed(h, &t, errno);
            }
        }
        core.pool.unref(t.slot);
    }

    fn handle<H: Handler>(&mut self, core: &mut Core, h: &mut H, dispatch: bool) {
        for k in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[k];
            match ud {
                UD_WAKE => {
                    if !cqueue::more(flags) {
                        self.wake_armed = false;
                    }
                    core.inbox.wake.drain();
                    if dispatch {
                        core.drain_inbox();
                    }
                }
                UD_CANCEL => {}
                r if r >= UD_RECV => {
                    self.on_recv(core, h, (r - UD_RECV) as usize, res, flags, dispatch)
                }
                i => self.on_send(core, h, i, res),
            }
        }
        core.pool.publish();
    }

    fn cancel(&mut self, ud: u64) -> io::Result<()> {
        self.push(&opcode::AsyncCancel::new(ud).build().user_data(UD_CANCEL))
    }

    /// Stops receiving, lets the handler finish, and reaps until the kernel
    /// holds nothing of ours. Bounded: gives up after `limit`.
    fn shutdown<H: Handler>(
        &mut self,
        core: &mut Core,
        h: &mut H,
        limit: Duration,
    ) -> io::Result<()> {
        for i in 0..self.fds.len() {
            if self.recv_armed[i] {
                self.cancel(UD_RECV + i as u64)?;
            }
        }
        if self.wake_armed {
            self.cancel(UD_WAKE)?;
        }
        let deadline = Instant::now() + limit;
        let mut stopped = false;
        loop {
            if !self.any_recv_armed() && !stopped {
                // Every datagram the kernel handed over has been handled.
                stopped = true;
                h.on_stop();
            }
            self.flush(core)?;
            if !self.any_recv_armed()
                && !self.wake_armed
                && self.in_flight == 0
                && core.queue.is_empty()
            {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "io_uring requests still in flight at shutdown",
                ));
            }
            self.wait(1, Some(left.min(Duration::from_millis(50))))?;
            self.collect();
            self.handle(core, h, !stopped);
        }
    }
}

/// Runs a worker on io_uring until the stop flag is set. Calls `ready` once
/// the receive is armed (or with the setup error).
pub(crate) fn run<H: Handler>(
    sockets: &[socket2::Socket],
    core: &mut Core,
    h: &mut H,
    opts: &UringOpts,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let mut d = match Driver::new(&fds, core.inbox.wake.fd(), &core.pool, opts) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.to_string();
            ready(Err(e));
            return Err(io::Error::other(msg));
        }
    };
    let setup = d
        .arm_wake()
        .and_then(|_| (0..fds.len()).try_for_each(|i| d.arm_recv(i)))
        .and_then(|_| d.ring.submit().map(drop));
    if let Err(e) = setup {
        let msg = e.to_string();
        ready(Err(e));
        return Err(io::Error::other(msg));
    }
    core.stats.recv_arms += 1;
    ready(Ok(()));
    core.start(h);
    let result = (|| -> io::Result<()> {
        loop {
            if core.stopping() {
                return Ok(());
            }
            d.flush(core)?;
            for i in 0..fds.len() {
                if !d.recv_armed[i] && core.pool.recv_home() > 0 {
                    d.arm_recv(i)?;
                    core.stats.recv_arms += 1;
                }
            }
            if !d.wake_armed {
                d.arm_wake()?;
            }
            // UDP sends complete inline when submitted: wait for them and
            // for one more completion in the same enter, rather than waking
            // once for the sends and entering again. A send that had to wait
            // for socket space must not hold the loop: bound the wait then.
            let (want, timeout) = if core.busy_poll {
                // Never sleep: submit, run deferred completions, go on.
                (1, Some(Duration::ZERO))
            } else if d.in_flight > 0 {
                let t = core.next_timer().map_or(SEND_WAIT, |t| t.min(SEND_WAIT));
                (d.in_flight + 1, Some(t))
            } else {
                (1, core.next_timer())
            };
            d.wait(want, timeout)?;
            d.collect();
            d.handle(core, h, true);
            core.fire_timers(h);
            core.publish();
        }
    })();
    let down = d.shutdown(core, h, Duration::from_secs(5));
    core.publish();
    if down.is_err() {
        // The kernel may still hold buffers: keep the memory mapped for the
        // life of the process rather than risk a write into freed memory.
        std::mem::forget(d);
        return result.and(down);
    }
    // The ring holds a reference to every registered socket, and a closed
    // ring is torn down asynchronously: without this, a socket would stay
    // bound (and in its reuseport group, taking datagrams) for a while after
    // the engine stopped. Unregistering waits until the kernel lets go.
    if d.fixed {
        let _ = d.ring.submitter().unregister_files();
    }
    drop(d);
    result
}

/// Checks that this kernel and process can run the uring backend: ring
/// setup, the opcodes used, a registered buffer ring, and a multishot
/// `RecvMsgMulti` that really delivers a datagram on loopback.
pub(crate) fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::Send::CODE, "SEND"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("io_uring opcode {name} not supported"));
        }
    }
    drop(ring);
    // A real round trip through a multishot receive on a buffer ring.
    let sock =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let pool = Pool::new(256, 2, 0, true).map_err(|e| format!("probe pool: {e}"))?;
    let opts = UringOpts {
        sq_entries: 8,
        defer_taskrun: false,
    };
    let mut d = Driver::new(&[sock.as_raw_fd()], sock.as_raw_fd(), &pool, &opts)
        .map_err(|e| format!("buffer ring registration failed: {e}"))?;
    d.arm_recv(0).map_err(|e| e.to_string())?;
    d.ring.submit().map_err(|e| e.to_string())?;
    sock.send_to(b"p", addr)
        .map_err(|e| format!("probe send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        d.wait(1, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        d.collect();
        seen = d.cqes.iter().find(|c| c.0 == UD_RECV).copied();
    }
    let result = match seen {
        Some((_, res, flags))
            if res > 0 && cqueue::more(flags) && cqueue::buffer_select(flags).is_some() =>
        {
            Ok(())
        }
        Some((_, res, _)) if res < 0 => Err(format!(
            "multishot RecvMsg failed: {}",
            io::Error::from_raw_os_error(-res)
        )),
        Some(_) => Err("multishot RecvMsg not supported (no F_MORE)".into()),
        None => Err("multishot RecvMsg delivered nothing".into()),
    };
    // Cancel and reap so the kernel holds nothing when pool and ring go.
    let _ = d.cancel(UD_RECV);
    let deadline = Instant::now() + Duration::from_secs(2);
    while d.recv_armed[0] && Instant::now() < deadline {
        let _ = d.wait(1, Some(Duration::from_millis(50)));
        d.collect();
        if d.cqes.iter().any(|c| c.0 == UD_RECV && !cqueue::more(c.2)) {
            d.recv_armed[0] = false;
        }
    }
    if d.recv_armed[0] {
        std::mem::forget(d);
        std::mem::forget(pool);
    }
    result
}
