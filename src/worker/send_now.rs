//! Sends that go at once: while a parked `uring` worker
//! ([`Config::park`](crate::Config::park)) hands a datagram to its handler,
//! a send the handler makes with nothing queued before it goes out in the
//! handler's call, by `sendmsg`, from the bytes it was given (a copy send's
//! own bytes, or the lent slot's): no send slot, no queue, no completion to
//! count later. The queue's order stays: once anything is queued, the
//! sends after it queue too.
//!
//! A send the kernel does not take at once is queued as it would have
//! been: the worker's next pass sends it, or the kernel refuses it there,
//! counted and reported as any queued send. A socket's pending ICMP error
//! that such a send took from the socket (the kernel reports it on the next
//! call) is noted, for the worker to read the error queue after the call.

use std::os::fd::RawFd;

use super::core::Core;
use crate::error::is_icmp_errno;
use crate::sys::{self, Transmit};

/// Where sends may go at once, while a parked worker hands over a
/// datagram.
#[derive(Default)]
pub(crate) struct SendNow {
    /// The socket (its index and descriptor), while sends may go at once.
    on: Option<(u16, RawFd)>,
    /// An ICMP error a send at once took from the socket.
    error: Option<i32>,
}

impl Core {
    /// Sends may go at once on socket `sock` (`fd`) until
    /// [`Core::send_later`].
    pub fn send_now_on(&mut self, sock: u16, fd: RawFd) {
        self.now.on = Some((sock, fd));
    }

    /// Sends queue again; the ICMP error a send at once took, if any.
    pub fn send_later(&mut self) -> Option<i32> {
        self.now.on = None;
        self.now.error.take()
    }

    /// Sends `t`, whose bytes are `data`, at once if sends may and nothing
    /// is queued: true when the kernel took it (counted as sent). False:
    /// the caller queues it.
    pub(super) fn send_at_once(&mut self, t: &Transmit, data: &[u8]) -> bool {
        let Some((sock, fd)) = self.now.on else {
            return false;
        };
        if t.sock != sock
            || t.segment.is_some()
            || self.stamp_next.is_some()
            || !self.queue.is_empty()
        {
            return false;
        }
        let mut t = *t;
        self.to_peer(&mut t);
        match sys::mmsg::send_bytes(fd, data, &t) {
            Ok(()) => {
                let c = &self.stats.c;
                c.sent.add(1);
                c.sent_bufs.add(1);
                c.bytes_sent.add(data.len() as u64);
                true
            }
            Err(e) => {
                if let Some(errno) = e.raw_os_error().filter(|&e| is_icmp_errno(e)) {
                    self.now.error = Some(errno);
                }
                false
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
