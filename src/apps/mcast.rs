//! `udpring mcast`: send, listen, and ping-pong over a multicast group.
//!
//! - [`McastSend`] sends sequenced datagrams (the load generator's
//!   [`Header`]) to a group at a rate, like msend.
//! - [`McastListen`] counts what arrives per source and, with `verify`,
//!   checks sequences for loss, duplicates and reordering, like mdump.
//! - `pong` is the echo handler joined to the group: it answers each ping by
//!   unicast to its sender.
//! - [`McastPing`] sends pings to the group and keeps, per responder, the
//!   replies, duplicates and an RTT histogram: one datagram, many answers.
//!
//! Per-source state is allocated when a source is first heard, never per
//! datagram.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::apps::header::{HEADER_LEN, Header};
use crate::apps::load::{RttUs, new_histogram};
use crate::apps::seq::SeqWindow;
use crate::{Datagram, Handler, SendError, Transport};

/// What one source (listen) or responder (ping) amounted to.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PeerCounts {
    /// Distinct datagrams (listen) or replies (ping).
    pub received: u64,
    /// Repeats of a sequence already seen.
    pub duplicated: u64,
    /// Arrived after a later sequence.
    pub reordered: u64,
    /// Sequences missing: below the highest seen (listen), or pings without
    /// a reply (ping, after the drain).
    pub lost: u64,
    /// Highest sequence seen.
    pub highest: Option<u64>,
    /// Ping: round-trip times.
    pub rtt_us: Option<RttUs>,
}

struct Peer {
    window: SeqWindow,
    counts: PeerCounts,
    hist: Option<Histogram<u64>>,
}

impl Peer {
    fn new(with_hist: bool) -> Self {
        Peer {
            window: SeqWindow::new(),
            counts: PeerCounts::default(),
            hist: with_hist.then(new_histogram),
        }
    }

    fn see(&mut self, seq: u64) -> bool {
        match self.window.mark(seq) {
            None => {
                self.counts.duplicated += 1;
                false
            }
            Some(reordered) => {
                self.counts.received += 1;
                self.counts.reordered += reordered as u64;
                self.counts.highest = self.window.highest();
                true
            }
        }
    }
}

/// Results by peer address, shared with whoever reports.
pub type PeerTable = Arc<Mutex<Vec<(SocketAddr, PeerCounts)>>>;

/// Sends sequenced datagrams to a group.
pub struct McastSend {
    to: SocketAddr,
    size: usize,
    interval: Duration,
    count: Option<u64>,
    sent: u64,
    start: Option<Instant>,
    token: u32,
    buf: Vec<u8>,
    /// Datagrams sent so far, for the reporter.
    pub progress: Arc<std::sync::atomic::AtomicU64>,
}

impl McastSend {
    /// `rate` datagrams per second of `size` bytes to `to`, `count` in all
    /// (or until stopped).
    pub fn new(to: SocketAddr, rate: f64, size: usize, count: Option<u64>) -> Self {
        McastSend {
            to,
            size: size.max(HEADER_LEN),
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            count,
            sent: 0,
            start: None,
            token: 0x6d63_6173,
            buf: vec![0x4d; size.max(HEADER_LEN)],
            progress: Arc::default(),
        }
    }
}

impl Handler for McastSend {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.start = Some(Instant::now());
        tx.call_later(Duration::ZERO, 0);
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_timer(&mut self, _token: u64, tx: &mut Transport<'_>) {
        let start = self.start.unwrap_or_else(Instant::now);
        let due = (start.elapsed().as_secs_f64() / self.interval.as_secs_f64()) as u64 + 1;
        while self.sent < due && self.count.is_none_or(|c| self.sent < c) {
            Header::new_unchecked(&mut self.buf[..]).fill(self.token, 0, self.sent, 0);
            match tx.send_to(&self.buf[..self.size], self.to) {
                Ok(()) => self.sent += 1,
                Err(SendError::Exhausted) => break,
                Err(_) => return,
            }
        }
        self.progress
            .store(self.sent, std::sync::atomic::Ordering::Relaxed);
        if self.count.is_none_or(|c| self.sent < c) {
            let next = start + self.interval.mul_f64(self.sent as f64);
            tx.call_later(next.saturating_duration_since(Instant::now()), 0);
        }
    }
}

/// Counts (and with `verify`, checks sequences of) what arrives per source.
pub struct McastListen {
    verify: bool,
    peers: HashMap<SocketAddr, Peer>,
    /// Datagrams without a valid header (counted, with `verify`).
    pub malformed: u64,
    table: PeerTable,
    last_publish: Instant,
}

impl McastListen {
    /// A listener publishing into `table`.
    pub fn new(verify: bool, table: PeerTable) -> Self {
        McastListen {
            verify,
            peers: HashMap::new(),
            malformed: 0,
            table,
            last_publish: Instant::now(),
        }
    }

    fn publish(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.clear();
        for (a, p) in &self.peers {
            let mut c = p.counts.clone();
            if let Some(h) = c.highest {
                c.lost = (h + 1).saturating_sub(c.received);
            }
            t.push((*a, c));
        }
        t.sort_by_key(|(a, _)| *a);
        self.last_publish = Instant::now();
    }
}

impl Handler for McastListen {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.call_later(Duration::from_millis(50), 0);
    }
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let verify = self.verify;
        let peer = self
            .peers
            .entry(d.source())
            .or_insert_with(|| Peer::new(false));
        if !verify {
            peer.counts.received += d.segments() as u64;
            return;
        }
        match Header::new_checked(d.payload()) {
            Ok(h) => {
                peer.see(h.seq());
            }
            Err(_) => self.malformed += 1,
        }
    }
    fn on_timer(&mut self, _t: u64, tx: &mut Transport<'_>) {
        self.publish();
        tx.call_later(Duration::from_millis(50), 0);
    }
    fn on_stop(&mut self) {
        self.publish();
    }
}

/// Pings a group and accounts for every responder.
pub struct McastPing {
    to: SocketAddr,
    interval: Duration,
    count: u64,
    sent: u64,
    start: Option<Instant>,
    epoch: Instant,
    token: u32,
    buf: Vec<u8>,
    peers: HashMap<SocketAddr, Peer>,
    /// Replies that were not ours (other token, malformed).
    pub invalid: u64,
    table: PeerTable,
}

impl McastPing {
    /// `count` pings of `size` bytes to `to`, `rate` per second.
    pub fn new(to: SocketAddr, rate: f64, size: usize, count: u64, table: PeerTable) -> Self {
        let epoch = Instant::now();
        McastPing {
            to,
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            count,
            sent: 0,
            start: None,
            epoch,
            token: (crate::random_u64() as u32) | 1,
            buf: vec![0x50; size.max(HEADER_LEN)],
            peers: HashMap::new(),
            invalid: 0,
            table,
        }
    }

    fn publish(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.clear();
        for (a, p) in &self.peers {
            let mut c = p.counts.clone();
            c.lost = self.sent.saturating_sub(c.received);
            c.rtt_us = p.hist.as_ref().map(RttUs::from_histogram);
            t.push((*a, c));
        }
        t.sort_by_key(|(a, _)| *a);
    }
}

impl Handler for McastPing {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.start = Some(Instant::now());
        tx.call_later(Duration::ZERO, 0);
        tx.call_later(Duration::from_millis(50), 1);
    }
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let Ok(h) = Header::new_checked(d.payload()) else {
            self.invalid += 1;
            return;
        };
        if h.token() != self.token || h.seq() >= self.sent {
            self.invalid += 1;
            return;
        }
        let peer = self
            .peers
            .entry(d.source())
            .or_insert_with(|| Peer::new(true));
        if peer.see(h.seq())
            && let Some(hist) = &mut peer.hist
        {
            hist.saturating_record(now.saturating_sub(h.sent_ns()).max(1));
        }
    }
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        if token == 1 {
            self.publish();
            tx.call_later(Duration::from_millis(50), 1);
            return;
        }
        let start = self.start.unwrap_or_else(Instant::now);
        let due = ((start.elapsed().as_secs_f64() / self.interval.as_secs_f64()) as u64 + 1)
            .min(self.count);
        while self.sent < due {
            let now = self.epoch.elapsed().as_nanos() as u64;
            Header::new_unchecked(&mut self.buf[..]).fill(self.token, 0, self.sent, now);
            match tx.send_to(&self.buf, self.to) {
                Ok(()) => self.sent += 1,
                Err(_) => break,
            }
        }
        if self.sent < self.count {
            let next = start + self.interval.mul_f64(self.sent as f64);
            tx.call_later(next.saturating_duration_since(Instant::now()), 0);
        }
    }
    fn on_stop(&mut self) {
        self.publish();
    }
}
