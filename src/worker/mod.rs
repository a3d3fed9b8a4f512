//! One worker as its handler sees it: the API ([`Handler`](handler::Handler),
//! [`Datagram`](datagram::Datagram), [`Transport`](transport::Transport),
//! [`Sender`](sender::Sender)) and the state behind it ([`Core`]: the
//! pool, the send queue, timers, counters, sockets). What a received
//! datagram or a finished send *means* is decided one floor up, in
//! `backend/worker`, which the backends' loops drive.
//!
//! - `handler.rs`: the handler trait; `datagram.rs`: the lent datagram;
//!   `transport.rs`: the transport; `sendbuf.rs`: the send slot a handler
//!   builds in;
//!   `transport_mcast.rs`: the transport's socket calls for multicast;
//! - `sender.rs`: sending from other threads: the inbox a worker drains
//!   and the handle that posts into it. A `Sender` posts closures that
//!   take a `Transport`, a `Transport` hands out `Sender`s and works on
//!   the `Core`, and the `Core` holds the inbox: these three files import
//!   each other (the one circle of the engine), which is why they share
//!   this room;
//! - `core.rs`: [`Core`], the state a `Transport` touches; `send_now.rs`:
//!   the sends a parked worker makes at once, in the handler's call;
//! - `queue/`: the send queue (GSO trains kept or cut), and its tests;
//! - `timers.rs`: the timer heap.

pub(crate) mod core;
pub(crate) mod datagram;
pub(crate) mod handler;
pub(crate) mod ids;
pub(crate) mod queue;
pub(crate) mod send_now;
pub(crate) mod sendbuf;
pub(crate) mod sender;
pub(crate) mod stream;
pub(crate) mod timers;
pub(crate) mod transport;
mod transport_mcast;

pub(crate) use self::core::{Core, Sockets, WorkerShared};
