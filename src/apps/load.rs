//! `udpring load`: a load generator on the engine, with exact accounting.
//!
//! Each flow is one socket with its own source port (the engine's
//! `distinct_ports`), flows spread over workers. Every datagram carries a
//! [`Header`]: the run's token, the flow, a sequence number and the intended
//! send time. Replies are matched by source address (anything else is
//! *foreign*), then by token, flow and sequence (anything that does not
//! parse or does not match is *invalid*). Per flow a 65536-sequence window
//! tells new, reordered (older than the highest seen) and duplicated replies
//! apart; after a drain wait, `lost = sent - unique replies`.
//!
//! Modes:
//! - `flood`: as fast as the engine can send (optionally at most `window`
//!   datagrams in flight per worker);
//! - `ping`: closed loop, one request in flight per flow, the next sent when
//!   the reply arrives or after `ping_timeout`;
//! - `rate`: open loop at a fixed rate; each datagram is stamped with the
//!   time it *should* have left, and sending catches up after a stall, so a
//!   stalled server shows in the latency (no coordinated omission).
//!
//! RTT goes into an HdrHistogram (1 ns .. 60 s, 3 significant digits).
//!
//! A multicast group as the target: every datagram reaches every
//! subscriber, and each responder (`udpring mcast pong`, or any echo joined
//! to the group, answering by unicast) is accounted for on its own: its own
//! sequence windows, loss, duplicates and RTT histogram, in
//! [`LoadReport::responders`]. The totals are the sums over responders.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::apps::header::{HEADER_LEN, Header, sockperf};
use crate::{Backend, Config, Datagram, Engine, ErrorEvent, Handler, SendError, Transport};

/// How the generator sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// As fast as possible (bounded by the window, if any).
    Flood,
    /// One request in flight per flow.
    Ping,
    /// A fixed total rate in datagrams per second.
    Rate(f64),
}

impl Mode {
    /// `flood`, `ping` or `rate`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Flood => "flood",
            Mode::Ping => "ping",
            Mode::Rate(_) => "rate",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOpts {
    /// Where to send (an echo server).
    pub target: SocketAddr,
    /// Sending mode.
    pub mode: Mode,
    /// Payload bytes per datagram (at least the header).
    pub size: usize,
    /// Flows: sockets with distinct source ports.
    pub flows: usize,
    /// Worker threads.
    pub workers: usize,
    /// How long to send (after the warm-up); `None` with `count`.
    pub duration: Option<Duration>,
    /// How many datagrams to send (after the warm-up), in all.
    pub count: Option<u64>,
    /// Sent and answered but not counted.
    pub warmup: Duration,
    /// Datagrams per send: above 1, one GSO send carries that many.
    pub gso: usize,
    /// Flood only: most datagrams in flight per worker.
    pub window: Option<u64>,
    /// Force a backend.
    pub backend: Option<Backend>,
    /// Local address to bind (port 0 for distinct ports); default: the
    /// unspecified address of the target's family.
    pub bind: Option<SocketAddr>,
    /// Put sockperf's header first, so `sockperf server` can be the target.
    pub sockperf: bool,
    /// How long to wait for late replies after the last send.
    pub drain: Duration,
    /// Ping mode: when a request counts as unanswered and the next goes.
    pub ping_timeout: Duration,
    /// TTL / hop limit of datagrams sent to a multicast target.
    pub multicast_ttl: u32,
    /// Spin instead of sleeping between replies (see `Config::busy_poll`).
    pub busy_poll: bool,
    /// Connect each flow's socket to the target (as iperf3 does): sends skip
    /// the route lookup, and the kernel itself drops datagrams from other
    /// addresses (counted in the host's UDP NoPorts, not here). Off: every
    /// datagram is looked at, and those from elsewhere count as `foreign`.
    pub connect: bool,
    /// Index (among the CPUs this process may use) of the first CPU to pin
    /// workers to; `None`: the last ones, so that a server started with its
    /// defaults on the same host (from the first CPU up) keeps its own.
    pub first_cpu: Option<usize>,
}

impl LoadOpts {
    /// A flood of 64-byte datagrams for 5 seconds.
    pub fn new(target: SocketAddr) -> Self {
        LoadOpts {
            target,
            mode: Mode::Flood,
            size: 64,
            flows: 1,
            workers: 1,
            duration: Some(Duration::from_secs(5)),
            count: None,
            warmup: Duration::ZERO,
            gso: 1,
            window: None,
            backend: None,
            bind: None,
            sockperf: false,
            drain: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(1),
            connect: true,
            multicast_ttl: 1,
            busy_poll: false,
            first_cpu: None,
        }
    }

    fn header_offset(&self) -> usize {
        if self.sockperf { sockperf::LEN } else { 0 }
    }

    /// Checks the options; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let min = HEADER_LEN + self.header_offset();
        let max = if self.target.is_ipv6() {
            crate::MAX_UDP6_PAYLOAD
        } else {
            crate::MAX_UDP_PAYLOAD
        };
        if self.size < min || self.size > max {
            return Err(format!(
                "--size {} must be {min}..{max} for {} (the header takes {min})",
                self.size,
                if self.target.is_ipv6() {
                    "IPv6"
                } else {
                    "IPv4"
                }
            ));
        }
        if self.target.port() == 0 {
            return Err("target port 0: give the port the server listens on".into());
        }
        if let Mode::Rate(r) = self.mode
            && !(r.is_finite() && (1.0..=100e6).contains(&r))
        {
            return Err(format!("--rate {r} must be 1..100000000 datagrams/s"));
        }
        if !(1..=4096).contains(&self.flows) {
            return Err(format!("--flows {} must be 1..4096", self.flows));
        }
        if !(1..=256).contains(&self.workers) {
            return Err(format!("--workers {} must be 1..256", self.workers));
        }
        if !(1..=64).contains(&self.gso) {
            return Err(format!("--gso {} must be 1..64 segments", self.gso));
        }
        if self.gso > 1 && self.size * self.gso > 65000 {
            return Err(format!(
                "--gso {} x --size {} is over the 64 KiB a GSO send may carry",
                self.gso, self.size
            ));
        }
        if self.gso > 1 && self.mode == Mode::Ping {
            return Err("--gso needs flood or rate mode (ping has one datagram in flight)".into());
        }
        match (self.duration, self.count) {
            (None, None) => return Err("give --duration or --count".into()),
            (_, Some(0)) => return Err("--count must be at least 1".into()),
            (Some(d), _) if d.is_zero() => return Err("--duration must be > 0".into()),
            _ => {}
        }
        if self.window == Some(0) {
            return Err("--window must be at least 1".into());
        }
        Ok(())
    }
}

/// Sequences remembered per flow for duplicate and reorder detection.
const SEQ_WINDOW: u64 = 65536;

/// Which sequence numbers of one stream have been seen: a window of the last
/// 65536 below the highest, to tell new, reordered and duplicated apart.
pub struct SeqWindow {
    highest: u64,
    any: bool,
    seen: Vec<u64>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        SeqWindow::new()
    }
}

impl SeqWindow {
    /// An empty window (8 KiB, allocated once).
    pub fn new() -> Self {
        SeqWindow {
            highest: 0,
            any: false,
            seen: vec![0; (SEQ_WINDOW / 64) as usize],
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = (seq % SEQ_WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    /// The highest sequence seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.any.then_some(self.highest)
    }

    /// Classifies a sequence number: `Some(reordered)` for one not seen
    /// before (reordered when below the highest), `None` for a duplicate.
    /// Sequences more than 65536 below the highest count as new and reordered.
    pub fn mark(&mut self, seq: u64) -> Option<bool> {
        if !self.any || seq > self.highest {
            let from = if self.any { self.highest + 1 } else { 0 };
            if seq - from >= SEQ_WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in from..seq {
                    let (w, m) = Self::bit(s);
                    self.seen[w] &= !m;
                }
            }
            let (w, m) = Self::bit(seq);
            self.seen[w] |= m;
            self.highest = seq;
            self.any = true;
            return Some(false);
        }
        if self.highest - seq >= SEQ_WINDOW {
            // Too old to remember: new as far as we can tell, and reordered.
            return Some(true);
        }
        let (w, m) = Self::bit(seq);
        if self.seen[w] & m != 0 {
            return None;
        }
        self.seen[w] |= m;
        Some(true)
    }
}

struct Flow {
    id: u32,
    sock: usize,
    next_seq: u64,
    /// First sequence sent after the warm-up.
    first_measured: u64,
    window: SeqWindow,
    /// Ping mode: the request in flight and when it was sent.
    in_flight: Option<(u64, u64)>,
}

impl Flow {
    fn new(id: u32, sock: usize) -> Self {
        Flow {
            id,
            sock,
            next_seq: 0,
            first_measured: u64::MAX,
            window: SeqWindow::new(),
            in_flight: None,
        }
    }

    fn mark(&mut self, seq: u64) -> Option<bool> {
        self.window.mark(seq)
    }
}

/// One responder to a multicast target, as a worker saw it.
struct Responder {
    /// A sequence window per flow of the worker.
    windows: Vec<SeqWindow>,
    counts: ResponderReport,
    hist: Histogram<u64>,
}

/// What one responder to a multicast target answered.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResponderReport {
    /// Its address.
    pub addr: String,
    /// Distinct replies.
    pub received: u64,
    /// Datagrams sent (after the warm-up) it did not answer.
    pub lost: u64,
    /// Repeated replies.
    pub duplicated: u64,
    /// Replies after a later sequence.
    pub reordered: u64,
    /// RTT percentiles.
    pub rtt_us: RttUs,
    /// Its RTT histogram, exactly.
    pub histogram: HistogramData,
}

/// Counters of one worker (or of all).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Datagrams sent after the warm-up.
    pub sent: u64,
    /// Distinct replies to those.
    pub received: u64,
    /// Replies that arrived after a later sequence of their flow.
    pub reordered: u64,
    /// Replies to a sequence already answered.
    pub duplicated: u64,
    /// From the target, but not a valid reply (short, bad magic, other run,
    /// unknown flow or sequence).
    pub invalid: u64,
    /// From another address than the target.
    pub foreign: u64,
    /// Replies to warm-up datagrams (not counted above).
    pub warmup_replies: u64,
    /// Payload bytes sent after the warm-up.
    pub bytes_sent: u64,
    /// Payload bytes of distinct replies.
    pub bytes_received: u64,
    /// Sends refused for want of a free send slot (the engine's backpressure).
    pub send_exhausted: u64,
    /// Ping mode: requests given up on after the timeout.
    pub timeouts: u64,
    /// ICMP and local errors reported by the kernel, by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.received += o.received;
        self.reordered += o.reordered;
        self.duplicated += o.duplicated;
        self.invalid += o.invalid;
        self.foreign += o.foreign;
        self.warmup_replies += o.warmup_replies;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.send_exhausted += o.send_exhausted;
        self.timeouts += o.timeouts;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

/// A new RTT histogram: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// What a worker shares with the thread that reports.
#[derive(Default)]
struct Partial {
    counts: Counts,
    /// RTTs since the reporter last took them (for the per-second line).
    interval: Option<Histogram<u64>>,
    /// All RTTs, set when the worker is done.
    total: Option<Histogram<u64>>,
    /// Multicast target: per responder (with its histogram), set when done.
    responders: Vec<(SocketAddr, ResponderReport, Histogram<u64>)>,
    /// From the end of the warm-up to the last measured send (+ one rate
    /// interval), set when done.
    measured_ns: u64,
    done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Warmup,
    Measure,
    Drain,
    Done,
}

const TICK: u64 = 1;
const HOUSEKEEPING: u64 = 2;
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(20);
/// Datagrams a flood worker queues per tick.
const FLOOD_BURST: usize = 64;

struct Worker {
    opts: Arc<LoadOpts>,
    token: u32,
    epoch: Instant,
    flows: Vec<Flow>,
    /// Flow index by socket index.
    by_sock: Vec<Option<usize>>,
    next_flow: usize,
    phase: Phase,
    measure_at: u64,
    stop_at: Option<u64>,
    drain_until: u64,
    count_quota: Option<u64>,
    rate_interval_ns: f64,
    rate_sent: u64,
    rate_start: u64,
    counts: Counts,
    hist: Histogram<u64>,
    interval: Histogram<u64>,
    scratch: Vec<u8>,
    outstanding: u64,
    /// Valid replies, warm-up included (for the flood window's stall check).
    replies: u64,
    last_replies: u64,
    last_measured_ns: u64,
    /// Multicast target: replies by responder.
    responders: std::collections::HashMap<SocketAddr, Responder>,
    shared: Arc<Mutex<Partial>>,
    abort: Arc<AtomicBool>,
}

impl Worker {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Moves from warm-up to measuring at the exact time it is due.
    fn advance(&mut self, now: u64) {
        if self.phase == Phase::Warmup && now >= self.measure_at {
            self.phase = Phase::Measure;
            for f in &mut self.flows {
                f.first_measured = f.next_seq;
            }
        }
    }

    /// Whether a datagram due at `at` may still go.
    fn sending(&self, at: u64) -> bool {
        matches!(self.phase, Phase::Warmup | Phase::Measure)
            && self.count_quota.is_none_or(|q| q > 0)
            && self.stop_at.is_none_or(|t| at < t)
            && !self.abort.load(Ordering::Relaxed)
    }

    /// Builds `n` datagrams for `flow` stamped `due` and queues them as one
    /// send; false if the engine had no free send slot.
    fn send(&mut self, tx: &mut Transport<'_>, fi: usize, n: usize, due: &[u64]) -> bool {
        let size = self.opts.size;
        let off = self.opts.header_offset();
        let seq0 = self.flows[fi].next_seq;
        let flow_id = self.flows[fi].id;
        let chunks = self.scratch[..n * size].chunks_mut(size);
        for (k, (seg, &at)) in chunks.zip(due).enumerate() {
            let seq = seq0 + k as u64;
            if self.opts.sockperf {
                sockperf::fill(seg, seq, size);
            }
            Header::new_unchecked(&mut seg[off..]).fill(self.token, flow_id, seq, at);
        }
        let sock = self.flows[fi].sock;
        let r = if n > 1 {
            tx.send_segments_via(
                sock,
                &self.scratch[..n * size],
                size as u16,
                self.opts.target,
            )
        } else {
            tx.send_to_via(sock, &self.scratch[..size], self.opts.target)
        };
        match r {
            Ok(()) => {
                let f = &mut self.flows[fi];
                f.next_seq += n as u64;
                if self.phase == Phase::Measure {
                    self.last_measured_ns = due[n - 1];
                    self.counts.sent += n as u64;
                    self.counts.bytes_sent += (n * size) as u64;
                    if let Some(q) = &mut self.count_quota {
                        *q = q.saturating_sub(n as u64);
                    }
                }
                self.outstanding += n as u64;
                true
            }
            Err(SendError::Exhausted) => {
                self.counts.send_exhausted += 1;
                false
            }
            Err(SendError::TooLarge | SendError::NoSuchSocket) => false,
        }
    }

    fn batch_len(&self) -> usize {
        let n = self.opts.gso.max(1);
        match self.count_quota {
            Some(q) if self.phase == Phase::Measure => n.min(q as usize).max(1),
            _ => n,
        }
    }

    fn flood(&mut self, tx: &mut Transport<'_>) {
        let mut queued = 0;
        let mut due = [0u64; 64];
        loop {
            let now = self.now_ns();
            self.advance(now);
            if queued >= FLOOD_BURST || !self.sending(now) {
                break;
            }
            if let Some(w) = self.opts.window
                && self.outstanding >= w
            {
                break;
            }
            let n = self.batch_len();
            due[..n].fill(now);
            let fi = self.next_flow;
            if !self.send(tx, fi, n, &due[..n]) {
                break;
            }
            self.next_flow = (self.next_flow + 1) % self.flows.len();
            queued += n;
        }
    }

    fn rate(&mut self, tx: &mut Transport<'_>) -> Option<Duration> {
        let now = self.now_ns();
        let mut due = [0u64; 64];
        loop {
            let n = self.batch_len();
            // The train leaves when its last datagram is due.
            let last = self.rate_start
                + ((self.rate_sent + n as u64 - 1) as f64 * self.rate_interval_ns) as u64;
            let first = self.rate_start + (self.rate_sent as f64 * self.rate_interval_ns) as u64;
            self.advance(first.min(now));
            if !self.sending(first) {
                return None;
            }
            if last > now {
                return Some(Duration::from_nanos(last - now));
            }
            for (k, d) in due[..n].iter_mut().enumerate() {
                *d = self.rate_start
                    + ((self.rate_sent + k as u64) as f64 * self.rate_interval_ns) as u64;
            }
            let fi = self.next_flow;
            if !self.send(tx, fi, n, &due[..n]) {
                // No send slot: try again shortly; the stamps keep the lag.
                return Some(Duration::from_micros(50));
            }
            self.rate_sent += n as u64;
            self.next_flow = (self.next_flow + 1) % self.flows.len();
        }
    }

    fn ping_one(&mut self, tx: &mut Transport<'_>, fi: usize) {
        let now = self.now_ns();
        self.advance(now);
        if !self.sending(now) {
            return;
        }
        let seq = self.flows[fi].next_seq;
        if self.send(tx, fi, 1, &[now]) {
            self.flows[fi].in_flight = Some((seq, now));
        }
    }

    fn ping_timeouts(&mut self, tx: &mut Transport<'_>) {
        let now = self.now_ns();
        let limit = self.opts.ping_timeout.as_nanos() as u64;
        for fi in 0..self.flows.len() {
            match self.flows[fi].in_flight {
                Some((_, t)) if now.saturating_sub(t) >= limit => {
                    self.counts.timeouts += 1;
                    self.flows[fi].in_flight = None;
                    self.ping_one(tx, fi);
                }
                None => self.ping_one(tx, fi),
                _ => {}
            }
        }
    }

    fn publish(&mut self) {
        let mut p = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        p.counts = self.counts.clone();
        match &mut p.interval {
            Some(h) => {
                let _ = h.add(&self.interval);
            }
            None => p.interval = Some(self.interval.clone()),
        }
        self.interval.reset();
        if self.phase == Phase::Done && !p.done {
            p.total = Some(self.hist.clone());
            p.responders = self
                .responders
                .iter()
                .map(|(a, r)| (*a, r.counts.clone(), r.hist.clone()))
                .collect();
            p.measured_ns = self.last_measured_ns.saturating_sub(self.measure_at)
                + self.rate_interval_ns as u64;
            p.done = true;
        }
    }

    fn housekeeping(&mut self, tx: &mut Transport<'_>) {
        let now = self.now_ns();
        self.advance(now);
        // In rate mode what counts is the next datagram's due time: one due
        // before the end still goes, however late the worker is.
        let next = match self.opts.mode {
            Mode::Rate(_) => {
                self.rate_start + (self.rate_sent as f64 * self.rate_interval_ns) as u64
            }
            _ => now,
        };
        if matches!(self.phase, Phase::Warmup | Phase::Measure) && !self.sending(next) {
            self.phase = Phase::Drain;
            self.drain_until = now + self.opts.drain.as_nanos() as u64;
        }
        if self.phase == Phase::Drain {
            let all_back = self.counts.received >= self.counts.sent && self.outstanding == 0;
            if now >= self.drain_until || all_back {
                self.phase = Phase::Done;
            }
        }
        match self.opts.mode {
            Mode::Ping => self.ping_timeouts(tx),
            Mode::Flood => {
                // A window that never drains (lost replies) is written off
                // after a quiet housekeeping period, so the flood goes on.
                if self.opts.window.is_some() {
                    if self.replies == self.last_replies {
                        self.outstanding = 0;
                    }
                    self.flood(tx);
                }
                self.last_replies = self.replies;
            }
            Mode::Rate(_) => {}
        }
        self.publish();
        if self.phase != Phase::Done {
            tx.call_later(HOUSEKEEPING_EVERY, HOUSEKEEPING);
        }
    }

    fn on_reply(
        &mut self,
        seg: &[u8],
        from: SocketAddr,
        sock: usize,
        now: u64,
        tx: &mut Transport<'_>,
    ) {
        let Ok(h) = Header::new_checked(&seg[self.opts.header_offset().min(seg.len())..]) else {
            self.counts.invalid += 1;
            return;
        };
        let Some(fi) = self.by_sock.get(sock).copied().flatten() else {
            self.counts.invalid += 1;
            return;
        };
        let (seq, sent) = (h.seq(), h.sent_ns());
        let f = &mut self.flows[fi];
        if h.token() != self.token || h.flow() != f.id || seq >= f.next_seq {
            self.counts.invalid += 1;
            return;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        self.replies += 1;
        let answered_ping = f.in_flight.is_some_and(|(s, _)| s == seq);
        if answered_ping {
            f.in_flight = None;
        }
        if seq < f.first_measured {
            self.counts.warmup_replies += 1;
        } else {
            let flows = self.flows.len();
            let mark = if self.opts.target.ip().is_multicast() {
                // Each responder has its own windows: one datagram, many
                // answers, none a duplicate of another responder's.
                let r = self.responders.entry(from).or_insert_with(|| Responder {
                    windows: (0..flows).map(|_| SeqWindow::new()).collect(),
                    counts: ResponderReport {
                        addr: from.to_string(),
                        ..Default::default()
                    },
                    hist: new_histogram(),
                });
                let m = r.windows[fi].mark(seq);
                match m {
                    None => r.counts.duplicated += 1,
                    Some(reordered) => {
                        r.counts.received += 1;
                        r.counts.reordered += reordered as u64;
                        r.hist.saturating_record(now.saturating_sub(sent).max(1));
                    }
                }
                m
            } else {
                self.flows[fi].mark(seq)
            };
            match mark {
                None => self.counts.duplicated += 1,
                Some(reordered) => {
                    self.counts.received += 1;
                    self.counts.bytes_received += seg.len() as u64;
                    self.counts.reordered += reordered as u64;
                    let rtt = now.saturating_sub(sent).max(1);
                    self.hist.saturating_record(rtt);
                    self.interval.saturating_record(rtt);
                }
            }
        }
        if answered_ping && self.opts.mode == Mode::Ping {
            self.ping_one(tx, fi);
        }
    }
}

impl Handler for Worker {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let now = self.now_ns();
        self.rate_start = now;
        self.measure_at = now + self.opts.warmup.as_nanos() as u64;
        self.stop_at = self
            .opts
            .duration
            .map(|d| self.measure_at + d.as_nanos() as u64);
        if self.opts.warmup.is_zero() {
            self.phase = Phase::Measure;
            for f in &mut self.flows {
                f.first_measured = 0;
            }
        }
        if self.flows.is_empty() {
            self.phase = Phase::Done;
            self.publish();
            return;
        }
        match self.opts.mode {
            Mode::Ping => {
                for fi in 0..self.flows.len() {
                    self.ping_one(tx, fi);
                }
            }
            Mode::Flood | Mode::Rate(_) => tx.call_later(Duration::ZERO, TICK),
        }
        tx.call_later(HOUSEKEEPING_EVERY, HOUSEKEEPING);
    }

    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let now = self.now_ns();
        let from = dgram.source();
        if !self.opts.target.ip().is_multicast()
            && crate::sys::canonical(from) != crate::sys::canonical(self.opts.target)
        {
            self.counts.foreign += dgram.segments() as u64;
            return;
        }
        if dgram.is_truncated() {
            self.counts.invalid += 1;
            return;
        }
        let sock = dgram.socket();
        let seg = match dgram.segment_size() {
            Some(s) if s > 0 => s as usize,
            _ => dgram.payload().len().max(1),
        };
        for chunk in dgram.payload().chunks(seg) {
            self.on_reply(chunk, from, sock, now, tx);
        }
        if dgram.payload().is_empty() {
            self.counts.invalid += 1;
        }
        if self.opts.mode == Mode::Flood && self.opts.window.is_some() {
            self.flood(tx);
        }
    }

    fn on_error(&mut self, event: ErrorEvent, _tx: &mut Transport<'_>) {
        // A flood into a closed port reports an error per datagram: count
        // known kinds without building a key each time.
        let known = match event {
            ErrorEvent::ConnectionRefused { .. } => Some("refused"),
            ErrorEvent::MessageTooLong { .. } => Some("message-too-long"),
            _ => None,
        };
        if let Some(k) = known
            && let Some(v) = self.counts.errors.get_mut(k)
        {
            *v += 1;
            return;
        }
        let kind = match event {
            ErrorEvent::Unreachable { errno, .. } => {
                format!("unreachable-{}", crate::errno_name(errno))
            }
            ErrorEvent::Other { errno, .. } => crate::errno_name(errno),
            _ => known.unwrap_or("other").to_string(),
        };
        *self.counts.errors.entry(kind).or_default() += 1;
    }

    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        match token {
            HOUSEKEEPING => self.housekeeping(tx),
            TICK => match self.opts.mode {
                Mode::Flood => {
                    self.flood(tx);
                    if self.sending(self.now_ns()) && self.opts.window.is_none() {
                        tx.call_later(Duration::ZERO, TICK);
                    }
                }
                Mode::Rate(_) => {
                    if let Some(d) = self.rate(tx) {
                        tx.call_later(d, TICK);
                    }
                }
                Mode::Ping => {}
            },
            _ => {}
        }
    }

    fn on_stop(&mut self) {
        self.phase = Phase::Done;
        self.publish();
    }
}

/// Percentiles of RTT in microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RttUs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
}

impl RttUs {
    /// From a histogram in nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return RttUs::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        RttUs {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max() as f64 / 1000.0,
            min: h.min() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        }
    }
}

/// A histogram as JSON: every recorded bucket as `[value_ns, count]`.
/// Recording each value `count` times rebuilds the same histogram, so
/// results from many processes merge exactly.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistogramData {
    /// Always "ns".
    pub unit: String,
    /// Significant digits of the buckets.
    pub sigfig: u8,
    /// `[value, count]` per non-empty bucket.
    pub counts: Vec<(u64, u64)>,
}

impl HistogramData {
    /// Encodes `h`.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        HistogramData {
            unit: "ns".into(),
            sigfig: 3,
            counts: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }
    /// Decodes into a histogram.
    pub fn to_histogram(&self) -> Result<Histogram<u64>, String> {
        if self.unit != "ns" || self.sigfig != 3 {
            return Err(format!(
                "histogram in {} with {} digits: expected ns, 3",
                self.unit, self.sigfig
            ));
        }
        let mut h = new_histogram();
        for &(v, c) in &self.counts {
            h.record_n(v, c)
                .map_err(|e| format!("histogram value {v}: {e:?}"))?;
        }
        Ok(h)
    }
}

/// UDP error counters of the host (`/proc/net/snmp`, `/proc/net/snmp6`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostUdp {
    /// Datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Sends dropped because a send buffer was full.
    pub sndbuf_errors: u64,
    /// Datagrams that could not be delivered (includes the above).
    pub in_errors: u64,
}

impl HostUdp {
    /// Reads the counters now (zeros where the files are missing).
    pub fn read() -> Self {
        let mut h = HostUdp::default();
        if let Ok(text) = std::fs::read_to_string("/proc/net/snmp") {
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
            if lines.len() >= 2 {
                let names = lines[0].split_whitespace();
                let values = lines[1].split_whitespace();
                for (n, v) in names.zip(values) {
                    let v: u64 = v.parse().unwrap_or(0);
                    match n {
                        "RcvbufErrors" => h.rcvbuf_errors += v,
                        "SndbufErrors" => h.sndbuf_errors += v,
                        "InErrors" => h.in_errors += v,
                        _ => {}
                    }
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/net/snmp6") {
            for l in text.lines() {
                let mut it = l.split_whitespace();
                let (Some(n), Some(v)) = (it.next(), it.next()) else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match n {
                    "Udp6RcvbufErrors" => h.rcvbuf_errors += v,
                    "Udp6SndbufErrors" => h.sndbuf_errors += v,
                    "Udp6InErrors" => h.in_errors += v,
                    _ => {}
                }
            }
        }
        h
    }

    fn since(self, before: HostUdp) -> HostUdp {
        HostUdp {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(before.in_errors),
        }
    }

    fn add(&mut self, o: &HostUdp) {
        self.rcvbuf_errors += o.rcvbuf_errors;
        self.sndbuf_errors += o.sndbuf_errors;
        self.in_errors += o.in_errors;
    }
}

/// The result of a run, or of several merged.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    /// Target address(es).
    pub target: String,
    /// `flood`, `ping`, `rate`, or a merge of several.
    pub mode: String,
    /// Requested rate (rate mode).
    pub rate: Option<f64>,
    /// Backend of the generator.
    pub backend: String,
    /// Payload size.
    pub size: usize,
    /// Flows.
    pub flows: usize,
    /// Workers.
    pub workers: usize,
    /// Datagrams per send.
    pub gso: usize,
    /// Seconds measured (the longest, after a merge).
    pub duration_s: f64,
    /// Runs merged into this one.
    pub runs: usize,
    /// Datagrams sent after the warm-up.
    pub sent: u64,
    /// Distinct replies.
    pub received: u64,
    /// `sent - received`, after the drain wait.
    pub lost: u64,
    /// Replies that came after a later sequence of their flow.
    pub reordered: u64,
    /// Replies to an already answered sequence.
    pub duplicated: u64,
    /// Not a valid reply.
    pub invalid: u64,
    /// From another address.
    pub foreign: u64,
    /// Send errors by errno name (from the engine).
    pub send_errors: BTreeMap<String, u64>,
    /// The generator's own sockets' kernel drops (`SO_RXQ_OVFL`).
    pub kernel_drops: u64,
    /// Host-wide UDP error counter deltas over the run.
    pub host_udp: HostUdp,
    /// Other counts: errors reported by the kernel, timeouts, backpressure.
    pub counts: Counts,
    /// Sent datagrams per second.
    pub pps_sent: f64,
    /// Received (distinct) replies per second.
    pub pps_received: f64,
    /// Received payload, Gbit/s.
    pub gbps: f64,
    /// Sent payload, Gbit/s.
    pub gbps_sent: f64,
    /// RTT percentiles.
    pub rtt_us: RttUs,
    /// The RTT histogram, exactly.
    pub histogram: HistogramData,
    /// Multicast target: every responder's own account (empty otherwise).
    #[serde(default)]
    pub responders: Vec<ResponderReport>,
}

impl LoadReport {
    /// Merges runs made at the same time (rates add up; the histogram is
    /// the exact union).
    pub fn merge(reports: &[LoadReport]) -> Result<LoadReport, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut out = first.clone();
        let mut hist = first.histogram.to_histogram()?;
        for r in &reports[1..] {
            hist.add(r.histogram.to_histogram()?)
                .map_err(|e| format!("{e:?}"))?;
            out.runs += r.runs;
            out.sent += r.sent;
            out.received += r.received;
            out.lost += r.lost;
            out.reordered += r.reordered;
            out.duplicated += r.duplicated;
            out.invalid += r.invalid;
            out.foreign += r.foreign;
            out.kernel_drops += r.kernel_drops;
            out.host_udp.add(&r.host_udp);
            out.counts.add(&r.counts);
            for (k, v) in &r.send_errors {
                *out.send_errors.entry(k.clone()).or_default() += v;
            }
            out.pps_sent += r.pps_sent;
            out.pps_received += r.pps_received;
            out.gbps += r.gbps;
            out.gbps_sent += r.gbps_sent;
            out.flows += r.flows;
            out.workers += r.workers;
            out.duration_s = out.duration_s.max(r.duration_s);
            for (field, other) in [
                (&mut out.target, &r.target),
                (&mut out.mode, &r.mode),
                (&mut out.backend, &r.backend),
            ] {
                if !field.split(',').any(|x| x == other) {
                    field.push(',');
                    field.push_str(other);
                }
            }
            if out.size != r.size {
                out.size = out.size.max(r.size);
            }
            for rr in &r.responders {
                match out.responders.iter_mut().find(|x| x.addr == rr.addr) {
                    Some(x) => {
                        let mut h = x.histogram.to_histogram()?;
                        h.add(rr.histogram.to_histogram()?)
                            .map_err(|e| format!("{e:?}"))?;
                        x.received += rr.received;
                        x.lost += rr.lost;
                        x.duplicated += rr.duplicated;
                        x.reordered += rr.reordered;
                        x.rtt_us = RttUs::from_histogram(&h);
                        x.histogram = HistogramData::from_histogram(&h);
                    }
                    None => out.responders.push(rr.clone()),
                }
            }
        }
        out.rtt_us = RttUs::from_histogram(&hist);
        out.histogram = HistogramData::from_histogram(&hist);
        Ok(out)
    }

    /// The percentile distribution in HdrHistogram's text form (`.hgrm`),
    /// values in microseconds, for plotting.
    pub fn percentile_text(&self) -> Result<String, String> {
        let h = self.histogram.to_histogram()?;
        let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - q))
            } else {
                "inf".into()
            };
            s.push_str(&format!(
                "{:12.3} {:14.12} {:10} {:>14}\n",
                v.value_iterated_to() as f64 / 1000.0,
                q,
                v.count_since_last_iteration(),
                inv
            ));
        }
        s.push_str(&format!(
            "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {:.3}, Total count = {}]\n",
            h.mean() / 1000.0,
            h.stdev() / 1000.0,
            h.max() as f64 / 1000.0,
            h.len()
        ));
        Ok(s)
    }

    /// The final table.
    pub fn table(&self) -> String {
        let loss = if self.sent > 0 {
            100.0 * self.lost as f64 / self.sent as f64
        } else {
            0.0
        };
        let mut s = format!(
            "target {}  mode {}{}  size {}  flows {}  workers {}  gso {}  backend {}  {:.2} s\n",
            self.target,
            self.mode,
            self.rate.map_or(String::new(), |r| format!(" {r:.0}/s")),
            self.size,
            self.flows,
            self.workers,
            self.gso,
            self.backend,
            self.duration_s
        );
        s += &format!(
            "sent {:>12}  {:>12.0}/s  {:.3} Gbit/s\nrecv {:>12}  {:>12.0}/s  {:.3} Gbit/s\n",
            self.sent, self.pps_sent, self.gbps_sent, self.received, self.pps_received, self.gbps
        );
        s += &format!(
            "lost {} ({loss:.3}%)  reordered {}  duplicated {}  invalid {}  foreign {}\n",
            self.lost, self.reordered, self.duplicated, self.invalid, self.foreign
        );
        let errs: Vec<String> = self
            .send_errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let evs: Vec<String> = self
            .counts
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s += &format!(
            "send errors {}  kernel drops {}  host UDP: rcvbuf-errors {} sndbuf-errors {} in-errors {}  icmp/errors {}{}\n",
            if errs.is_empty() {
                "none".into()
            } else {
                errs.join(" ")
            },
            self.kernel_drops,
            self.host_udp.rcvbuf_errors,
            self.host_udp.sndbuf_errors,
            self.host_udp.in_errors,
            if evs.is_empty() {
                "none".into()
            } else {
                evs.join(" ")
            },
            if self.counts.timeouts > 0 {
                format!("  timeouts {}", self.counts.timeouts)
            } else {
                String::new()
            },
        );
        for r in &self.responders {
            s += &format!(
                "responder {}  received {}  lost {}  duplicated {}  reordered {}  rtt p50 {:.1} p99 {:.1} us\n",
                r.addr, r.received, r.lost, r.duplicated, r.reordered, r.rtt_us.p50, r.rtt_us.p99
            );
        }
        let r = &self.rtt_us;
        s += &format!(
            "rtt us  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  (min {:.1} mean {:.1})\n",
            r.p50, r.p90, r.p99, r.p999, r.p9999, r.max, r.min, r.mean
        );
        s
    }
}

/// A per-second progress line's figures.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Seconds since the start (warm-up included).
    pub elapsed: f64,
    /// Sent per second over the last interval.
    pub pps_sent: f64,
    /// Received per second over the last interval.
    pub pps_received: f64,
    /// Sent minus received so far (in flight or lost).
    pub unanswered: u64,
    /// p99 RTT over the last interval, µs.
    pub p99_us: f64,
}

impl Progress {
    /// As a line.
    pub fn line(&self) -> String {
        format!(
            "t={:>6.1}s out {:>10.0}/s in {:>10.0}/s unanswered {:>8} p99 {:>9.1} us",
            self.elapsed, self.pps_sent, self.pps_received, self.unanswered, self.p99_us
        )
    }
}

/// Runs the generator until done (or `cancel` is set); calls `progress`
/// about once a second.
pub fn run_load(
    opts: &LoadOpts,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&Progress),
) -> io::Result<LoadReport> {
    opts.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let workers = opts.workers.min(opts.flows).max(1);
    let per = opts.flows.div_ceil(workers);
    let bind = opts.bind.unwrap_or_else(|| {
        if opts.target.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    });
    if bind.is_ipv6() != opts.target.is_ipv6() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--bind {bind} and target {} are of different families",
                opts.target
            ),
        ));
    }
    let mut cfg = Config::new(bind);
    cfg.backend = opts.backend;
    cfg.workers = workers;
    cfg.sockets_per_worker = per;
    cfg.distinct_ports = true;
    cfg.busy_poll = opts.busy_poll;
    // A socket connected to a group would hear no unicast answers.
    cfg.connect = (opts.connect && !opts.target.ip().is_multicast()).then_some(opts.target);
    if opts.target.ip().is_multicast() {
        cfg.multicast.ttl = Some(opts.multicast_ttl);
    }
    cfg.gro = opts.gso > 1;
    cfg.recv_slots = 1024;
    cfg.send_slots = if opts.gso > 1 { 128 } else { 512 };
    cfg.first_cpu = opts.first_cpu.unwrap_or_else(|| {
        let n = crate::sys::allowed_cpus().len().max(1);
        n - workers.min(n)
    });
    if opts.gso > 1 {
        // A train needs a slot for the whole train.
        cfg.slot_size = crate::GRO_SLOT_SIZE;
    } else {
        cfg.slot_size = (opts.size + crate::HEADROOM).max(crate::DEFAULT_SLOT_SIZE);
    }
    let token = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        ((t ^ (t >> 32) ^ std::process::id() as u64) as u32) | 1
    };
    let opts_arc = Arc::new(opts.clone());
    let shared: Vec<Arc<Mutex<Partial>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(Partial::default())))
        .collect();
    let abort = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let count = opts.count;
    let per_worker_count = move |w: usize| {
        count.map(|c| c / workers as u64 + u64::from((w as u64) < c % workers as u64))
    };
    let rate_interval_ns = match opts.mode {
        Mode::Rate(r) => 1e9 / (r / workers as f64),
        _ => 0.0,
    };
    let (o2, s2, a2) = (opts_arc.clone(), shared.clone(), abort.clone());
    let flows_total = opts.flows;
    let before = HostUdp::read();
    let engine = Engine::start(cfg, move |w| {
        let mut flows = Vec::new();
        let mut by_sock = vec![None; per];
        for (j, slot) in by_sock.iter_mut().enumerate() {
            let id = w + j * workers;
            if id < flows_total {
                *slot = Some(flows.len());
                flows.push(Flow::new(id as u32, j));
            }
        }
        Worker {
            token,
            epoch,
            flows,
            by_sock,
            next_flow: 0,
            phase: Phase::Warmup,
            measure_at: 0,
            stop_at: None,
            drain_until: 0,
            count_quota: per_worker_count(w),
            rate_interval_ns,
            rate_sent: 0,
            rate_start: 0,
            counts: Counts::default(),
            hist: new_histogram(),
            interval: new_histogram(),
            scratch: vec![0x5a; o2.size * o2.gso.max(1)],
            outstanding: 0,
            replies: 0,
            last_replies: 0,
            last_measured_ns: 0,
            responders: std::collections::HashMap::new(),
            shared: s2[w].clone(),
            abort: a2.clone(),
            opts: o2.clone(),
        }
    })?;
    let backend = engine.backend();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut prev = Counts::default();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if cancel.load(Ordering::Relaxed) {
            abort.store(true, Ordering::Relaxed);
        }
        let done = shared
            .iter()
            .all(|p| p.lock().unwrap_or_else(|e| e.into_inner()).done);
        if done {
            break;
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let mut now = Counts::default();
            let mut h = new_histogram();
            for p in &shared {
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                now.add(&p.counts);
                if let Some(i) = p.interval.take() {
                    let _ = h.add(&i);
                }
            }
            let dt = last.elapsed().as_secs_f64();
            progress(&Progress {
                elapsed: started.elapsed().as_secs_f64(),
                pps_sent: (now.sent - prev.sent) as f64 / dt,
                pps_received: (now.received - prev.received) as f64 / dt,
                unanswered: now.sent.saturating_sub(now.received),
                p99_us: if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                },
            });
            prev = now;
            last = Instant::now();
        }
    }
    let engine_stats = engine.stop()?;
    let after = HostUdp::read();
    let mut counts = Counts::default();
    let mut hist = new_histogram();
    let mut by_addr: std::collections::BTreeMap<SocketAddr, (ResponderReport, Histogram<u64>)> =
        std::collections::BTreeMap::new();
    for p in &shared {
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        counts.add(&p.counts);
        if let Some(t) = p.total.take() {
            let _ = hist.add(&t);
        }
        for (a, r, h) in p.responders.drain(..) {
            let e = by_addr.entry(a).or_insert_with(|| {
                (
                    ResponderReport {
                        addr: a.to_string(),
                        ..Default::default()
                    },
                    new_histogram(),
                )
            });
            e.0.received += r.received;
            e.0.duplicated += r.duplicated;
            e.0.reordered += r.reordered;
            let _ = e.1.add(&h);
        }
    }
    let responders: Vec<ResponderReport> = by_addr
        .into_values()
        .map(|(mut r, h)| {
            r.lost = counts.sent.saturating_sub(r.received);
            r.rtt_us = RttUs::from_histogram(&h);
            r.histogram = HistogramData::from_histogram(&h);
            r
        })
        .collect();
    let lost = if opts.target.ip().is_multicast() {
        responders.iter().map(|r| r.lost).sum()
    } else {
        counts.sent.saturating_sub(counts.received)
    };
    // The measured interval: the asked duration (sending stops exactly at
    // its end), or, with --count or a cancel, up to the last measured send.
    let span = shared
        .iter()
        .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).measured_ns)
        .max()
        .unwrap_or(0);
    let secs = match opts.duration {
        Some(d) if !cancel.load(Ordering::Relaxed) && opts.count.is_none() => d.as_secs_f64(),
        _ => span as f64 / 1e9,
    }
    .max(1e-9);
    let send_errors = engine_stats
        .send_errors
        .iter()
        .map(|&(e, v)| (crate::errno_name(e), v))
        .collect();
    Ok(LoadReport {
        target: opts.target.to_string(),
        mode: opts.mode.name().to_string(),
        rate: match opts.mode {
            Mode::Rate(r) => Some(r),
            _ => None,
        },
        backend: backend.to_string(),
        size: opts.size,
        flows: opts.flows,
        workers,
        gso: opts.gso,
        duration_s: secs,
        runs: 1,
        sent: counts.sent,
        received: counts.received,
        lost,
        reordered: counts.reordered,
        duplicated: counts.duplicated,
        invalid: counts.invalid,
        foreign: counts.foreign,
        send_errors,
        kernel_drops: engine_stats.kernel_drops,
        host_udp: after.since(before),
        pps_sent: counts.sent as f64 / secs,
        pps_received: counts.received as f64 / secs,
        gbps: counts.bytes_received as f64 * 8.0 / secs / 1e9,
        gbps_sent: counts.bytes_sent as f64 * 8.0 / secs / 1e9,
        rtt_us: RttUs::from_histogram(&hist),
        histogram: HistogramData::from_histogram(&hist),
        counts,
        responders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_window_tells_new_reordered_and_duplicate() {
        let mut f = Flow::new(0, 0);
        assert_eq!(f.mark(0), Some(false));
        assert_eq!(f.mark(2), Some(false));
        assert_eq!(f.mark(1), Some(true), "older than the highest: reordered");
        assert_eq!(f.mark(1), None, "seen: duplicate");
        assert_eq!(f.mark(2), None);
        assert_eq!(f.mark(70_000), Some(false), "a jump clears the window");
        assert_eq!(f.mark(70_000 - 10), Some(true));
        assert_eq!(
            f.mark(3),
            Some(true),
            "too old to remember: counted new, reordered"
        );
        // Wrap-around of the bitmap: sequence s and s + 65536 are distinct.
        let mut g = Flow::new(0, 0);
        for s in 0..(SEQ_WINDOW * 2 + 5) {
            assert_eq!(g.mark(s), Some(false));
        }
        assert_eq!(g.mark(SEQ_WINDOW * 2), None);
    }

    #[test]
    fn histogram_json_round_trip_is_exact() {
        let mut h = new_histogram();
        for v in [1u64, 999, 1000, 1001, 123_456, 987_654_321, 59_000_000_000] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        let back = HistogramData::from_histogram(&h).to_histogram().unwrap();
        assert_eq!(back, h);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut o = LoadOpts::new("127.0.0.1:9".parse().unwrap());
        o.size = 10;
        assert!(o.validate().unwrap_err().contains("--size"));
        o.size = 65508;
        assert!(o.validate().unwrap_err().contains("--size"));
        o.size = 64;
        o.mode = Mode::Rate(0.0);
        assert!(o.validate().unwrap_err().contains("--rate"));
        o.mode = Mode::Rate(f64::INFINITY);
        assert!(o.validate().is_err());
        o.mode = Mode::Flood;
        o.gso = 64;
        o.size = 1400;
        assert!(o.validate().unwrap_err().contains("64 KiB"));
        o.gso = 1;
        o.target = "127.0.0.1:0".parse().unwrap();
        assert!(o.validate().unwrap_err().contains("port 0"));
        let mut v6 = LoadOpts::new("[::1]:9".parse().unwrap());
        v6.size = 65527;
        assert!(v6.validate().is_ok(), "IPv6 allows 65527");
        v6.size = 65528;
        assert!(v6.validate().is_err());
    }
}
