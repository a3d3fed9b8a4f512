//! How a worker's ring winds down at a stop: the receives, the wake-up
//! poll, the error polls and the timer cancelled, the handler told once
//! every datagram the kernel handed over has been handled, the sends let
//! out for a grace period and then cancelled, and everything reaped, so
//! that no buffer is held by the kernel when the ring and the pool go.

use std::io;
use std::time::{Duration, Instant};

use super::Driver;
use crate::backend::worker::Worker;
use crate::sys::uring::Op;
use crate::worker::handler::Handler;

/// How long sends may still go out after a stop before they are cancelled.
const SEND_GRACE: Duration = Duration::from_millis(250);

impl Driver {
    /// Stops receiving, lets the handler finish, and reaps until the kernel
    /// holds nothing of ours. Sends the network has not taken after
    /// [`SEND_GRACE`] (a congested link, a full queue discipline) are
    /// cancelled and counted, so a stop takes bounded time whatever the
    /// network does; the whole is bounded by `limit`.
    pub(super) fn shutdown<H: Handler>(
        &mut self,
        w: &mut Worker<H>,
        limit: Duration,
    ) -> io::Result<()> {
        for i in 0..self.recv_armed.len() {
            if self.recv_armed[i] {
                self.ring.cancel(Op::Recv(i as u32))?;
            }
        }
        if self.wake_armed {
            self.ring.cancel(Op::Wake)?;
        }
        for i in 0..self.errors_armed.len() {
            if self.errors_armed[i] {
                self.ring.cancel(Op::Errors(i as u32))?;
            }
        }
        if self.timer.is_some() {
            self.ring.cancel(Op::Timer)?;
        }
        let start = Instant::now();
        let deadline = start + limit;
        let mut stopped = false;
        let mut sends_cancelled = false;
        loop {
            if !self.any_recv_armed() && !stopped {
                // Every datagram the kernel handed over has been handled.
                stopped = true;
                w.stop();
            }
            if sends_cancelled {
                w.cancel_queued();
            } else {
                self.flush(w)?;
                if start.elapsed() >= SEND_GRACE && (self.in_flight > 0 || !w.core.queue.is_empty())
                {
                    for i in self.ring.sends_in_flight() {
                        self.ring.cancel(Op::Send(i))?;
                    }
                    w.cancel_queued();
                    sends_cancelled = true;
                }
            }
            if !self.any_recv_armed()
                && !self.wake_armed
                && !self.errors_armed.iter().any(|&a| a)
                && self.timer.is_none()
                && self.in_flight == 0
                && w.core.queue.is_empty()
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
            self.ring
                .wait(1, Some(left.min(Duration::from_millis(20))))?;
            self.handle(w, !stopped)?;
        }
    }
}
