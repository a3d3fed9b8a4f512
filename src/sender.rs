//! Sending from other threads: a worker's inbox and the [`Sender`] handle
//! that posts into it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::sys::{self, EventFd};

/// Datagrams posted from other threads, waiting for the worker.
pub(crate) struct Inbox {
    pub(crate) queue: Mutex<VecDeque<(Vec<u8>, SocketAddr)>>,
    pub(crate) wake: EventFd,
    pub(crate) capacity: usize,
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Inbox {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            wake: EventFd::new()?,
            capacity,
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// A thread-safe handle that sends through a worker's socket.
///
/// Data is copied into a queue and the worker is woken (an eventfd the
/// worker's ring or poll set watches). Meant for control traffic from code
/// outside the worker, not for the fast path.
#[derive(Clone)]
pub struct Sender {
    inbox: Arc<Inbox>,
}

impl Sender {
    pub(crate) fn new(inbox: Arc<Inbox>) -> Self {
        Sender { inbox }
    }

    /// Queues `data` for `to`. Fails with `WouldBlock` when the queue is full
    /// and with `NotConnected` once the worker has stopped.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        if self.inbox.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "worker stopped",
            ));
        }
        if data.len() > crate::MAX_UDP_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram larger than 65507 bytes",
            ));
        }
        {
            let mut q = self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.inbox.capacity {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "worker send queue full",
                ));
            }
            q.push_back((data.to_vec(), sys::canonical(to)));
        }
        self.inbox.wake.notify();
        Ok(())
    }
}
