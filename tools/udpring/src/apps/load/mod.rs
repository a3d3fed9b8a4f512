//! `udpring load`: a load generator on the engine, with exact accounting.
//!
//! Each flow is one socket with its own source port (the engine's
//! `distinct_ports`), flows spread over workers. Every datagram carries a
//! [`Header`](crate::apps::header::Header): the run's token, the flow, a
//! sequence number and the intended send time. Replies are matched by
//! source address (anything else is *foreign*), then by token, flow and
//! sequence (anything that does not parse or does not match is *invalid*).
//! Per flow a 65536-sequence window tells new, reordered (older than the
//! highest seen) and duplicated replies apart; after a drain wait,
//! `lost = sent - unique replies`.
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
//!
//! - `opts.rs`: [`LoadOpts`], [`Mode`] and their checks;
//! - `worker.rs`: the handler each worker runs;
//! - `report.rs`: [`LoadReport`] and its merge;
//! - `text.rs`: the table, the `.hgrm` text, the live line ([`Progress`]);
//! - `responders.rs`: a multicast target's responders, each on its own;
//! - `host.rs`: [`HostUdp`], the host's UDP error counters.

mod diff;
pub mod dns;
pub mod expect;
pub mod histlog;
mod host;
mod matcher;
mod merge;
mod opts;
pub mod payload;
pub mod pcap;
mod report;
mod responders;
mod rtt;
mod text;
mod worker;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use diff::{DiffRow, diff, diff_text};
pub use host::HostUdp;
pub use matcher::{Match, Payloads};
pub use merge::merge_conflict;
pub use opts::{LoadOpts, Mode};
pub use report::{
    Burst, Counts, HistogramData, KernelCounts, LoadReport, MAX_HIST_TOTAL, ResponderReport, RttUs,
    add_checked, new_histogram,
};
pub use text::{ONE_WAY, Progress};
pub use worker::LATE_LIMIT;
use worker::{Partial, Worker};

use udpring::{Config, Engine, Stats};

/// The engine configuration of a run: `workers` workers with `per` flows
/// (sockets with their own ports) each.
fn engine_config(opts: &LoadOpts, workers: usize, per: usize) -> io::Result<Config> {
    let bind = opts
        .bind
        .unwrap_or_else(|| udpring::os::unspecified_like(opts.target, 0));
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
    cfg.bind_device = opts.socket.bind_device.clone();
    cfg.mark = opts.socket.mark;
    cfg.tos = opts.socket.tos();
    cfg.only_v6 = opts.socket.only_v6();
    // A client: its targets may well be on the ports of answering services.
    cfg.guard = udpring::Guard::client();
    cfg.backend = opts.backend.or_else(|| default_backend(opts));
    cfg.workers = workers;
    cfg.sockets_per_worker = per;
    cfg.distinct_ports = true;
    cfg.busy_poll = opts.busy_poll;
    // --gso says how the requests go: one send per datagram at 1, never
    // trains made behind the user's back.
    cfg.coalesce = false;
    cfg.send_zero_copy_min = opts.zerocopy_min;
    cfg.rx_timestamps = opts.kernel_timestamps;
    cfg.tx_timestamps = opts.kernel_timestamps;
    // A socket connected to a group would hear no unicast answers.
    cfg.connect = (opts.connect() && !opts.target.ip().is_multicast()).then_some(opts.target);
    if opts.target.ip().is_multicast() {
        cfg.multicast.ttl = Some(opts.multicast_ttl());
        // The interface the group's traffic leaves by: --iface, or an
        // IPv6 target's scope ([ff02::1%2]:5000); else the route's.
        cfg.multicast.interface = match (&opts.iface, opts.target) {
            (Some(name), _) => Some(udpring::Interface::Name(name.clone())),
            (None, SocketAddr::V6(v6)) if v6.scope_id() != 0 => {
                Some(udpring::Interface::Index(v6.scope_id()))
            }
            _ => None,
        };
    }
    cfg.gro = opts.gso > 1;
    // Every train is of `size`-byte segments: the sockets cut them
    // themselves, and each train goes as a plain send.
    cfg.udp_segment = (opts.gso > 1).then_some(opts.size as u16);
    cfg.recv_slots = 0; // 1024, or 64 of the 64 KiB GRO slots
    cfg.send_slots = if opts.gso > 1 { 128 } else { 512 };
    // Pinned, as the servers are: unpinned, a closed loop's round trip
    // depends on whether the scheduler puts the client beside the server
    // (a same-CPU wake-up) or not, from run to run.
    cfg.pin = !opts.no_pin;
    cfg.first_cpu = opts.cpu.unwrap_or_else(|| {
        let n = udpring::os::allowed_cpus().len().max(1);
        n - workers.min(n)
    });
    cfg.slot_size = if opts.gso > 1 {
        // A train needs a slot for the whole train.
        udpring::GRO_SLOT_SIZE
    } else {
        (opts.size + udpring::HEADROOM).max(udpring::DEFAULT_SLOT_SIZE)
    };
    if cfg.backend == Some(udpring::Backend::Xdp) {
        if opts.gso > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--backend xdp sends one frame per datagram: --gso does not apply",
            ));
        }
        if per > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--backend xdp runs one flow per worker: give --workers as many as --flows",
            ));
        }
        cfg.gro = false;
        cfg.udp_segment = None;
        cfg.slot_size = 0; // a UMEM chunk each
        cfg.xdp_iface = opts.iface.clone();
    }
    Ok(cfg)
}

/// The backend a run takes when none is forced (PERF.md, "The send side
/// against the kernel's limit", parts 2, 3, 5 and 6):
///
/// - a flood: `sendmmsg`, where the sending is the work. Into one C sink,
///   interleaved with io_uring, it sent more at 64 B (0.97x of a C
///   `send()` loop against 0.92x) and with --gso 64 (0.973x against
///   0.918x, 12 rounds), and against a C echo it received as much or
///   more. io_uring keeps a poll entry on the socket for its multishot
///   receive, which every datagram sent pays a wait-queue walk for, and
///   costs a submission and a completion per datagram in userspace.
/// - but a one-way flood (`--match none`) of GSO trains of
///   [`URING_TRAIN_BYTES`] or more: io_uring. At 46 x 1400 B it sent
///   0.993x of the C loop where `sendmmsg` fell into part 5's slow state
///   and sent 0.947x (16 rounds, alternating); at 64 x 512 B the two were
///   level. On part 6's slower, noisier host `sendmmsg` read 1.185x
///   against io_uring's 1.106x there, within that host's noise. With
///   replies to receive (`bench`'s 46 x 1400 B GSO row) the io_uring
///   client echoed 0.96x of the `sendmmsg` one, so those stay on
///   `sendmmsg`.
/// - everything else: the engine's default (io_uring): a ping's
///   turnaround, kernel timestamps (read with io_uring's own command) and
///   zero-copy sends.
pub(crate) fn default_backend(opts: &LoadOpts) -> Option<udpring::Backend> {
    let flood = matches!(opts.mode, Mode::Flood);
    let big_trains =
        opts.one_way() && opts.gso > 1 && opts.gso.saturating_mul(opts.size) >= URING_TRAIN_BYTES;
    (flood && !big_trains && opts.zerocopy_min.is_none() && !opts.kernel_timestamps)
        .then_some(udpring::Backend::Mmsg)
}

/// A one-way flood of GSO trains of at least this many bytes runs on the
/// engine's default backend (io_uring) rather than `sendmmsg`
/// ([`default_backend`]).
pub(crate) const URING_TRAIN_BYTES: usize = 32 * 1024;

/// A worker's partial result. A poisoned lock still holds the last counts
/// the worker published.
fn lock(p: &Mutex<Partial>) -> std::sync::MutexGuard<'_, Partial> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until every worker is done, calling `progress` once per
/// `every` of measurement (the first call `every` after the warm-up,
/// which is left out of the clock as of the counts) and once more at the
/// end for the tail, and passing a cancel on to the workers.
fn watch(
    shared: &[Arc<Mutex<Partial>>],
    cancel: &AtomicBool,
    abort: &AtomicBool,
    opts: &LoadOpts,
    mut progress: impl FnMut(&Progress),
) {
    let measure_from = Instant::now() + opts.warmup();
    let every = opts.interval.max(Duration::from_millis(100));
    let mut last = measure_from;
    let mut prev = Counts::default();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if cancel.load(Ordering::Relaxed) {
            abort.store(true, Ordering::Relaxed);
        }
        // When every worker is done, one last call covers the tail since
        // the last one (the end of sending and the drain), so the calls
        // together hold every measured reply.
        let finished = shared.iter().all(|p| lock(p).done);
        let now = Instant::now();
        if finished && now <= last {
            return;
        }
        if !finished && (now < measure_from || now.duration_since(last) < every) {
            continue;
        }
        let mut counts = Counts::default();
        let mut h = new_histogram();
        let mut sending = false;
        for p in shared {
            let mut p = lock(p);
            counts.add(&p.counts);
            sending |= p.sending;
            if let Some(i) = p.interval.take() {
                let _ = h.add(&i);
            }
        }
        let dt = now.duration_since(last).as_secs_f64();
        let elapsed = now.duration_since(measure_from).as_secs_f64();
        progress(&Progress {
            elapsed,
            interval_s: dt,
            draining: !sending,
            pps_sent: counts.sent.saturating_sub(prev.sent) as f64 / dt,
            pps_received: counts.received.saturating_sub(prev.received) as f64 / dt,
            p50_us: (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64 / 1000.0),
            p99_us: (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0),
            histogram: h,
            sent: counts.sent,
            received: counts.received,
            // One-way, nothing is expected back: not a count of loss.
            unanswered: (!opts.one_way()).then(|| counts.sent.saturating_sub(counts.received)),
            interval_sent: counts.sent.saturating_sub(prev.sent),
            interval_received: counts.received.saturating_sub(prev.received),
            interval_unexpected: (!opts.expect.is_empty())
                .then(|| counts.unexpected.saturating_sub(prev.unexpected)),
            unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        });
        prev = counts;
        last = now;
        if finished {
            return;
        }
    }
}

/// What the workers published when they were done, added up.
struct Collected {
    /// Paced runs: the furthest any send fell behind its due time, ns.
    max_lag_ns: u64,
    counts: Counts,
    hist: Histogram<u64>,
    responders: Vec<(ResponderReport, Histogram<u64>)>,
    /// The longest measured span of any worker, ns.
    span: u64,
    /// `--kernel-timestamps`: every worker's stages.
    stages: Option<crate::apps::stages::Stages>,
}

/// Adds up what the workers published when they were done.
fn collect(shared: &[Arc<Mutex<Partial>>]) -> Collected {
    let mut counts = Counts::default();
    let mut hist = new_histogram();
    let mut by_addr: BTreeMap<SocketAddr, (ResponderReport, Histogram<u64>)> = BTreeMap::new();
    let mut span = 0;
    let mut max_lag_ns = 0;
    let mut stages: Option<crate::apps::stages::Stages> = None;
    for p in shared {
        let mut p = lock(p);
        if let Some(st) = p.stages.take() {
            match &mut stages {
                Some(all) => all.merge(&st),
                None => stages = Some(st),
            }
        }
        counts.add(&p.counts);
        span = span.max(p.measured_ns);
        max_lag_ns = max_lag_ns.max(p.max_lag_ns);
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
    Collected {
        max_lag_ns,
        counts,
        hist,
        responders: by_addr.into_values().collect(),
        span,
        stages,
    }
}

/// Runs the generator until done (or `cancel` is set); calls `progress`
/// once per [`LoadOpts::interval`] of measurement.
pub fn run_load(
    opts: &LoadOpts,
    cancel: &AtomicBool,
    progress: impl FnMut(&Progress),
) -> io::Result<LoadReport> {
    opts.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let workers = opts.workers.min(opts.flows).max(1);
    let per = opts.flows.div_ceil(workers);
    let cfg = engine_config(opts, workers, per)?;
    let token = udpring::random_u64();
    let shared: Vec<Arc<Mutex<Partial>>> = (0..workers).map(|_| Arc::default()).collect();
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
    let (o2, s2, a2) = (Arc::new(opts.clone()), shared.clone(), abort.clone());
    let before = HostUdp::read();
    let engine = Engine::start(cfg, move |w| {
        Worker::new(
            w,
            workers,
            per,
            o2.clone(),
            token,
            epoch,
            per_worker_count(w),
            rate_interval_ns,
            s2[w].clone(),
            a2.clone(),
        )
    })?;
    let backend = engine.backend();
    watch(&shared, cancel, &abort, opts, progress);
    // A worker that failed (an xdp interface gone) ended its share early:
    // the figures stand up to there, and the run is not valid.
    let (engine_stats, failed) = match engine.stop() {
        Ok(s) => (s, None),
        Err(e) => {
            let why = e.to_string();
            (*e.stats, Some(why))
        }
    };
    let host_udp = HostUdp::read().since(before);
    let c = collect(&shared);
    // The measured interval: the asked duration (a flood stops sending
    // exactly at its end; a paced run that fell behind its schedule sends
    // on what was due, for at most `LATE_LIMIT` past the end, and then the
    // span is longer), or,
    // with --count or a cancel, up to the last measured send.
    let secs = match opts.duration {
        Some(d) if !cancel.load(Ordering::Relaxed) && opts.count.is_none() => {
            d.as_secs_f64().max(c.span as f64 / 1e9)
        }
        _ => c.span as f64 / 1e9,
    }
    .max(1e-9);
    let stages = c.stages.as_ref().map(|s| s.report());
    let mut r = report(opts, backend, workers, secs, c, &engine_stats, host_udp);
    if let Some(why) = failed {
        r.valid = false;
        r.invalid_because = Some(format!(
            "a worker failed: {why}; its figures stop where it did"
        ));
    }
    r.kernel_timestamps = stages;
    r.run_tokens = vec![format!("{token:016x}")];
    Ok(r)
}

/// The report of one run.
fn report(
    opts: &LoadOpts,
    backend: udpring::Backend,
    workers: usize,
    secs: f64,
    c: Collected,
    engine_stats: &Stats,
    host_udp: HostUdp,
) -> LoadReport {
    let Collected {
        counts,
        mut hist,
        responders,
        max_lag_ns,
        ..
    } = c;
    let responders: Vec<ResponderReport> = responders
        .into_iter()
        .map(|(mut r, h)| {
            r.lost = counts.sent.saturating_sub(r.received);
            r.rtt_us = RttUs::from_histogram(&h);
            r.histogram = HistogramData::from_histogram(&h);
            r
        })
        .collect();
    let lost = if opts.one_way() {
        0
    } else if opts.target.ip().is_multicast() {
        responders.iter().map(|r| r.lost).sum()
    } else {
        counts.sent.saturating_sub(counts.received)
    };
    if opts.timeouts_as_latency && lost > 0 {
        // Every request that got no answer, at the timeout: percentiles
        // then cover all requests, not only the answered ones.
        let t = (opts.timeout().as_nanos() as u64).clamp(1, 60_000_000_000);
        let _ = hist.record_n(t, lost);
    }
    LoadReport {
        command: "load".into(),
        generator: concat!("udpring ", env!("CARGO_PKG_VERSION")).into(),
        run_tokens: Vec::new(),
        kernel_timestamps: None,
        target: opts.target.to_string(),
        mode: opts.mode.name().to_string(),
        rate: match opts.mode {
            Mode::Rate(r) => Some(r),
            _ => None,
        },
        schedule_lag_max_us: matches!(opts.mode, Mode::Rate(_)).then(|| max_lag_ns as f64 / 1e3),
        saturated: match opts.mode {
            // Fell behind its schedule: what it sent took longer than the
            // schedule allowed by more than 5% (and 10 ms).
            // Or stopped with datagrams still due; nothing sent and none
            // unsent: none was due (the verdict says so).
            Mode::Rate(r) => {
                let due = counts.sent as f64 / r;
                counts.unsent > 0 || (counts.sent > 0 && secs - due > (0.05 * due).max(0.010))
            }
            _ => false,
        },
        start_unix_s: None,
        start_late_s: None,
        warnings: Vec::new(),
        valid: true,
        invalid_because: None,
        one_way: opts.one_way(),
        timeouts_as_latency: opts.timeouts_as_latency,
        matching: opts.matching.name(),
        burst: opts.bursts.map(|(n, t)| Burst {
            datagrams: n,
            interval_s: t.as_secs_f64(),
        }),
        arrivals: opts
            .paced_at_a_rate()
            .then(|| opts.arrivals.name().to_string()),
        expect: expect::listed(&opts.expect),
        backend: backend.to_string(),
        size: opts.size,
        flows: opts.flows,
        workers,
        gso_segments: opts.gso,
        duration_s: secs,
        runs: 1,
        lost,
        send_errors: engine_stats
            .send_errors
            .iter()
            .map(|&(e, v)| (udpring::errno_name(e), v))
            .collect(),
        host_udp,
        kernel: KernelCounts {
            received_bufs: engine_stats.received_bufs,
            sent_bufs: engine_stats.sent_bufs,
            drops: engine_stats.kernel_drops,
            zc_sent: engine_stats.zc_sent,
            zc_copied: engine_stats.zc_copied,
        },
        pps_sent: counts.sent as f64 / secs,
        pps_received: counts.received as f64 / secs,
        gbps_received: counts.bytes_received as f64 * 8.0 / secs / 1e9,
        gbps_sent: counts.bytes_sent as f64 * 8.0 / secs / 1e9,
        rtt_us: RttUs::from_histogram(&hist),
        histogram: HistogramData::from_histogram(&hist),
        counts,
        responders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_flood_sends_with_sendmmsg_unless_its_trains_are_large() {
        let mut o = LoadOpts::new("127.0.0.1:9".parse().unwrap());
        o.matching = Match::None;
        let pick = |o: &LoadOpts| default_backend(o);
        assert_eq!(pick(&o), Some(udpring::Backend::Mmsg), "64 B flood");
        (o.gso, o.size) = (64, 64);
        assert_eq!(pick(&o), Some(udpring::Backend::Mmsg), "4 KiB trains");
        (o.gso, o.size) = (64, URING_TRAIN_BYTES / 64 - 1);
        assert_eq!(pick(&o), Some(udpring::Backend::Mmsg), "just below");
        (o.gso, o.size) = (64, URING_TRAIN_BYTES / 64);
        assert_eq!(pick(&o), None, "at the threshold: the engine's default");
        (o.gso, o.size) = (46, 1400);
        assert_eq!(pick(&o), None, "64 KiB trains");
        o.matching = Match::Header;
        assert_eq!(pick(&o), Some(udpring::Backend::Mmsg), "with replies");
        o.matching = Match::None;
        (o.gso, o.size) = (1, 1400);
        assert_eq!(pick(&o), Some(udpring::Backend::Mmsg), "no GSO");
        o.mode = Mode::Ping;
        assert_eq!(pick(&o), None, "a ping");
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
