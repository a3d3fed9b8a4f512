//! `udpring fanout`: every datagram received is sent on to every
//! destination (unicast addresses or multicast groups) from its own receive
//! buffer: one buffer, N sends, no copy, all submitted with the batch.
//! A destination that refuses (ICMP port unreachable) is counted and does
//! not hold up the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Datagram, ErrorEvent, Handler, Transport};

/// Counters of one destination.
#[derive(Debug, Default)]
pub struct DestCounters {
    /// Datagrams queued for it.
    pub forwarded: AtomicU64,
    /// "Port unreachable" reports about it.
    pub refused: AtomicU64,
}

/// Counters of a fan-out, shared with whoever reports.
#[derive(Debug)]
pub struct FanoutCounters {
    /// Datagrams received.
    pub received: AtomicU64,
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
            dests: (0..n).map(|_| DestCounters::default()).collect(),
            other_errors: AtomicU64::new(0),
        })
    }
}

/// The fan-out handler.
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
}

impl Handler for Fanout {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        self.counters
            .received
            .fetch_add(dgram.segments() as u64, Ordering::Relaxed);
        for (i, d) in self.dests.iter().enumerate() {
            tx.forward(&dgram, *d);
            self.counters.dests[i]
                .forwarded
                .fetch_add(dgram.segments() as u64, Ordering::Relaxed);
        }
    }

    fn on_error(&mut self, event: ErrorEvent, _tx: &mut Transport<'_>) {
        if let ErrorEvent::ConnectionRefused { peer: Some(p) } = event
            && let Some(i) = self.dests.iter().position(|d| *d == p)
        {
            self.counters.dests[i]
                .refused
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.other_errors.fetch_add(1, Ordering::Relaxed);
    }
}
