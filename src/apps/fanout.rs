//! `udpring fanout`: every datagram received is sent on to every
//! destination (unicast addresses or multicast groups) from its own receive
//! buffer: one buffer, N sends, no copy, all submitted with the batch.
//!
//! The relay listens on socket 0 and sends from socket 1, a socket of its
//! own (bound to the unspecified address: it can reach any destination,
//! and what destinations answer arrives there, where it is counted and
//! dropped, never relayed). A datagram whose source is one of the
//! destinations is dropped too (counted): two relays, or a relay and an
//! echo, cannot make a loop. A destination that refuses (ICMP port
//! unreachable) or whose sends fail is counted and does not hold up the
//! others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Datagram, ErrorEvent, Handler, Transport};

/// The socket the relay sends from (see the module doc).
pub const SEND_SOCKET: usize = 1;

/// Counters of one destination.
#[derive(Debug, Default)]
pub struct DestCounters {
    /// Datagrams queued for it.
    pub queued: AtomicU64,
    /// Sends to it the kernel refused: not sent (by errno in the engine's
    /// `send_errors`).
    pub failed: AtomicU64,
    /// Reports from the network about datagrams that left for it (ICMP
    /// port, host or network unreachable).
    pub refused: AtomicU64,
}

impl DestCounters {
    /// Datagrams the kernel took for it: queued minus failed. Exact once
    /// the engine has stopped (every send's outcome is then known).
    pub fn forwarded(&self) -> u64 {
        self.queued
            .load(Ordering::Relaxed)
            .saturating_sub(self.failed.load(Ordering::Relaxed))
    }
}

/// Counters of a fan-out, shared with whoever reports.
#[derive(Debug)]
pub struct FanoutCounters {
    /// Datagrams received on the listening socket.
    pub received: AtomicU64,
    /// Received from one of the destinations: dropped, not relayed.
    pub from_destination: AtomicU64,
    /// Arrived on the sending socket (answers of destinations): dropped.
    pub answers: AtomicU64,
    /// One entry per destination, in order.
    pub dests: Vec<DestCounters>,
    /// Error reports about no known destination.
    pub other_errors: AtomicU64,
}

impl FanoutCounters {
    /// Zeroed counters for `n` destinations.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(FanoutCounters {
            received: AtomicU64::new(0),
            from_destination: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            dests: (0..n).map(|_| DestCounters::default()).collect(),
            other_errors: AtomicU64::new(0),
        })
    }
}

/// An engine configuration for a relay listening on `listen`: the socket
/// to send from ([`SEND_SOCKET`]) is bound to the unspecified address.
pub fn config(listen: SocketAddr) -> crate::Config {
    let mut cfg = crate::Config::new(listen);
    cfg.also_bind = vec![crate::sys::unspecified_like(listen, 0)];
    cfg
}

/// The fan-out handler. Its engine needs a second socket to send from
/// (see [`config`]).
pub struct Fanout {
    dests: Vec<SocketAddr>,
    counters: Arc<FanoutCounters>,
}

impl Fanout {
    /// Relays to `dests`, counting into `counters`.
    pub fn new(dests: Vec<SocketAddr>, counters: Arc<FanoutCounters>) -> Self {
        let dests = dests.into_iter().map(crate::sys::canonical).collect();
        Fanout { dests, counters }
    }

    fn dest_index(&self, peer: Option<SocketAddr>) -> Option<usize> {
        let p = peer?;
        self.dests.iter().position(|d| *d == p)
    }
}

impl Handler for Fanout {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let n = dgram.segments() as u64;
        if dgram.socket() == SEND_SOCKET {
            self.counters.answers.fetch_add(n, Ordering::Relaxed);
            return;
        }
        if self.dests.contains(&dgram.source()) {
            self.counters
                .from_destination
                .fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.counters.received.fetch_add(n, Ordering::Relaxed);
        for (i, d) in self.dests.iter().enumerate() {
            if tx.forward_via(SEND_SOCKET, &dgram, *d).is_ok() {
                self.counters.dests[i]
                    .queued
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn on_error(&mut self, event: ErrorEvent, _tx: &mut Transport<'_>) {
        let (peer, local) = match event {
            ErrorEvent::ConnectionRefused { peer } | ErrorEvent::Unreachable { peer, .. } => {
                (peer, false)
            }
            ErrorEvent::SendFailed { peer, .. } | ErrorEvent::MessageTooLong { peer, .. } => {
                (peer, true)
            }
            ErrorEvent::Other { peer, .. } => (peer, false),
        };
        match self.dest_index(peer) {
            Some(i) if local => self.counters.dests[i]
                .failed
                .fetch_add(1, Ordering::Relaxed),
            Some(i) => self.counters.dests[i]
                .refused
                .fetch_add(1, Ordering::Relaxed),
            None => self.counters.other_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}
