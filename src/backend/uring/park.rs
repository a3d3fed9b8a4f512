//! Parking ([`Config::park`](crate::Config::park)): at light load the
//! `uring` worker waits for its next datagram in `recvmsg(2)` on its
//! socket rather than in `io_uring_enter`, and sends the answers with
//! `sendto` (`sendmsg` for one that needs a control message).
//!
//! Why: a request that comes alone wakes the worker from idle, and on a
//! host whose idle CPUs halt (most virtual machines) that wake-up is most
//! of what the request costs. io_uring's wake-up path (the socket's wait
//! queue, the ring's task work, then the waiter) costs more than a
//! blocking receive's, however little the ring is asked to do (PERF.md,
//! the kv bench). Parked, a request costs the two system calls a blocking
//! loop makes.
//!
//! Why it stays correct:
//! - **the ring takes nothing meanwhile**: its multishot receive stays
//!   armed, and with `DEFER_TASKRUN` (required) the kernel runs it only
//!   when this thread next waits on the ring; back there it finds the
//!   socket empty, or takes what came since.
//! - **the slot**: every receive slot is the kernel's (in the buffer
//!   ring), so the datagram lands in a send slot, marked written, so that
//!   a later copy into that slot is scrubbed as any send slot's is.
//! - **order**: answers go by `sendmsg`/`sendmmsg` only while nothing is
//!   in flight in the ring; a full socket buffer (`EAGAIN`) sends the
//!   worker back to the ring, whose sends wait for room. The handler's
//!   first send, with nothing queued before it, goes in the handler's
//!   call, from the bytes it was given (`worker/send_now.rs`).
//! - **what `recvmsg` cannot wake for** sends the worker back to the ring
//!   first: a [`Sender`](crate::Sender)'s posts (once one exists the
//!   worker never parks: waking `recvmsg` would take a datagram to the
//!   socket per post, where the ring's eventfd costs a write), a stop
//!   (seen after each datagram, or at the timeout: a stop waits at most
//!   [`PARK_TIMEOUT`]; in `ppoll`, below, at once), and the handler's
//!   next timer: the socket's
//!   timeout ends the park a margin before the latest it may fire (when
//!   due, or its slack after: [`Transport::set_timer_slack`]; the timeout
//!   counts in the kernel's ticks, ending up to one tick late, and the
//!   margin is a tick and the drift). A timer due by then is fired here,
//!   after the datagram or the timeout that came after its time; one not
//!   yet due goes to the ring, whose own timer fires it on time. The
//!   timeout is set again only when it has drifted [`DRIFT`] from what is
//!   wanted, so that a request costs no `setsockopt` in a closed loop. A
//!   slack wider than the margin needs one timeout for every wait,
//!   `slack - margin` (a wait begins no later than the timer is due, a
//!   due one being fired first, so it ends in time): set once, not once
//!   a request as the timer nears (~0.8 `setsockopt` a request where
//!   each worker was asked every 10-20 ms); a wait that it ends before
//!   the timer is due waits again.
//! - **sparse datagrams**: a park with nothing to do for
//!   [`PARK_TIMEOUT`] used to go back to the ring, and requests further
//!   apart than that each came through it, whose wake-up adds latency
//!   (the kv bench, each server asked every 180-360 ms: p50 1.11-1.15x the
//!   std loop's, 1.05-1.10x waiting as below; CPU not told apart, PERF.md).
//!   Now such a park, and waits while datagrams come further apart than
//!   that, are a `ppoll` on the socket and the worker's eventfd, then a
//!   `recvmsg` that does not block: ended by a datagram, by the timer
//!   (exactly at the latest it may fire: `ppoll`'s clock is not the
//!   tick's), or by a stop or a post, which the ring takes; with no timer,
//!   no timeout. Not for datagrams closer together: its two system calls
//!   cost more than a blocking `recvmsg` with a wait that sometimes ends
//!   early (asked every 30 ms with kv's slack timer, p50 1.08-1.12x
//!   against 0.99-1.04x).
//! - **bounded**: the socket's `SO_RCVTIMEO` ([`PARK_TIMEOUT`], the old
//!   value put back at the end) bounds a blocking wait; receives that
//!   find a datagram already waiting (a flood, where the ring's batches
//!   are cheaper) end a park after [`HOT_TURNS`] in a row.
//!
//! [`Transport::set_timer_slack`]: crate::Transport::set_timer_slack

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::backend::worker::Worker;
use crate::bufring::HEADROOM;
use crate::error::is_icmp_errno;
use crate::sys::mmsg::MmsgBufs;
use crate::worker::handler::Handler;

/// The longest a park waits for a datagram.
pub(super) const PARK_TIMEOUT: Duration = Duration::from_millis(50);
/// A receive that returns sooner than this found its datagram waiting.
const HOT: Duration = Duration::from_micros(5);
/// Receives in a row that found their datagram waiting end a park.
const HOT_TURNS: u32 = 8;
/// Answers per `sendmmsg`.
const SEND_BATCH: usize = 16;
/// How far the socket's timeout may be from the one wanted before it is
/// set again.
const DRIFT: Duration = Duration::from_millis(1);
/// A park shorter than this is not worth its timeout's `setsockopt`.
const SHORTEST: Duration = Duration::from_millis(1);

/// One worker's parking.
pub(super) struct Park {
    rx: MmsgBufs,
    tx: MmsgBufs,
    /// The socket's `SO_RCVTIMEO` before the first park, to put back.
    saved: Option<Option<Duration>>,
    /// What the socket's `SO_RCVTIMEO` is now (once `saved`).
    timeout: Duration,
    /// How long before a handler timer a park ends: a kernel tick and the
    /// drift.
    margin: Duration,
    /// Datagrams come further apart than a park lasts ([`PARK_TIMEOUT`]):
    /// the waits are in `ppoll` (the module doc says why).
    sparse: bool,
}

impl Park {
    /// Parking, not yet begun.
    pub(super) fn new() -> Self {
        Park {
            rx: MmsgBufs::new(1),
            tx: MmsgBufs::new(SEND_BATCH),
            saved: None,
            timeout: PARK_TIMEOUT,
            margin: crate::sys::clock::tick() + DRIFT,
            sparse: false,
        }
    }

    /// Whether to park after a turn of the ring that handed over `recvs`
    /// datagrams (a light turn: one or two).
    pub(super) fn wanted(&self, recvs: usize) -> bool {
        (1..=2).contains(&recvs)
    }

    /// Runs parked: answers what the handler queued, then waits in
    /// `recvmsg` and hands each datagram over, until something needs the
    /// ring. The socket is the worker's one socket.
    pub(super) fn run<H: Handler>(
        &mut self,
        socket: &socket2::Socket,
        w: &mut Worker<H>,
    ) -> io::Result<()> {
        let r = self.parked(socket, w);
        // Receive slots the sends gave back go to the kernel now, before
        // the ring receives again.
        w.core.pool.publish();
        r
    }

    fn parked<H: Handler>(
        &mut self,
        socket: &socket2::Socket,
        w: &mut Worker<H>,
    ) -> io::Result<()> {
        let fd = socket.as_raw_fd();
        if self.saved.is_none() {
            let old = socket.read_timeout()?;
            socket.set_read_timeout(Some(self.timeout))?;
            self.saved = Some(old);
        }
        let mut hot = 0;
        // When the last datagram came (or the park began).
        let mut heard = Instant::now();
        loop {
            // What only the ring waits for, or a flood (its batches are
            // cheaper).
            let inbox = &w.core.shared.inbox;
            if w.core.stopping() || inbox.pending() || inbox.had_sender() || hot >= HOT_TURNS {
                return Ok(());
            }
            if !self.send_queued(fd, w) {
                return Ok(());
            }
            // Slots came back with the sends: a handler refused before
            // resumes, and what it queues goes out before the next wait.
            if w.writable() && !w.core.queue.is_empty() {
                continue;
            }
            let start = Instant::now();
            // A timer due: one its slack let wait for a datagram or the
            // socket's timeout. One due again at once (set for "now") is
            // the ring's to fire among its receives.
            let next = w.core.timers.next_at();
            if next.is_some_and(|at| at <= start) {
                w.fire_timers();
                if w.core
                    .timers
                    .next_at()
                    .is_some_and(|at| at <= Instant::now())
                {
                    return Ok(());
                }
                continue;
            }
            // Until a margin before the latest the handler's next timer
            // may fire (its slack after it is due), which the ring fires on
            // time if no datagram or timeout here came after it was due; or,
            // with a slack wider than the margin, `slack - margin` for every
            // wait (the module doc says why).
            let slack = w.core.timers.slack();
            let steady = next.is_some() && slack >= self.margin + SHORTEST;
            let latest = next.map(|at| at.checked_add(slack).unwrap_or(at));
            // While datagrams are sparse, in `ppoll` until that latest
            // (its clock is exact) or for ever (the wake-up eventfd ends it
            // for a stop or a post).
            let limit = match latest {
                _ if self.sparse => None,
                None => Some(PARK_TIMEOUT),
                Some(_) if steady => Some((slack - self.margin).min(PARK_TIMEOUT)),
                Some(latest) => {
                    let left = latest.saturating_duration_since(start);
                    if left < self.margin + SHORTEST {
                        return Ok(());
                    }
                    Some((left - self.margin).min(PARK_TIMEOUT))
                }
            };
            if let Some(limit) = limit
                && self.timeout.abs_diff(limit) > DRIFT
            {
                socket.set_read_timeout(Some(limit))?;
                self.timeout = limit;
            }
            // The datagram takes a send slot; the answer may need another.
            if w.core.pool.send_free() < 2 {
                return Ok(());
            }
            w.core.stats.c.waits.add(1);
            w.core.stats.c.parked_waits.add(1);
            // Whenever the worker sleeps, what it counted is what others
            // read; the slot the receive waits with is home, as the ring's
            // receive slots are (an idle worker has none out).
            w.core.publish();
            let Some(mut lent) = w.core.pool.alloc_send() else {
                return Ok(());
            };
            let got = match limit {
                Some(_) => self.rx.recv_lent(fd, 0, 0, &mut lent),
                None => {
                    let wake = w.core.shared.inbox.wake.fd();
                    let until = latest.map(|l| l.saturating_duration_since(start));
                    match poll_for(fd, wake, until)? {
                        Polled::Datagram => self.rx.recv_lent(fd, 0, libc::MSG_DONTWAIT, &mut lent),
                        // The timer may fire now: at the top.
                        Polled::Timer => {
                            w.core.pool.release(lent);
                            continue;
                        }
                        Polled::Ring => {
                            w.core.pool.release(lent);
                            return Ok(());
                        }
                    }
                }
            };
            match got {
                Ok(meta) => {
                    let now = Instant::now();
                    hot = if now.saturating_duration_since(start) < HOT {
                        hot + 1
                    } else {
                        0
                    };
                    // Further apart than a park lasts: the next waits in
                    // `ppoll`.
                    self.sparse = now.saturating_duration_since(heard) > PARK_TIMEOUT;
                    heard = now;
                    // The kernel wrote the send slot: unknown bytes now, to
                    // be scrubbed before a copy is built there.
                    let pool = &mut w.core.pool;
                    pool.set_tag(lent.slot(), 0);
                    pool.note_written(lent.slot(), HEADROOM as u32 + meta.len);
                    // The handler's first send goes in its call when
                    // nothing is queued before it (`worker/send_now.rs`).
                    w.core.send_now_on(0, fd);
                    w.dispatch(meta, lent);
                    let after = w.core.send_later();
                    if let Some((t, errno)) = after.refused {
                        w.account(&t, Err(errno));
                    }
                    if after.drain {
                        w.drain_errors(0);
                    }
                }
                Err(e) => {
                    w.core.pool.release(lent);
                    match e.raw_os_error() {
                        // Readable in `ppoll` (an error-queue entry) and
                        // nothing to read: the entries to the handler; none,
                        // and the ring looks.
                        Some(libc::EAGAIN) if limit.is_none() => {
                            if w.drain_errors(0) == 0 {
                                return Ok(());
                            }
                        }
                        // The socket's timeout: a handler timer due (fired
                        // here, next turn) or near (the ring's to fire), or
                        // nothing came in a whole park; sooner (a timeout
                        // set for a timer since cancelled), wait again.
                        Some(libc::EAGAIN) => {
                            let now = Instant::now();
                            let quiet = match w.core.timers.next_at() {
                                Some(at) if limit.is_some_and(|l| l < PARK_TIMEOUT) => {
                                    if at <= now {
                                        continue;
                                    }
                                    if !steady {
                                        return Ok(());
                                    }
                                    // Early for a timer with a slack: wait
                                    // again, unless nothing came in a whole
                                    // park.
                                    now.saturating_duration_since(heard) >= PARK_TIMEOUT
                                }
                                _ => now.saturating_duration_since(start) >= PARK_TIMEOUT / 2,
                            };
                            // Nothing came in a whole park: the waits until
                            // the next datagram are in `ppoll`.
                            self.sparse |= quiet;
                        }
                        Some(libc::EINTR) => {}
                        Some(errno) if is_icmp_errno(errno) || errno == libc::ECONNRESET => {
                            w.socket_error(0, errno);
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    /// Sends what is queued; false when some is left: the socket's buffer
    /// is full (the ring's sends wait for room), or the handler, told of
    /// a refused send, queued more (at most what was queued is sent here:
    /// one that always does must not hold the worker; the ring sends the
    /// rest turn by turn).
    fn send_queued<H: Handler>(&mut self, fd: RawFd, w: &mut Worker<H>) -> bool {
        w.core.coalesce_queue();
        let mut left = w.core.queue.len();
        while left > 0 && !w.core.queue.is_empty() {
            let single = w.core.queue.len() == 1;
            let tried = if single {
                1
            } else {
                w.core.queue.len().min(SEND_BATCH)
            };
            match self
                .tx
                .send(fd, &w.core.pool, w.core.queue.as_slice(), single)
            {
                Ok(k) => {
                    for j in 0..k {
                        let t = w.core.queue.as_slice()[j];
                        w.complete(t, Ok(()));
                    }
                    w.core.queue.consume(k);
                    left = left.saturating_sub(k);
                    // `sendmmsg` stops at a send the kernel refused and
                    // drops why: a pending ICMP error it took from the
                    // socket, which the parked receive will not see. Its
                    // account waits in the error queue.
                    if k < tried {
                        w.drain_errors(0);
                    }
                }
                Err(e) => match e.raw_os_error().unwrap_or(libc::EIO) {
                    libc::EINTR => {}
                    libc::EAGAIN => return false,
                    errno => {
                        if let Some(t) = w.core.queue.pop_front() {
                            w.complete(t, Err(errno));
                        }
                        left -= 1;
                    }
                },
            }
        }
        w.core.queue.is_empty()
    }

    /// Puts the socket's receive timeout back as it was.
    pub(super) fn finish(&mut self, socket: &socket2::Socket) {
        if let Some(old) = self.saved.take() {
            let _ = socket.set_read_timeout(old);
        }
    }
}

/// What ended a wait in `ppoll`.
enum Polled {
    /// The socket is readable (or has an error to read).
    Datagram,
    /// The timeout: the handler's timer may fire.
    Timer,
    /// The worker's eventfd: a stop or a post, the ring's to take.
    Ring,
}

/// Waits in `ppoll` for socket `fd` or the worker's eventfd `wake`, for
/// `until` (for ever: `None`).
fn poll_for(fd: RawFd, wake: RawFd, until: Option<Duration>) -> io::Result<Polled> {
    let mut fds = [fd, wake].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    crate::sys::event::poll(&mut fds, until)?;
    Ok(if fds[1].revents != 0 {
        Polled::Ring
    } else if fds[0].revents != 0 {
        Polled::Datagram
    } else {
        // The timeout, or a signal (`poll` says 0 for both): from the top,
        // where a due timer fires and a wait that is not over begins again.
        Polled::Timer
    })
}
