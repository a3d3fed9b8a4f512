//! One load worker: a handler on the engine that sends stamped datagrams
//! on its flows and accounts for every reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

mod arrivals;
mod kstamp;
mod pace;
pub use pace::LATE_LIMIT;
mod reply;
mod send;

use super::matcher::{Found, IdRing, Match, read_id, write_id};
use super::opts::{LoadOpts, Mode};
use super::report::{Counts, ResponderReport, new_histogram};
use super::responders::Responders;
use crate::apps::header::{Header, sockperf};
use crate::apps::seq::{Seen, SeqWindow};
use crate::apps::window::InFlight;
use udpring::{Datagram, ErrorEvent, Handler, SendError, Transport};

pub(super) struct Flow {
    id: u32,
    sock: usize,
    next_seq: u64,
    /// First sequence sent after the warm-up.
    first_measured: u64,
    window: SeqWindow,
    /// Ping mode: the request in flight and when it was sent.
    in_flight: Option<(u64, u64)>,
    /// ID matching: the requests remembered by ID.
    ids: Option<IdRing>,
}

impl Flow {
    pub(super) fn new(id: u32, sock: usize) -> Self {
        Flow {
            id,
            sock,
            next_seq: 0,
            first_measured: u64::MAX,
            window: SeqWindow::new(),
            in_flight: None,
            ids: None,
        }
    }
}

/// One of the counters a reply that answers nothing goes to.
type Field = fn(&mut Counts) -> &mut u64;

/// What a worker shares with the thread that reports.
#[derive(Default)]
pub(super) struct Partial {
    pub counts: Counts,
    /// RTTs since the reporter last took them (for the per-second line).
    pub interval: Option<Histogram<u64>>,
    /// All RTTs, set when the worker is done.
    pub total: Option<Histogram<u64>>,
    /// Multicast target: per responder (with its histogram), set when done.
    pub responders: Vec<(SocketAddr, ResponderReport, Histogram<u64>)>,
    /// From the end of the warm-up to the last measured send (+ one rate
    /// interval), set when done.
    pub measured_ns: u64,
    /// Still sending (warm-up or measuring); false once draining.
    pub sending: bool,
    /// Paced runs: the furthest a measured send fell behind its due time.
    pub max_lag_ns: u64,
    /// `--kernel-timestamps`: the round trips' stages, set when done.
    pub stages: Option<crate::apps::stages::Stages>,
    pub done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    Warmup,
    Measure,
    Drain,
    Done,
}

const TICK: u64 = 1;
const HOUSEKEEPING: u64 = 2;
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(20);
/// Datagrams a flood worker queues per tick (one submit, or a few
/// `sendmmsg` calls, carries them all): 4 send slots of [`FLOOD_EACH`]
/// of udpring's header, or 256 of the load's 512 with payloads of the
/// user's.
/// Between ticks the sender is in userspace, the receiver drains its
/// socket and sleeps, and the next datagram pays for waking it: fewer,
/// longer ticks wake it less. 256 against 64, 5 interleaved rounds into
/// the C sink (mmsg, 64 B): 0.86-1.03x (mean 0.94x) of the C `send()`
/// loop against 0.87-0.92x (mean 0.90x).
const FLOOD_DATAGRAMS: usize = 256;
/// GSO trains a flood worker queues per tick, within the load's 128
/// send slots (up to [`FLOOD_TRAINS_EACH`] trains per slot), and at most
/// [`FLOOD_TRAIN_BYTES`] of them.
const FLOOD_TRAINS: usize = 64;
/// Bytes of GSO trains a flood worker queues per tick: 64 trains of
/// 64 x 64 B, 4 of 46 x 1400 B. A tick's trains are written, then the
/// kernel copies them; the slots of one tick are those of the next (the
/// free list is a stack), so a small tick is copied from a warm cache.
/// Into the C sink at 46 x 1400 B (8 interleaved rounds): 4 trains a
/// tick sent 1.24x of what 64 did. Smaller ticks cost the small trains:
/// at 64 x 64 B, 32 trains a tick echoed 0.96x of 64 in `udpring bench`
/// (0.95-1.00x, 5 rounds), and sent 0.995x of 64 into the C sink (8).
const FLOOD_TRAIN_BYTES: usize = 256 * 1024;
/// Datagrams of udpring's header a flood without GSO builds per call, in
/// one send slot (each still its own datagram: one `sendmmsg` message or
/// SQE each): the handler's work per datagram is its 16 bytes of stamp,
/// not a call, a slot and its bookkeeping. (As many as fit in 4 KiB.)
const FLOOD_EACH: usize = 64;
/// GSO trains of udpring's header a flood builds per call, in one send
/// slot (each still its own send), as many as fit in its 64 KiB: 16 of
/// 64 x 64 B. One slot, one call and one address check for 16 trains,
/// and 64 KiB written in a row rather than 4 KiB in each of 16 slots.
const FLOOD_TRAINS_EACH: usize = 16;
/// Due times a flood call can carry: the most datagrams one call builds.
const FLOOD_CALL_MAX: usize = if FLOOD_EACH > FLOOD_TRAINS_EACH * 64 {
    FLOOD_EACH
} else {
    FLOOD_TRAINS_EACH * 64
};

pub(super) struct Worker {
    opts: Arc<LoadOpts>,
    token: u64,
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
    /// Bursts: this worker's datagrams per burst (0: evenly spaced), and
    /// the time between bursts.
    burst: u64,
    burst_every_ns: f64,
    /// `--arrivals poisson`: this worker's schedule.
    poisson: Option<arrivals::Poisson>,
    rate_sent: u64,
    /// Paced runs: the furthest a measured send fell behind its due time.
    max_lag_ns: u64,
    /// Paced runs: stopped [`pace::LATE_LIMIT`] past the end with
    /// datagrams still due (counted in `unsent`).
    rate_cut: bool,
    /// The next payload (of `opts.payloads`) this worker sends: the
    /// capture's order across all flows.
    payload_next: u64,
    rate_start: u64,
    counts: Counts,
    hist: Histogram<u64>,
    interval: Histogram<u64>,
    /// Valid replies outstanding, warm-up included (the flood window).
    in_flight: InFlight,
    /// A flood tick's due times (allocated once, [`FLOOD_CALL_MAX`]).
    flood_due: Vec<u64>,
    /// Bytes one send slot holds (the engine's; the xdp backend keeps
    /// room for headers before each).
    send_cap: usize,
    last_measured_ns: u64,
    /// Multicast target: replies by responder.
    responders: Responders,
    /// `--kernel-timestamps`: the stamps of requests and replies.
    ks: Option<kstamp::KStamps>,
    /// RTTs not yet in the histograms: a value and how many in a row.
    rtt_run: (u64, u64),
    shared: Arc<Mutex<Partial>>,
    abort: Arc<AtomicBool>,
}

impl Worker {
    /// Worker `w`'s handler: its flows are `w`, `w + workers`, ... (the
    /// sockets it owns, `per` of them), with `count` datagrams to send if
    /// the run is counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        w: usize,
        workers: usize,
        per: usize,
        opts: Arc<LoadOpts>,
        token: u64,
        epoch: Instant,
        count: Option<u64>,
        rate_interval_ns: f64,
        shared: Arc<Mutex<Partial>>,
        abort: Arc<AtomicBool>,
    ) -> Self {
        let mut flows = Vec::new();
        let mut by_sock = vec![None; per];
        // A paced flow remembers a timeout's worth of requests (and a
        // quarter more), so that loss does not hold its IDs past the
        // schedule; the worker's flows together at most MAX_REMEMBERED.
        let mine = (0..per)
            .filter(|j| w + j * workers < opts.flows)
            .count()
            .max(1);
        let room = match opts.mode {
            Mode::Rate(r) => {
                let per_flow = r / opts.flows.max(1) as f64 * opts.timeout().as_secs_f64() * 1.25;
                (per_flow.min(1e9) as usize).min(crate::apps::load::matcher::MAX_REMEMBERED / mine)
            }
            _ => crate::apps::load::matcher::RING,
        };
        for (j, slot) in by_sock.iter_mut().enumerate() {
            let id = w + j * workers;
            if id < opts.flows {
                *slot = Some(flows.len());
                let mut f = Flow::new(id as u32, j);
                if let Match::Id { len, .. } = opts.matching {
                    f.ids = Some(if opts.target.ip().is_multicast() {
                        IdRing::for_group(len)
                    } else {
                        IdRing::with_room(len, room)
                    });
                }
                flows.push(f);
            }
        }
        let nflows = flows.len();
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
            count_quota: count,
            rate_interval_ns,
            burst: opts.bursts.map_or(0, |(n, _)| {
                n / workers as u64 + u64::from((w as u64) < n % workers as u64)
            }),
            burst_every_ns: opts.bursts.map_or(0.0, |(_, t)| t.as_nanos() as f64),
            poisson: (opts.arrivals == super::opts::Arrivals::Poisson)
                .then(|| arrivals::Poisson::new(rate_interval_ns, udpring::random_u64())),
            rate_sent: 0,
            payload_next: 0,
            max_lag_ns: 0,
            rate_cut: false,
            rate_start: 0,
            counts: Counts::default(),
            hist: new_histogram(),
            interval: new_histogram(),
            in_flight: InFlight::default(),
            flood_due: vec![0; FLOOD_CALL_MAX],
            send_cap: udpring::DEFAULT_SLOT_SIZE - udpring::HEADROOM,
            last_measured_ns: 0,
            responders: Responders::new(opts.max_responders()),
            ks: opts.kernel_timestamps.then(|| kstamp::KStamps::new(nflows)),
            rtt_run: (0, 0),
            shared,
            abort,
            opts,
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Moves from warm-up to measuring at the exact time it is due. (Which
    /// datagrams are measured goes by when they were due, see `send`.)
    fn advance(&mut self, now: u64) {
        if self.phase == Phase::Warmup && now >= self.measure_at {
            self.phase = Phase::Measure;
        }
    }

    /// Whether a datagram due at `at` may still go.
    fn sending(&self, at: u64) -> bool {
        matches!(self.phase, Phase::Warmup | Phase::Measure)
            && self.count_quota.is_none_or(|q| q > 0)
            && self.stop_at.is_none_or(|t| at < t)
            && !self.rate_cut
            && !self.abort.load(Ordering::Relaxed)
    }

    /// Queues up to [`FLOOD_DATAGRAMS`] datagrams or [`FLOOD_TRAINS`] GSO
    /// trains, one flow after the other, all stamped with one reading of
    /// the clock: they leave in the same submit.
    fn flood(&mut self, tx: &mut Transport<'_>) {
        let mut queued = 0;
        // A tick is counted in trains with GSO, in datagrams without.
        let trains = self.opts.gso > 1;
        let per_tick = if trains {
            (FLOOD_TRAIN_BYTES / (self.opts.gso * self.opts.size).max(1)).clamp(1, FLOOD_TRAINS)
        } else {
            FLOOD_DATAGRAMS
        };
        let now = self.now_ns();
        // A flood's datagrams are all due now: the times are written
        // once per tick, as far as the longest call needs.
        let mut due = std::mem::take(&mut self.flood_due);
        let mut filled = 0;
        self.advance(now);
        loop {
            if queued >= per_tick || !self.sending(now) {
                break;
            }
            if let Some(w) = self.opts.window
                && self.in_flight.outstanding() >= w
            {
                break;
            }
            let n = self.flood_len().min(due.len());
            if n > filled {
                due[filled..n].fill(now);
                filled = n;
            }
            let fi = self.next_flow;
            if !self.send(tx, fi, n, &due[..n], now) {
                break;
            }
            self.next_flow += 1;
            if self.next_flow == self.flows.len() {
                self.next_flow = 0;
            }
            queued += if trains { n.div_ceil(self.opts.gso) } else { n };
        }
        self.flood_due = due;
    }

    fn ping_one(&mut self, tx: &mut Transport<'_>, fi: usize) {
        let now = self.now_ns();
        self.advance(now);
        if !self.sending(now) {
            return;
        }
        let seq = self.flows[fi].next_seq;
        let t0 = self.ks.as_ref().map(|k| k.before_send(tx, fi, seq));
        if self.send(tx, fi, 1, &[now], now) {
            self.flows[fi].in_flight = Some((seq, now));
            if let (Some(k), Some(t0)) = (&mut self.ks, t0) {
                k.sent(fi, seq, t0);
            }
        }
    }

    fn ping_timeouts(&mut self, tx: &mut Transport<'_>) {
        let now = self.now_ns();
        let limit = self.opts.timeout().as_nanos() as u64;
        for fi in 0..self.flows.len() {
            match self.flows[fi].in_flight {
                Some((seq, t)) if now.saturating_sub(t) >= limit => {
                    // A warm-up request is not counted, lost or not.
                    if seq >= self.flows[fi].first_measured {
                        self.counts.timeouts += 1;
                    }
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
        p.sending = matches!(self.phase, Phase::Warmup | Phase::Measure);
        p.max_lag_ns = self.max_lag_ns;
        match &mut p.interval {
            Some(h) => {
                let _ = h.add(&self.interval);
            }
            None => p.interval = Some(self.interval.clone()),
        }
        self.interval.reset();
        if self.phase == Phase::Done {
            // Every publish from now on (replies still come until the
            // engine stops): the histogram and the responders as counted
            // with `counts`, so the totals stay their sums.
            p.total = Some(self.hist.clone());
            p.responders = self.responders.reports();
        }
        if self.phase == Phase::Done && !p.done {
            p.stages = self.ks.as_mut().map(|k| k.finish());
            p.measured_ns = self.last_measured_ns.saturating_sub(self.measure_at)
                + if self.burst > 0 {
                    self.burst_every_ns
                } else {
                    self.rate_interval_ns
                } as u64;
            p.done = true;
        }
    }

    fn housekeeping(&mut self, tx: &mut Transport<'_>) {
        let now = self.now_ns();
        self.advance(now);
        self.cut_if_late(now);
        // In rate mode what counts is the next datagram's due time: one due
        // before the end still goes, however late the worker is, until
        // `LATE_LIMIT` past the end.
        let next = match self.opts.mode {
            Mode::Rate(_) => self.due_at(self.rate_sent),
            _ => now,
        };
        if matches!(self.phase, Phase::Warmup | Phase::Measure) && !self.sending(next) {
            self.phase = Phase::Drain;
            self.drain_until = now + self.opts.drain().as_nanos() as u64;
        }
        if self.phase == Phase::Drain {
            // A group's requests are answered by every responder: back
            // when each one heard from has answered all of them (the
            // first answer to each is not enough).
            let all_back = if self.opts.target.ip().is_multicast() {
                self.responders.all_answered(self.counts.sent)
            } else {
                self.counts.received >= self.counts.sent && self.in_flight.outstanding() == 0
            };
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
                    self.in_flight.check_stall();
                    self.flood(tx);
                }
            }
            Mode::Rate(_) => {}
        }
        self.publish();
        if self.phase != Phase::Done {
            tx.call_later(HOUSEKEEPING_EVERY, HOUSEKEEPING);
        }
    }
}

impl Handler for Worker {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.send_cap = tx.send_capacity();
        let now = self.now_ns();
        self.rate_start = now;
        self.measure_at = now + self.opts.warmup().as_nanos() as u64;
        self.stop_at = self
            .opts
            .duration
            .map(|d| self.measure_at + d.as_nanos() as u64);
        if self.opts.warmup().is_zero() {
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
            Mode::Flood | Mode::Rate(_) => {
                tx.call_later(Duration::ZERO, TICK);
            }
        }
        tx.call_later(HOUSEKEEPING_EVERY, HOUSEKEEPING);
    }

    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        if let Some(k) = &mut self.ks {
            k.reply = kstamp::reply_times(&dgram);
        }
        let now = self.now_ns();
        self.advance(now);
        let from = dgram.source();
        if !self.opts.target.ip().is_multicast()
            && udpring::os::canonical(from) != udpring::os::canonical(self.opts.target)
        {
            return self.tally(|c| &mut c.foreign, dgram.segments() as u64);
        }
        if dgram.is_truncated() {
            // Cut by our own buffer: the reply was longer than we sent.
            return self.tally(|c| &mut c.invalid, dgram.segments() as u64);
        }
        let sock = dgram.socket();
        let seg = match dgram.segment_size() {
            Some(s) if s > 0 => s as usize,
            _ => dgram.payload().len().max(1),
        };
        for chunk in dgram.payload().chunks(seg) {
            self.on_reply(chunk, from, sock, now, tx);
        }
        self.flush_rtt();
        if dgram.payload().is_empty() {
            self.tally(|c| &mut c.invalid, 1);
        }
        if self.opts.mode == Mode::Flood && self.opts.window.is_some() {
            self.flood(tx);
        }
    }

    fn on_tx_timestamp(&mut self, id: u32, at: std::time::SystemTime, _tx: &mut Transport<'_>) {
        if let Some(k) = &mut self.ks {
            k.tx_stamp(id, crate::apps::stages::ns_of(at));
        }
    }

    fn on_error(&mut self, event: ErrorEvent, tx: &mut Transport<'_>) {
        self.count_error(event);
        self.refused_ping(event, tx);
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
