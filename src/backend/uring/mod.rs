//! The `uring` backend's loop: one io_uring per worker (the ring itself is
//! [`crate::sys::uring::Ring`]).
//!
//! Each iteration turns the queued sends into SQEs, re-arms what has ended
//! (a multishot receive whose ring ran empty, the wake-up poll, the timer
//! for the handler's next timer), and enters the kernel once to submit
//! everything and wait for completions. The handler's timers come as a
//! timeout request's completion rather than as a timeout on each wait: a
//! wait with a timeout costs the kernel a timer set and cancelled per
//! sleep, and the loop a clock read per iteration (PERF.md, the kv bench). A
//! receive completion names the buffer the kernel filled; the slot is lent
//! to the handler and goes back into the buffer ring (published once per
//! batch) when the last send that reads it completes. Datagrams left in
//! the socket while the ring was empty stay there until it is re-armed.
//!
//! At light load, with one socket, the loop may instead park: wait for
//! the next datagram in `recvmsg` itself and answer with `sendmsg`, until
//! something needs the ring again (`park.rs`).
//!
//! Shutdown cancels the receives and the poll and reaps until every request
//! has posted its last completion, so no buffer is held by the kernel when
//! the ring and then the pool are dropped.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::backend::spin::Spin;
use crate::backend::worker::Worker;
use crate::config::Config;
use crate::sys;
use crate::sys::txstamp::TxStampRing;
use crate::sys::uring::{Completion, Op, Ring, RingOpts};
use crate::worker::handler::Handler;

mod park;
mod shutdown;

/// Sends in flight from which the loop waits for all of them and one more
/// completion in one enter (see the main loop).
const BATCH_WAIT: usize = 8;
/// Longest such a wait lasts.
const SEND_WAIT: Duration = Duration::from_millis(1);
/// Longest the sends waited on with the next receive (at light load) stay
/// unreaped when no receive comes.
const SETTLE: Duration = Duration::from_millis(50);
/// Longest the shutdown waits for the kernel to finish.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(3);
/// How long sends may sit in the kernel without one completing, while they
/// hold the receive slots the worker needs, before they are given up
/// (cancelled, counted in `send_blocked`).
const BLOCKED_GIVE_UP: Duration = Duration::from_millis(50);
/// Once sends were given up, the link is known congested for this long,
/// and sends that starve receiving again are given up after
/// [`BLOCKED_GIVE_UP_AGAIN`]: at the first patience each time, a worker
/// whose every reply blocks (a link far slower than what it receives)
/// would stall receiving most of the time, and its socket would drop what
/// arrives meanwhile.
const CONGESTED_FOR: Duration = Duration::from_secs(1);
const BLOCKED_GIVE_UP_AGAIN: Duration = Duration::from_millis(5);

/// The ring and what this loop knows about its requests.
struct Driver {
    ring: Ring,
    recv_armed: Vec<bool>,
    /// The error-queue polls, per socket (empty when TX timestamps are
    /// off: errors then end the receive, which is enough).
    errors_armed: Vec<bool>,
    /// TX timestamps by io_uring command, where the kernel has it (else
    /// the error queue is read with `recvmsg`).
    stamps: Option<TxStampRing>,
    wake_armed: bool,
    in_flight: usize,
    send_headers: usize,
    wake_fd: RawFd,
    /// Sends completed so far.
    sends_done: u64,
    /// `sends_done` as last seen while receiving starved, and since when
    /// it has not moved (the clock is read only while starving).
    stalled: (u64, Instant),
    /// When sends were last given up ([`Driver::give_up_blocked`]).
    gave_up: Option<Instant>,
    /// The deadline the worker's timer ([`Op::Timer`]) is armed for.
    timer: Option<Instant>,
    /// Its completion came: the handler's timers are due.
    timer_fired: bool,
    /// The timer is armed to fire within [`SETTLE`]: sends waited on
    /// together with the next receive are reaped by then.
    settling: bool,
    /// Datagrams handed over in the last [`Driver::handle`].
    recvs: usize,
}

impl Driver {
    fn arm_recv(&mut self, sock: usize) -> io::Result<()> {
        self.ring.arm_recv(sock)?;
        self.recv_armed[sock] = true;
        Ok(())
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        self.ring.arm_wake(self.wake_fd)?;
        self.wake_armed = true;
        Ok(())
    }

    /// Arms (or moves earlier) the worker's timer for the handler's next
    /// timer; true when that one is due already (the loop then does not
    /// sleep and fires it: a timer set for "now", as a load generator's
    /// next batch is, must not wait for a timer interrupt). A timer later
    /// than the one armed waits for it to fire (one spare wake-up, then it
    /// is armed for the later one); the clock is read only when arming. So
    /// a wait carries no timeout, and a loop iteration no clock read, for
    /// the handler's timers.
    fn arm_timer<H: Handler>(&mut self, w: &mut Worker<H>) -> io::Result<bool> {
        let Some(at) = w.core.timers.next_at() else {
            return Ok(false);
        };
        if self.timer.is_some_and(|armed| armed <= at) {
            return Ok(false);
        }
        let after = at.saturating_duration_since(Instant::now());
        if after.is_zero() {
            return Ok(true);
        }
        self.arm_for(at, after)?;
        Ok(false)
    }

    /// Arms the timer to fire at `at`, `after` from now (or moves the
    /// armed one there).
    fn arm_for(&mut self, at: Instant, after: Duration) -> io::Result<()> {
        self.ring.arm_timer(after, self.timer.is_some())?;
        self.timer = Some(at);
        Ok(())
    }

    /// Before a wait that takes the sends just submitted together with the
    /// next receive: makes sure the timer fires within [`SETTLE`], so that
    /// when no receive comes the sends are still reaped (counted, their
    /// slots back) soon after. While requests keep coming, the clock is
    /// read and the timer armed once per [`SETTLE`], not per request.
    fn arm_settle(&mut self) -> io::Result<()> {
        if self.settling {
            return Ok(());
        }
        let at = Instant::now() + SETTLE;
        if self.timer.is_none_or(|armed| armed > at) {
            self.arm_for(at, SETTLE)?;
        }
        self.settling = true;
        Ok(())
    }

    fn any_recv_armed(&self) -> bool {
        self.recv_armed.iter().any(|&a| a)
    }

    /// Arms every error-queue poll that has ended (inlined: none without TX timestamps).
    #[inline]
    fn arm_errors(&mut self) -> io::Result<()> {
        for i in 0..self.errors_armed.len() {
            if !self.errors_armed[i] {
                self.ring.arm_errors(i)?;
                self.errors_armed[i] = true;
            }
        }
        Ok(())
    }

    /// Turns queued sends into SQEs; stops early (leaving the rest queued)
    /// when every send header is in flight.
    fn flush<H: Handler>(&mut self, w: &mut Worker<H>) -> io::Result<usize> {
        w.core.coalesce_queue();
        let core = &mut w.core;
        let mut done = 0;
        for &t in core.queue.as_slice() {
            // SAFETY: the queue holds a reference on the slot for this send
            // (taken in SendQueue::push); it is dropped only in
            // Worker::complete (or, for a zero-copy send, in
            // Worker::zero_copy_done after its notification), after
            // `finish_send` reaped the completion.
            // The slot's bytes are not written while referenced by a send.
            match unsafe { self.ring.push_send(t, &core.pool)? } {
                None => done += 1,
                Some(_) => break,
            }
        }
        self.in_flight += done;
        core.queue.consume(done);
        Ok(done)
    }

    /// Handles one receive completion.
    fn on_recv<H: Handler>(
        &mut self,
        w: &mut Worker<H>,
        sock: usize,
        c: Completion,
        dispatch: bool,
    ) {
        if sock >= self.recv_armed.len() {
            w.invalid();
            return;
        }
        if !c.more() {
            self.recv_armed[sock] = false;
        }
        if c.res < 0 {
            match -c.res {
                libc::ENOBUFS => w.core.stats.c.enobufs.add(1),
                libc::ECANCELED => {}
                errno => w.socket_error(sock, errno),
            }
            return;
        }
        let Some(bid) = c.buffer() else {
            w.invalid();
            return;
        };
        let Some(mut lent) = w.core.pool.lend(u32::from(bid), 0, c.res as u32) else {
            w.invalid();
            return;
        };
        let Some(meta) = self.ring.recv_meta(sock as u16, lent.bytes()) else {
            w.invalid();
            w.core.pool.release(lent);
            return;
        };
        lent.set_window(crate::bufring::HEADROOM as u32, meta.len);
        if dispatch {
            w.dispatch(meta, lent);
        } else {
            w.discard(meta, lent);
        }
    }

    fn on_send<H: Handler>(&mut self, w: &mut Worker<H>, i: u32, c: Completion) {
        let notif = io_uring::cqueue::notif(c.flags);
        // A notification's `res` is a bit set (its top bit: copied), not
        // a result.
        let res = if notif || c.res >= 0 {
            Ok(())
        } else {
            Err(c.res.saturating_neg())
        };
        if c.more() && !notif {
            // A zero-copy send's result; its header and slot stay taken
            // until the notification.
            match self.ring.send_of(i) {
                Some(t) => w.account(&t, res),
                None => w.invalid(),
            }
            return;
        }
        let Some(t) = self.ring.finish_send(i) else {
            w.invalid();
            return;
        };
        self.in_flight -= 1;
        self.sends_done += 1;
        if notif {
            let copied = (c.res as u32) & crate::sys::uring::sys_zc::COPIED != 0;
            w.zero_copy_done(t, copied);
        } else {
            w.complete(t, res);
        }
    }

    /// The handler has queued so much that its next `send_to` could find
    /// no free send slot: submit what is queued now, in the middle of the
    /// batch, and take in the sends that completed (UDP sends complete when
    /// submitted, so their slots come back at once). Without this a burst
    /// of up to `recv_slots` datagrams reaches the handler before any send
    /// goes, and replies copied with `send_to` run out of slots.
    fn relieve<H: Handler>(&mut self, w: &mut Worker<H>) -> io::Result<()> {
        let pool = &w.core.pool;
        if pool.send_free() * 8 >= pool.send_slots() && w.core.queue.len() < self.send_headers / 2 {
            return Ok(());
        }
        self.flush(w)?;
        self.ring.submit()?;
        // The sends' completions are handled now (that is what frees the
        // slots); anything else that arrived joins the end of the batch.
        let from = self.ring.len();
        let to = self.ring.reap_more();
        for k in from..to {
            let c = self.ring.completion(k);
            if let Some(Op::Send(i)) = c.op {
                self.on_send(w, i, c);
                self.ring.mark_handled(k);
            }
        }
        Ok(())
    }

    /// Reaps what completed and hands it on; `dispatch` false once the
    /// handler has stopped (datagrams are then counted and released).
    fn handle<H: Handler>(&mut self, w: &mut Worker<H>, dispatch: bool) -> io::Result<()> {
        self.recvs = 0;
        let mut n = self.ring.reap();
        let mut k = 0;
        while k < n {
            // Copied out one at a time: handling may push new entries.
            let c = self.ring.completion(k);
            k += 1;
            match c.op {
                Some(Op::Wake) => {
                    if !c.more() {
                        self.wake_armed = false;
                    }
                    if dispatch {
                        w.woken();
                    } else {
                        w.core.shared.inbox.wake.drain();
                    }
                }
                Some(Op::Cancel) => {}
                Some(Op::Timer) => {
                    self.timer = None;
                    self.settling = false;
                    self.timer_fired = true;
                }
                Some(Op::Errors(sock)) => {
                    let sock = sock as usize;
                    match self.errors_armed.get_mut(sock) {
                        Some(armed) if !c.more() => *armed = false,
                        Some(_) => {}
                        None => w.invalid(),
                    }
                    if dispatch && c.res >= 0 && sock < self.errors_armed.len() {
                        match &mut self.stamps {
                            // ICMP errors still end the receive (and are
                            // read then); the stamps are the command's.
                            Some(r) => {
                                r.take(true, |_, id, ns| w.tx_timestamp(id, ns));
                            }
                            None => {
                                w.drain_errors(sock);
                            }
                        }
                    }
                }
                Some(Op::Recv(sock)) => {
                    self.recvs += usize::from(c.res > 0);
                    self.on_recv(w, sock as usize, c, dispatch);
                    self.relieve(w)?;
                    n = self.ring.len();
                }
                Some(Op::Send(i)) => self.on_send(w, i, c),
                None => w.invalid(),
            }
        }
        w.core.pool.publish();
        Ok(())
    }

    /// Sends the network does not take (a full send buffer, a congested
    /// link) wait in the kernel holding their slots; when they hold so many
    /// that receiving starves and none has completed for
    /// [`BLOCKED_GIVE_UP`] ([`BLOCKED_GIVE_UP_AGAIN`] within
    /// [`CONGESTED_FOR`] of the last time), they are cancelled (counted in
    /// `send_blocked`) so that the worker goes on receiving.
    fn give_up_blocked<H: Handler>(&mut self, w: &mut Worker<H>) -> io::Result<()> {
        if self.in_flight == 0 || !w.core.pool.recv_starving() {
            return Ok(());
        }
        if self.stalled.0 != self.sends_done {
            self.stalled = (self.sends_done, Instant::now());
            return Ok(());
        }
        let patience = match self.gave_up {
            Some(t) if t.elapsed() < CONGESTED_FOR => BLOCKED_GIVE_UP_AGAIN,
            _ => BLOCKED_GIVE_UP,
        };
        if self.stalled.1.elapsed() < patience {
            return Ok(());
        }
        for i in self.ring.sends_in_flight() {
            self.ring.cancel(Op::Send(i))?;
        }
        self.stalled.1 = Instant::now();
        self.gave_up = Some(self.stalled.1);
        Ok(())
    }
}

/// Runs a worker on io_uring until the stop flag is set. Calls `ready` once
/// the receive is armed (or with the setup error).
pub(crate) fn run<H: Handler>(
    sockets: &[socket2::Socket],
    w: &mut Worker<H>,
    cfg: &Config,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let opts = RingOpts {
        sq_entries: cfg.sq_entries,
        defer_taskrun: cfg.defer_taskrun,
    };
    // One send header per slot, twice over (a slot can be sent to several
    // destinations), at least 64.
    let sends = (w.core.pool.counts().total as usize * 2).max(64);
    // SAFETY: the pool is owned by `w.core`, which outlives the driver: the
    // driver is dropped at the end of this function, or leaked when the
    // kernel may still hold buffers (see below); `w` outlives the call.
    let mut ring = match unsafe { Ring::new(&fds, &w.core.pool, sends, &opts) } {
        Ok(r) => r,
        Err(e) => {
            let msg = e.to_string();
            ready(Err(e));
            return Err(io::Error::other(msg));
        }
    };
    if let Some(min) = cfg.send_zero_copy_min {
        // SAFETY: the same pool as the ring's buffer ring, with the same
        // lifetime (see Ring::new above).
        unsafe { ring.enable_zero_copy(&w.core.pool, u32::try_from(min).unwrap_or(u32::MAX)) };
    }
    let mut d = Driver {
        ring,
        recv_armed: vec![false; fds.len()],
        errors_armed: vec![false; if cfg.tx_timestamps { fds.len() } else { 0 }],
        stamps: if cfg.tx_timestamps && crate::backend::uring_tx_timestamps().is_ok() {
            TxStampRing::new(&fds).ok()
        } else {
            None
        },
        wake_armed: false,
        in_flight: 0,
        send_headers: sends,
        wake_fd: w.core.shared.inbox.wake.fd(),
        sends_done: 0,
        stalled: (0, Instant::now()),
        gave_up: None,
        timer: None,
        timer_fired: false,
        settling: false,
        recvs: 0,
    };
    let setup = d
        .arm_wake()
        .and_then(|_| (0..fds.len()).try_for_each(|i| d.arm_recv(i)))
        .and_then(|_| d.arm_errors())
        .and_then(|_| d.ring.submit());
    if let Err(e) = setup {
        let msg = e.to_string();
        ready(Err(e));
        // Part may have reached the kernel: leak rather than risk it.
        w.core.pool.leak();
        std::mem::forget(d);
        return Err(io::Error::other(msg));
    }
    w.core.stats.c.recv_arms.add(1);
    let mut spin = Spin::new(cfg.spin_us, sys::cpu::sched(), Instant::now());
    // Parking (park.rs says when it is sound): one socket, blocking, the
    // ring's task work deferred, no sends whose completion says more than
    // "sent", and no other light-load wait asked for.
    let mut park = (cfg.park
        && fds.len() == 1
        && d.ring.defers_task_work()
        && cfg.send_zero_copy_min.is_none()
        && !cfg.tx_timestamps
        && !w.core.busy_poll
        && spin.is_none()
        && sockets[0].nonblocking().is_ok_and(|nb| !nb))
    .then(park::Park::new);
    ready(Ok(()));
    w.start();
    let result = (|| -> io::Result<()> {
        loop {
            if w.core.stopping() {
                return Ok(());
            }
            // A light turn, nothing of the ring's in flight: wait in
            // `recvmsg` instead, until something needs the ring.
            if let Some(p) = park.as_mut()
                && d.in_flight == 0
                && p.wanted(std::mem::take(&mut d.recvs))
            {
                p.run(&sockets[0], w)?;
                continue;
            }
            let fresh = d.flush(w)?;
            for i in 0..fds.len() {
                if !d.recv_armed[i] && w.core.pool.recv_home() > 0 {
                    d.arm_recv(i)?;
                    w.core.stats.c.recv_arms.add(1);
                }
            }
            if !d.wake_armed {
                d.arm_wake()?;
            }
            d.arm_errors()?;
            let timer_due = d.arm_timer(w)?;
            // A batch of sends (a flood): submit them and wait for them and
            // one more completion in the same enter, rather than waking once
            // for the sends and entering again; bounded, since a send that
            // waits for socket space must not hold the loop. A few sends (a
            // server answering requests as they come): the replies just
            // queued complete as they are submitted (a UDP send that finds
            // socket space), so the same enter submits them and sleeps until
            // the next request: one system call per request, not two (PERF.md,
            // the kv bench). Only when every send in flight is one of those:
            // an older one waits for socket space, and waiting for it would
            // hold the next request (waiting for every send held each
            // turnaround by ~90 µs on this machine kind: the bridge bench).
            // The timer's `SETTLE` bounds how long they go unreaped when no
            // request comes, and, should one find the socket full after all,
            // how long a lone completion (a stop's wake-up) waits with it.
            let mut light = false;
            let (want, timeout) = if w.core.busy_poll || w.core.shared.inbox.pending() || timer_due
            {
                // Never sleep (busy polling, Sender datagrams waiting for
                // send slots, a timer due): submit, run deferred
                // completions, go on.
                (1, Some(Duration::ZERO))
            } else if d.in_flight >= BATCH_WAIT {
                let t = w.core.timers.next().map_or(SEND_WAIT, |t| t.min(SEND_WAIT));
                // The one more is a receive: with none armed (the ring ran
                // dry, ENOBUFS) it cannot come, and waiting for it would
                // hold the slots' return, and the re-arm, to the timeout.
                (d.in_flight + usize::from(d.any_recv_armed()), Some(t))
            } else {
                // The handler's timers wake it as the timer's completion.
                light = true;
                if fresh > 0 && fresh == d.in_flight && d.any_recv_armed() {
                    d.arm_settle()?;
                    (fresh + 1, None)
                } else {
                    (1, None)
                }
            };
            w.core.stats.c.waits.add(1);
            // Once per turn, here: whenever the worker sleeps, what it
            // counted is what others read.
            w.core.publish();
            match spin.as_mut().filter(|_| light) {
                Some(s) => s.then_wait(&mut d.ring, &mut w.core, want)?,
                None => d.ring.wait(want, timeout)?,
            }
            d.handle(w, true)?;
            if let Some(r) = &mut d.stamps {
                // Posted by task work during the wait: memory reads only.
                r.take(false, |_, id, ns| w.tx_timestamp(id, ns));
            }
            d.give_up_blocked(w)?;
            if w.core.shared.inbox.pending() {
                // Sender datagrams that waited for send slots.
                w.drain_inbox();
            }
            // Slots came back with the completions: a handler refused
            // before resumes (its sends go with the next submit).
            w.writable();
            // Light load: timers are due when the timer's completion says
            // so (no clock read per iteration); otherwise look each time.
            if std::mem::take(&mut d.timer_fired) || !light {
                w.fire_timers();
            }
        }
    })();
    if let Some(p) = park.as_mut() {
        p.finish(&sockets[0]);
    }
    let down = d.shutdown(w, SHUTDOWN_LIMIT);
    w.core.publish();
    if down.is_err() {
        // The kernel may still hold buffers: keep the ring (and with it the
        // registrations) and the pool's memory for the life of the process
        // rather than risk a write into freed memory.
        w.core.pool.leak();
        std::mem::forget(d);
        return result.and(down);
    }
    // A closed ring is torn down asynchronously and would keep the sockets
    // bound for a while; release them before returning.
    d.ring.release_files();
    drop(d);
    result
}
