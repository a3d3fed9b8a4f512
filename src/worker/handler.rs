//! The handler API: what a service implements (the datagram it is lent is
//! `datagram.rs`; what it may do with it, `transport.rs`).
//!
//! Modelled on Twisted's `DatagramProtocol`: one handler instance per worker
//! receives datagrams with their source address and answers through a
//! [`Transport`]. Unlike Twisted, received data is not copied: a [`Datagram`]
//! lends the bytes of a receive buffer for the duration of the call, and
//! [`Transport::reply`] sends them back from that same buffer.

use std::any::Any;
use std::time::SystemTime;

use crate::error::ErrorEvent;
use crate::worker::datagram::Datagram;
use crate::worker::transport::Transport;

/// A service running on the engine. One instance per worker thread.
///
/// Every method runs on the worker's thread; none may block for long (a slow
/// handler backs up the socket, and the kernel drops what does not fit,
/// counted in [`crate::Stats::kernel_drops`]). A method that panics stops
/// its worker (not the others, not the process): the engine reports it
/// ([`crate::Engine::failures`], [`crate::StopError`]), its `Sender`s fail
/// with `NotConnected`, and the kernel's hold on its buffers is released
/// in order before they are freed.
pub trait Handler: 'static {
    /// The worker is bound and about to receive.
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let _ = tx;
    }
    /// A datagram arrived. Its bytes are lent until this call returns.
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>);
    /// The kernel reported an error for this socket (ICMP and local errors
    /// from the error queue, refused sends), or the worker gave up a send
    /// the network would not take.
    fn on_error(&mut self, event: ErrorEvent, tx: &mut Transport<'_>) {
        let _ = (event, tx);
    }
    /// The kernel's software TX timestamp of a send queued after
    /// [`Transport::timestamp_next`]`(id)`: when it handed the datagram
    /// to the device (`CLOCK_REALTIME`). Needs
    /// [`Config::tx_timestamps`](crate::Config). A GSO train cut into
    /// single sends (GSO off) reports once per datagram.
    fn on_tx_timestamp(&mut self, id: u32, at: SystemTime, tx: &mut Transport<'_>) {
        let _ = (id, at, tx);
    }
    /// A timer set with [`Transport::call_later`] or
    /// [`Transport::call_every`] fired.
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        let _ = (token, tx);
    }
    /// A message posted with [`crate::Sender::message`] arrived (in the
    /// order it was posted, among the Sender's datagrams and posts).
    fn on_message(&mut self, msg: Box<dyn Any + Send>, tx: &mut Transport<'_>) {
        let _ = (msg, tx);
    }
    /// A send of this handler's was refused with [`SendError::Exhausted`](crate::SendError::Exhausted)
    /// (every send slot in flight, or the send queue full) and there is
    /// room again: called once per refusal spell, as soon as the worker has
    /// taken back a slot, so that a fan-out resumes where it stopped
    /// instead of dropping the rest. Sends made here that are refused
    /// again bring another call when room comes back.
    fn on_writable(&mut self, tx: &mut Transport<'_>) {
        let _ = tx;
    }
    /// The worker is stopping; no more sends will go out.
    fn on_stop(&mut self) {}
    /// Sends still queued or in flight when the worker stopped, cancelled
    /// after their grace (counted in [`crate::Stats::cancelled`]):
    /// `datagrams` of them to `peer`. Called after [`Handler::on_stop`],
    /// and without a [`Transport`]: nothing more can be sent.
    fn on_cancelled(&mut self, peer: Option<std::net::SocketAddr>, datagrams: u64) {
        let _ = (peer, datagrams);
    }
}
