//! Sends that go at once: while a parked `uring` worker
//! ([`Config::park`](crate::Config::park)) hands a datagram to its handler,
//! the first send the handler makes, if nothing is queued before it, goes
//! out in the handler's call, by `sendto` (`sendmsg` when it needs a
//! control message), from the bytes it was given (a
//! copy send's own bytes, or the lent slot's): no send slot, no queue, no
//! completion to count later. A lone answer is the common case; the sends
//! after the first queue, and go together (`sendmmsg`) after the call, so
//! that a handler that sends many (a fan-out) keeps its batches. The
//! queue's order stays: once anything is queued, the sends after it queue
//! too.
//!
//! A send the kernel refuses at once goes as a queued one that failed
//! would: no room (`EAGAIN`, `ENOBUFS`) and it is queued, to wait for
//! room; an error an ICMP message causes (the socket's pending one, which
//! the kernel reports on the next send, whatever its destination) and it
//! is queued to go once more, the error queue read after the call, as the
//! worker does for a queued send; any other refusal is counted and handed
//! to the handler's `on_error` after the call.

use std::os::fd::RawFd;

use super::core::Core;
use crate::error::is_icmp_errno;
use crate::sys::{self, Transmit};

/// Where a send may go at once, while a parked worker hands over a
/// datagram, and what became of it.
#[derive(Default)]
pub(crate) struct SendNow {
    /// The socket (its index and descriptor), until a send was tried.
    on: Option<(u16, RawFd)>,
    /// What the worker is to do after the call.
    after: After,
}

/// What a send tried at once leaves the worker to do after the handler's
/// call.
#[derive(Default)]
pub(crate) struct After {
    /// Read the socket's error queue: the send met an ICMP error.
    pub drain: bool,
    /// The send the kernel refused (its bytes in no slot), and why: to
    /// count and report as a refused send.
    pub refused: Option<(Transmit, i32)>,
}

impl Core {
    /// The first send may go at once on socket `sock` (`fd`), until
    /// [`Core::send_later`].
    pub fn send_now_on(&mut self, sock: u16, fd: RawFd) {
        self.now.on = Some((sock, fd));
    }

    /// Sends queue again; what the one tried at once left to do.
    pub fn send_later(&mut self) -> After {
        self.now.on = None;
        std::mem::take(&mut self.now.after)
    }

    /// Sends `t`, whose bytes are `data`, at once if it is the first send
    /// of the call and nothing is queued (see the module doc). `None`: done
    /// with (sent, or refused and reported after the call); `Some`: the
    /// caller queues it, as sent once already when `Some(true)`.
    pub(super) fn send_at_once(&mut self, t: &Transmit, data: &[u8]) -> Option<bool> {
        let queue = Some(false);
        let Some((sock, fd)) = self.now.on else {
            return queue;
        };
        if t.sock != sock
            || t.segment.is_some()
            || self.stamp_next.is_some()
            || !self.queue.is_empty()
        {
            return queue;
        }
        // One send a call at once: the rest go together after it.
        self.now.on = None;
        let mut t = *t;
        self.to_peer(&mut t);
        let errno = match sys::mmsg::send_bytes(fd, data, &t) {
            Ok(()) => {
                let c = &self.stats.c;
                c.sent.add(1);
                c.sent_bufs.add(1);
                c.bytes_sent.add(data.len() as u64);
                return None;
            }
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        };
        match errno {
            libc::EAGAIN | libc::ENOBUFS | libc::EINTR => queue,
            // As the worker does for a queued send (`send_failed`): the
            // error read, the datagram sent once more. Not EMSGSIZE: that
            // is about this datagram.
            e if is_icmp_errno(e) && e != libc::EMSGSIZE => {
                self.now.after.drain = true;
                Some(true)
            }
            // Never one the worker sends again (that is the arm above),
            // so its slot, none, is never read.
            e => {
                self.now.after.refused = Some((t, e));
                None
            }
        }
    }

    /// A send to the socket's connected peer goes without an address (the
    /// kernel's cached route).
    pub(super) fn to_peer(&self, t: &mut Transmit) {
        if t.dst.len() != 0
            && let Some(Some(peer)) = self.socks.connected.get(usize::from(t.sock))
            && peer.same(&t.dst)
        {
            t.dst = sys::RawAddr::zeroed();
        }
    }
}
