//! The `mmsg` and `simple` backends' loop: batched `recvmmsg`/`sendmmsg`
//! (or one `recvmsg`/`sendmsg` per datagram) on non-blocking sockets,
//! waiting in `ppoll` on the sockets and the worker's eventfd. The header
//! arrays are [`crate::sys::mmsg::MmsgBufs`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::backend::worker::Worker;
use crate::error::is_icmp_errno;
use crate::sys;
use crate::sys::mmsg::MmsgBufs;
use crate::worker::handler::Handler;

/// Receive calls per socket per loop iteration before timers and the inbox
/// get a turn.
const RECV_BUDGET: usize = 16;
/// How many times the send at the front of the queue may find the socket's
/// buffer full (`EAGAIN`) before it is given up (counted in
/// `send_blocked`). Tries are at least
/// [`RETRY_EVERY`] apart, or when `poll` says the socket is writable.
const SEND_RETRIES: u32 = 50;
const RETRY_EVERY: Duration = Duration::from_millis(1);
/// How long sends may still go out after a stop before they are cancelled.
const SEND_GRACE: Duration = Duration::from_millis(250);
/// Handler resumptions (`on_writable`, each followed by a flush) per pass
/// of the loop, so that a long fan-out does not hold receiving.
const WRITABLE_ROUNDS: usize = 16;

/// The loop's buffers and descriptors.
struct Loop {
    fds: Vec<RawFd>,
    rx: MmsgBufs,
    tx: MmsgBufs,
    single: bool,
    /// The send at the front found a full buffer at this time: the rest
    /// waits, and the worker goes on receiving.
    blocked: Option<Instant>,
    /// Full-buffer answers to the send at the front so far.
    front_tries: u32,
}

impl Loop {
    /// A loop over `fds`, receiving and sending `batch` at a time (one
    /// with `single`).
    fn new(fds: Vec<RawFd>, batch: usize, single: bool) -> Self {
        let batch = if single { 1 } else { batch };
        Loop {
            fds,
            rx: MmsgBufs::new(batch),
            tx: MmsgBufs::new(batch),
            single,
            blocked: None,
            front_tries: 0,
        }
    }

    /// Sends what is queued, in batches of one socket each. A full socket
    /// buffer does not hold the worker: the rest of the queue waits and is
    /// tried again when the socket is writable or a millisecond later,
    /// while receiving goes on. A send refused [`SEND_RETRIES`] times is
    /// given up (counted in `send_blocked`); while the waiting sends hold
    /// nearly every receive slot, so are the socket's waiting sends, oldest
    /// first, until half the receive slots are home.
    fn flush<H: Handler>(&mut self, w: &mut Worker<H>) {
        if self.blocked.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return;
        }
        self.blocked = None;
        w.core.coalesce_queue();
        // At most what is queued now: a handler told of a refused send may
        // queue it again, and one that always does must not hold the
        // worker here (the rest goes on the next turn, which does not
        // sleep while it waits).
        let mut left = w.core.queue.len();
        while left > 0
            && let Some(first) = w.core.queue.as_slice().first()
        {
            let sock = first.sock;
            let fd = self.fds[usize::from(sock)];
            match self
                .tx
                .send(fd, &w.core.pool, w.core.queue.as_slice(), self.single)
            {
                Ok(k) => {
                    for j in 0..k {
                        let t = w.core.queue.as_slice()[j];
                        w.complete(t, Ok(()));
                    }
                    w.core.queue.consume(k);
                    self.front_tries = 0;
                    left = left.saturating_sub(k);
                }
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    if errno == libc::EINTR {
                        continue;
                    }
                    // A full socket buffer waits (uring's kernel waits
                    // likewise); ENOBUFS, a queue discipline that dropped
                    // the datagram, is a refusal like any other errno.
                    if errno == libc::EAGAIN {
                        self.front_tries += 1;
                        let starving = w.core.pool.recv_starving();
                        if self.front_tries < SEND_RETRIES && !starving {
                            self.blocked = Some(Instant::now());
                            return;
                        }
                        // Given up: the front, after its retries; or, the
                        // waiting sends holding nearly every receive slot,
                        // this socket's, oldest first, until half the slots
                        // are home. Given up one at a time, the worker went
                        // back and forth with a few milliseconds of arrivals
                        // between, and one that waited for its CPU meanwhile
                        // had its socket drop what came.
                        // At most what is queued now: the handler, told
                        // of each, may queue more (a retry), which must not
                        // keep this loop going.
                        for _ in 0..w.core.queue.len() {
                            let Some(t) = w.core.queue.pop_front() else {
                                break;
                            };
                            w.give_up(t);
                            let q = w.core.queue.as_slice();
                            let same_socket = q.first().is_some_and(|f| f.sock == sock);
                            if !starving || !same_socket || w.core.pool.recv_half_home() {
                                break;
                            }
                        }
                        // The socket is still full: the rest (and any
                        // retry the handler queued) waits for the next try.
                        self.front_tries = 0;
                        self.blocked = Some(Instant::now());
                        return;
                    } else if let Some(t) = w.core.queue.pop_front() {
                        w.complete(t, Err(errno));
                    }
                    self.front_tries = 0;
                    left -= 1;
                }
            }
        }
    }

    /// After a stop: sends get [`SEND_GRACE`] to go out, then what is left
    /// is cancelled (counted), so a stop takes bounded time.
    fn finish<H: Handler>(&mut self, w: &mut Worker<H>) {
        let start = Instant::now();
        loop {
            self.flush(w);
            if w.core.queue.is_empty() {
                return;
            }
            if start.elapsed() >= SEND_GRACE {
                w.cancel_queued();
                return;
            }
            let fd = self.fds[usize::from(w.core.queue.as_slice()[0].sock)];
            let mut p = [libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            }];
            let _ = sys::poll(&mut p, Some(RETRY_EVERY));
            self.blocked = None;
        }
    }

    /// Receives what socket `i` has queued (up to the budget) and
    /// dispatches it. Returns whether anything arrived, or a fatal error.
    fn drain_socket<H: Handler>(&mut self, i: usize, w: &mut Worker<H>) -> io::Result<bool> {
        let fd = self.fds[i];
        let mut got = false;
        for _ in 0..RECV_BUDGET {
            match self.rx.recv(fd, &mut w.core.pool, self.single) {
                Ok(0) => break,
                Ok(n) => {
                    got = true;
                    for k in 0..n {
                        match self.rx.take(k, i as u16, &mut w.core.pool) {
                            Some((lent, meta)) => w.dispatch(meta, lent),
                            None => w.invalid(),
                        }
                    }
                    self.flush(w);
                    if n < self.rx.batch() {
                        break;
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(errno) if is_icmp_errno(errno) || errno == libc::ECONNRESET => {
                        got = true;
                        w.socket_error(i, errno);
                    }
                    _ => return Err(e),
                },
            }
        }
        Ok(got)
    }
}

/// Runs a worker until the stop flag is set.
pub(crate) fn run<H: Handler>(
    sockets: &[socket2::Socket],
    w: &mut Worker<H>,
    batch: usize,
    single: bool,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    if let Err(e) = sockets.iter().try_for_each(|s| s.set_nonblocking(true)) {
        let msg = e.to_string();
        ready(Err(e));
        return Err(io::Error::other(msg));
    }
    let mut l = Loop::new(
        sockets.iter().map(|s| s.as_raw_fd()).collect(),
        batch,
        single,
    );
    let wake = w.core.shared.inbox.wake.fd();
    let mut pollfds: Vec<libc::pollfd> = l
        .fds
        .iter()
        .chain(std::iter::once(&wake))
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = l.fds.len();
    // What the last `ppoll` found readable (the sockets, then the
    // eventfd), for the turn right after it; every other turn tries them
    // all. A flood's turn is then one `sendmmsg` and one zero-timeout
    // `ppoll`, not also a `recvmmsg` and an eventfd `read` that find
    // nothing (both are level-triggered: what arrives after the poll is
    // seen by the next one).
    let mut readable = vec![true; n + 1];
    w.core.stats.c.recv_arms.add(n as u64);
    ready(Ok(()));
    w.start();
    l.flush(w);
    let result = loop {
        if w.core.stopping() {
            break Ok(());
        }
        let mut idle = true;
        let mut fatal = None;
        for i in (0..n).filter(|&i| readable[i]) {
            match l.drain_socket(i, w) {
                Ok(got) => idle &= !got,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = fatal {
            break Err(e);
        }
        // Posted by Senders (a wake-up), or still waiting for send slots.
        let woken = readable[n] && w.core.shared.inbox.wake.drain();
        if woken || w.core.shared.inbox.pending() {
            w.drain_inbox();
        }
        readable.fill(true);
        w.fire_timers();
        l.flush(w);
        // Slots came back with the flush: a handler refused before resumes
        // (a few rounds here; more on the next pass, which does not sleep
        // while one is due).
        for _ in 0..WRITABLE_ROUNDS {
            if !w.writable() {
                break;
            }
            l.flush(w);
        }
        // The stop flag is set before the eventfd is written: if the drain
        // above swallowed a stop's wake-up, the flag says so now. Check it
        // before sleeping, or that wake-up would be lost. Likewise Sender
        // datagrams still waiting (for send slots, now free): no eventfd
        // write will come for them.
        // Sends left for the next turn (not waiting for socket room): no
        // wake-up would come for them.
        let sends_wait = !w.core.queue.is_empty() && l.blocked.is_none();
        if w.end_turn(idle && !sends_wait) {
            // Blocked sends: wake when a socket is writable, or to retry.
            // With no receive slot home (every one held by a blocked
            // send), a readable socket could not be read: waiting for
            // POLLIN would return at once, turn after turn, a busy loop
            // until the retry. Then only writability, the retry, timers
            // and the eventfd wake the worker (errors are always reported).
            let blocked = l.blocked.is_some();
            let mut events = 0;
            if w.core.pool.recv_home() > 0 {
                events |= libc::POLLIN;
            }
            if blocked {
                events |= libc::POLLOUT;
            }
            for p in pollfds.iter_mut() {
                p.revents = 0;
            }
            for p in pollfds[..n].iter_mut() {
                p.events = events;
            }
            // Busy polling checks and goes on: it never sleeps.
            let timeout = if w.core.busy_poll {
                Some(Duration::ZERO)
            } else if blocked {
                Some(
                    w.core
                        .timers
                        .next()
                        .map_or(RETRY_EVERY, |t| t.min(RETRY_EVERY)),
                )
            } else {
                w.core.timers.next()
            };
            sys::poll(&mut pollfds, timeout)?;
            for (r, p) in readable.iter_mut().zip(&pollfds) {
                *r = p.revents != 0;
            }
            for (i, p) in pollfds[..n].iter().enumerate() {
                if p.revents & libc::POLLERR != 0 {
                    w.drain_errors(i);
                }
                if p.revents & libc::POLLOUT != 0 {
                    l.blocked = None;
                }
            }
        }
    };
    w.stop();
    l.finish(w);
    w.core.publish();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufring::Pool;
    use crate::error::ErrorEvent;
    use crate::worker::datagram::Datagram;
    use crate::worker::transport::Transport;
    use std::net::SocketAddr;
    use std::os::unix::net::UnixDatagram;

    /// A handler that queues every send it is told was given up again, up
    /// to `cap` times: what the give-up pass must not let run for ever.
    struct Resend {
        to: SocketAddr,
        given_up: u64,
        cap: u64,
    }

    impl Handler for Resend {
        fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
        fn on_error(&mut self, ev: ErrorEvent, tx: &mut Transport<'_>) {
            if let ErrorEvent::SendGivenUp { datagrams, .. } = ev {
                self.given_up += datagrams;
                if self.given_up < self.cap {
                    tx.send_to(b"again", self.to).unwrap();
                }
            }
        }
    }

    /// Every receive slot out (the receive batch holds them) and every send
    /// refused with `EAGAIN` (a Unix datagram socket whose peer's queue is
    /// full stands in for a UDP socket whose buffer is): the pass that gives
    /// sends up gives up what was queued when it began, not the retries the
    /// handler queues from each event, and the flush ends there.
    #[test]
    fn a_give_up_pass_ends_although_the_handler_requeues_each_send() {
        let (a, _peer) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        while a.send(b"fill").is_ok() {}
        let to: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let mut pool = Pool::new(2048, 8, 8, false).unwrap();
        // Every receive slot out, as if a receive batch held them all.
        while pool.reserve_recv().is_some() {}
        assert!(pool.recv_starving());
        let handler = Resend {
            to,
            given_up: 0,
            cap: 1000,
        };
        let local = "127.0.0.1:4000".parse().unwrap();
        let mut w = crate::backend::worker::test_worker(vec![a.as_raw_fd()], local, pool, handler);
        // Connected to `to`: the sends carry no address, which the Unix
        // socket takes.
        w.core.socks.connected[0] = Some(sys::RawAddr::from_socket_addr(to, false));
        // Four sends of growing length: not one train the queue could make
        // of them.
        for n in 1..=4 {
            w.core.send_copy(0, &vec![b'q'; n], to, None).unwrap();
        }
        assert_eq!(w.core.queue.len(), 4);
        let mut l = Loop::new(vec![a.as_raw_fd()], 4, false);
        l.flush(&mut w);
        assert_eq!(w.handler.given_up, 4, "the four queued, not their retries");
        assert_eq!(w.core.queue.len(), 4, "the retries wait for the next try");
        assert!(l.blocked.is_some());
        assert_eq!(w.core.stats.c.send_blocked.get(), 4);
    }
}
