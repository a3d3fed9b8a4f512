//! `udpring mcast`: send, listen, and ping-pong over a multicast group.
//!
//! - [`McastSend`] sends sequenced datagrams (the load generator's
//!   [`Header`]) to a group at a rate, like msend.
//! - [`McastListen`] counts what arrives per source and, with `verify`,
//!   checks sequences for loss, duplicates and reordering, like mdump.
//! - [`McastPong`] is joined to the group: it answers each ping sent to the
//!   group by unicast to its sender: udpring's ping, or with [`Expect`] a
//!   payload of another program's (the seeds' Twisted ping-pong, a
//!   discovery query), echoed or answered with fixed bytes.
//! - [`ping::McastPing`] sends pings to the group and keeps, per responder,
//!   the replies, duplicates and an RTT histogram: one datagram, many
//!   answers. With [`ping::PingPayload::Given`] it sends any payload and a
//!   reply belongs to the round it arrives in.
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
use crate::apps::seq::{Seen, SeqWindow};
use udpring::{Datagram, Handler, SendError, Transport};

pub mod ping;

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
    /// Lowest sequence seen (listen: where the stream was joined).
    pub lowest: Option<u64>,
    /// Highest sequence seen.
    pub highest: Option<u64>,
    /// Sequences too old to tell (more than 65536 below the highest).
    pub stale: u64,
    /// Ping: round-trip times.
    pub rtt_us: Option<RttUs>,
    /// Listen with sequence checks: RFC 3550 interarrival jitter, in
    /// microseconds (the smoothed variation of transit time, from the
    /// sender's stamp to arrival); `null` before two datagrams.
    pub jitter_us: Option<f64>,
    /// The TOS byte / traffic class (DSCP and ECN) of the last datagram,
    /// when the engine reads it (`Config::recv_tos`).
    pub tos: Option<u8>,
}

/// Sources (listen) or responders (ping) tracked at once: each costs a
/// table entry, and with sequence checks an 8 KiB window. Datagrams from
/// more are counted in `untracked`, never given state.
pub const MAX_PEERS: usize = 1024;

struct Peer {
    /// Only with sequence checks (listen --verify, ping).
    window: Option<SeqWindow>,
    /// Transit time (arrival minus the sender's stamp, in ns on two
    /// unrelated clocks: only its changes mean something) of the last
    /// datagram, and the RFC 3550 jitter estimate in ns.
    last_transit: Option<i64>,
    jitter_ns: f64,
    /// The run token of the stream being checked (listen --verify).
    token: u64,
    counts: PeerCounts,
    hist: Option<Histogram<u64>>,
}

impl Peer {
    fn new(sequenced: bool, with_hist: bool) -> Self {
        Peer {
            window: sequenced.then(SeqWindow::new),
            last_transit: None,
            jitter_ns: 0.0,
            token: 0,
            counts: PeerCounts::default(),
            hist: with_hist.then(new_histogram),
        }
    }

    /// Counts `seq`; true the first time it is seen.
    fn see(&mut self, seq: u64) -> bool {
        let Some(w) = &mut self.window else {
            self.counts.received += 1;
            return true;
        };
        match w.mark(seq) {
            Seen::Duplicate => {
                self.counts.duplicated += 1;
                false
            }
            Seen::Stale => {
                self.counts.stale += 1;
                false
            }
            first => {
                self.counts.received += 1;
                self.counts.reordered += u64::from(first == Seen::Reordered);
                self.counts.highest = w.highest();
                self.counts.lowest = Some(self.counts.lowest.map_or(seq, |l| l.min(seq)));
                true
            }
        }
    }
}

impl Peer {
    /// RFC 3550 section 6.4.1: J += (|D| - J) / 16, D the change in transit
    /// time between two datagrams in arrival order.
    fn transit(&mut self, arrival_ns: u64, sent_ns: u64) {
        let t = (arrival_ns as i64).wrapping_sub(sent_ns as i64);
        if let Some(prev) = self.last_transit {
            let d = t.wrapping_sub(prev).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
            self.counts.jitter_us = Some(self.jitter_ns / 1000.0);
        }
        self.last_transit = Some(t);
    }
}

/// The peer of `addr` in `peers`, made if there is room (`MAX_PEERS`).
fn peer_entry(
    peers: &mut HashMap<SocketAddr, Peer>,
    addr: SocketAddr,
    make: impl FnOnce() -> Peer,
) -> Option<&mut Peer> {
    if !peers.contains_key(&addr) && peers.len() >= MAX_PEERS {
        return None;
    }
    Some(peers.entry(addr).or_insert_with(make))
}

/// What a listener or pinger publishes for whoever reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerReport {
    /// Every tracked source or responder, by address.
    pub peers: Vec<(SocketAddr, PeerCounts)>,
    /// Datagrams from sources or responders beyond [`MAX_PEERS`]: counted,
    /// never given state.
    pub untracked: u64,
    /// Datagrams that were not ours (malformed, other run's token; with a
    /// given payload, replies not starting with the expected bytes).
    pub invalid: u64,
    /// Ping with a given payload: replies that came more than the timeout
    /// after the round's ping (no round to give them to).
    pub late: u64,
}

/// Results shared with whoever reports.
pub type PeerTable = Arc<Mutex<PeerReport>>;

/// Sends sequenced datagrams to a group.
pub struct McastSend {
    to: SocketAddr,
    size: usize,
    interval: Duration,
    count: Option<u64>,
    sent: u64,
    start: Option<Instant>,
    token: u64,
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
            token: udpring::random_u64(),
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
            // The intended send time, as `load` stamps it: a receiver's
            // jitter is measured against it.
            let at = self.interval.mul_f64(self.sent as f64).as_nanos() as u64;
            Header::new_unchecked(&mut self.buf[..]).fill(self.token, 0, self.sent, at);
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

/// Which datagrams a [`McastPong`] answers, and with what, when they are
/// not udpring's pings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Answer datagrams whose payload starts with these bytes.
    pub prefix: Vec<u8>,
    /// Answer with these bytes; `None`: echo the datagram.
    pub answer: Option<Vec<u8>>,
    /// Send an answer longer than the datagram it answers (a forged
    /// source would be sent more than it sent: refused unless asked).
    pub amplify: bool,
}

/// What a pong did not answer, by reason.
#[derive(Debug, Default)]
pub struct PongCounts {
    /// Not sent to the group (unicast, forged or not): never answered.
    pub not_to_group: std::sync::atomic::AtomicU64,
    /// Sent to the group but not a ping (no udpring header, or not the
    /// expected bytes), or a GRO train.
    pub not_a_ping: std::sync::atomic::AtomicU64,
    /// The answer would have been longer than the datagram (`amplify` off).
    pub would_amplify: std::sync::atomic::AtomicU64,
}

impl PongCounts {
    /// All datagrams not answered.
    pub fn ignored(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.not_to_group.load(Relaxed)
            + self.not_a_ping.load(Relaxed)
            + self.would_amplify.load(Relaxed)
    }
}

/// Answers pings sent to a group, by unicast to the pinger. A datagram is
/// a ping only if it was sent to the group (its destination as the kernel
/// reports it, `IP_PKTINFO`/`IPV6_PKTINFO`) and carries a ping header, or
/// with an [`Expect`] starts with its bytes: unicast datagrams, forged or
/// not, are never answered, so a pong cannot be set against another
/// responder (a packet loop).
pub struct McastPong {
    group: std::net::IpAddr,
    expect: Option<Expect>,
    counts: Arc<PongCounts>,
}

impl McastPong {
    /// A responder for pings to `group`: udpring's, or with `expect`
    /// another program's.
    pub fn new(group: std::net::IpAddr, expect: Option<Expect>, counts: Arc<PongCounts>) -> Self {
        McastPong {
            group: udpring::os::canonical(std::net::SocketAddr::new(group, 0)).ip(),
            expect,
            counts,
        }
    }
}

impl Handler for McastPong {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        if d.destination() != Some(self.group) {
            self.counts.not_to_group.fetch_add(1, Relaxed);
            return;
        }
        let ping = d.segment_size().is_none()
            && match &self.expect {
                None => Header::new_checked(d.payload()).is_ok(),
                Some(e) => d.payload().starts_with(&e.prefix),
            };
        if !ping {
            self.counts.not_a_ping.fetch_add(1, Relaxed);
            return;
        }
        // A full send queue is counted (send_exhausted).
        match self
            .expect
            .as_ref()
            .and_then(|e| e.answer.as_ref().map(|a| (a, e.amplify)))
        {
            Some((a, amplify)) => {
                if a.len() > d.payload().len() && !amplify {
                    self.counts.would_amplify.fetch_add(1, Relaxed);
                    return;
                }
                let _ = tx.send_to(a, d.source());
            }
            None => {
                let _ = tx.reply(d);
            }
        }
    }
}

/// Counts (and with `verify`, checks sequences of) what arrives per source.
pub struct McastListen {
    verify: bool,
    epoch: Instant,
    peers: HashMap<SocketAddr, Peer>,
    /// Datagrams without a valid header (counted, with `verify`).
    malformed: u64,
    /// Datagrams from sources beyond [`MAX_PEERS`] (counted, not kept).
    untracked: u64,
    table: PeerTable,
    /// Something changed since the last publish, and a timer to publish it
    /// is armed (an idle listener has none, and sleeps).
    dirty: bool,
}

impl McastListen {
    /// A listener publishing into `table`.
    pub fn new(verify: bool, table: PeerTable) -> Self {
        McastListen {
            verify,
            epoch: Instant::now(),
            peers: HashMap::new(),
            malformed: 0,
            untracked: 0,
            table,
            dirty: true,
        }
    }

    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.untracked = self.untracked;
        t.invalid = self.malformed;
        t.peers.clear();
        for (a, p) in &self.peers {
            let mut c = p.counts.clone();
            if let (Some(lo), Some(hi)) = (c.lowest, c.highest) {
                // Sequences between the first and the highest seen that
                // never came (a listener may join a stream midway).
                c.lost = (hi - lo).saturating_add(1).saturating_sub(c.received);
            }
            t.peers.push((*a, c));
        }
        t.peers.sort_by_key(|(a, _)| *a);
        self.dirty = false;
    }
}

impl Handler for McastListen {
    fn on_start(&mut self, _tx: &mut Transport<'_>) {
        // The empty table, at once; later ones 50 ms after a change.
        self.publish();
    }
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        if !self.dirty {
            self.dirty = true;
            tx.call_later(Duration::from_millis(50), 0);
        }
        let verify = self.verify;
        let header = if verify {
            match Header::new_checked(d.payload()) {
                Ok(h) => Some((h.token(), h.seq(), h.sent_ns())),
                Err(_) => {
                    self.malformed += 1;
                    return;
                }
            }
        } else {
            None
        };
        let Some(peer) = peer_entry(&mut self.peers, d.source(), || Peer::new(verify, false))
        else {
            self.untracked += d.segments() as u64;
            return;
        };
        if let Some(t) = d.tos() {
            peer.counts.tos = Some(t);
        }
        match header {
            None => peer.counts.received += d.segments() as u64,
            Some((token, seq, sent_ns)) => {
                if peer.token != token {
                    // A new run of the sender (or the first): a stream of
                    // its own.
                    *peer = Peer::new(true, false);
                    peer.token = token;
                }
                if peer.see(seq) {
                    peer.transit(self.epoch.elapsed().as_nanos() as u64, sent_ns);
                }
            }
        }
    }
    fn on_timer(&mut self, _t: u64, _tx: &mut Transport<'_>) {
        self.publish();
    }
    fn on_stop(&mut self) {
        self.publish();
    }
}
