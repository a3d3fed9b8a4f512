//! What a run reports: counts, RTT percentiles and the exact histogram, per
//! responder for a multicast target; merging results of many runs; the
//! table, the `.hgrm` text and the per-second line.

use std::collections::BTreeMap;

use super::host::HostUdp;

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
    /// RTT percentiles; `null` when it never answered.
    pub rtt_us: Option<RttUs>,
    /// Its RTT histogram, exactly.
    pub histogram: HistogramData,
}

/// What the generator's sockets did, in the kernel's own units (a GSO
/// send or a GRO train counts once) and over the whole run (warm-up and
/// drain included): the figures to hold against `/proc/net/snmp`
/// (`OutDatagrams`, `InDatagrams`, `RcvbufErrors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelCounts {
    /// Buffers the sockets received.
    pub received_bufs: u64,
    /// Sends the kernel took.
    pub sent_bufs: u64,
    /// Buffers the kernel dropped at the sockets (`SO_MEMINFO`); named
    /// `kernel_drops`, as in every document.
    #[serde(rename = "kernel_drops")]
    pub drops: u64,
    /// `--zerocopy-min`: sends the kernel made from the slot itself.
    #[serde(default)]
    pub zc_sent: u64,
    /// `--zerocopy-min`: zero-copy sends the kernel copied after all.
    #[serde(default)]
    pub zc_copied: u64,
}

impl KernelCounts {
    pub(super) fn add(&mut self, o: &KernelCounts) {
        self.received_bufs = self.received_bufs.saturating_add(o.received_bufs);
        self.sent_bufs = self.sent_bufs.saturating_add(o.sent_bufs);
        self.drops = self.drops.saturating_add(o.drops);
        self.zc_sent = self.zc_sent.saturating_add(o.zc_sent);
        self.zc_copied = self.zc_copied.saturating_add(o.zc_copied);
    }
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
    /// Datagrams of the warm-up, kept out of every other count: replies
    /// to warm-up datagrams, and whatever arrived during the warm-up
    /// (invalid, foreign or not).
    pub warmup_replies: u64,
    /// Replies shorter than what was sent (cut on the way, e.g. by a
    /// server's buffer): not counted as received.
    #[serde(default)]
    pub truncated: u64,
    /// Replies of this run that cannot be new: a sequence more than 65536
    /// below the highest answered (too old to tell), or one never sent.
    #[serde(default)]
    pub stale: u64,
    /// Replies from responders beyond the tracked maximum (multicast).
    #[serde(default)]
    pub untracked_responders: u64,
    /// Payload bytes sent after the warm-up.
    pub bytes_sent: u64,
    /// Payload bytes of distinct replies.
    pub bytes_received: u64,
    /// Sends refused for want of a free send slot (the engine's backpressure).
    pub send_exhausted: u64,
    /// Datagrams the engine gave up sending after the warm-up: the
    /// socket's send buffer stayed full (they count in `sent`, and are
    /// lost without having left).
    #[serde(default)]
    pub send_blocked: u64,
    /// Paced runs: datagrams due before the end that had not gone 1 s past
    /// it, when sending stopped (the host could not keep the rate).
    #[serde(default)]
    pub unsent: u64,
    /// Requests given up on after the timeout (ping mode, and ID
    /// matching when an ID's slot is needed again).
    pub timeouts: u64,
    /// ID matching, paced: requests written off before their timeout
    /// because their ID was needed again to keep the schedule (also in
    /// `timeouts`); a reply to one after that is `unmatched`.
    #[serde(default)]
    pub ids_reused_early: u64,
    /// Replies from the target that answer no request: an ID no request
    /// carries, a reply on a flow with nothing in flight, too short to
    /// hold the ID.
    #[serde(default)]
    pub unmatched: u64,
    /// `--expect`: answers (in `received` too, with their RTTs) without
    /// the expected bytes.
    #[serde(default)]
    pub unexpected: u64,
    /// The first such answer's first bytes (`expect::SAMPLE`), for the
    /// verdict to show; not in the document.
    #[serde(skip)]
    pub unexpected_sample: Option<Vec<u8>>,
    /// DNS (`--dns-queries`): answers by response code (NOERROR, NXDOMAIN,
    /// SERVFAIL, REFUSED, ...).
    #[serde(default)]
    pub dns_rcodes: BTreeMap<String, u64>,
    /// DNS: answers with the TC bit (truncated: the client would retry
    /// over TCP).
    #[serde(default)]
    pub dns_truncated: u64,
    /// DNS: replies that are not DNS responses (the QR bit clear, as in a
    /// query echoed back, or shorter than a 12-byte header): counted in
    /// `invalid` too, never as answers.
    #[serde(default)]
    pub dns_not_response: u64,
    /// ICMP and local errors the kernel reported (the error queue), by
    /// errno name: `ECONNREFUSED` (port unreachable), `EMSGSIZE` (too big
    /// for the path), `EHOSTUNREACH`, ...
    pub errors: BTreeMap<String, u64>,
}

impl Counts {
    pub(crate) fn add(&mut self, o: &Counts) {
        self.sent = self.sent.saturating_add(o.sent);
        self.dns_not_response = self.dns_not_response.saturating_add(o.dns_not_response);
        self.received = self.received.saturating_add(o.received);
        self.reordered = self.reordered.saturating_add(o.reordered);
        self.duplicated = self.duplicated.saturating_add(o.duplicated);
        self.invalid = self.invalid.saturating_add(o.invalid);
        self.foreign = self.foreign.saturating_add(o.foreign);
        self.warmup_replies = self.warmup_replies.saturating_add(o.warmup_replies);
        self.truncated = self.truncated.saturating_add(o.truncated);
        self.stale = self.stale.saturating_add(o.stale);
        self.untracked_responders = self
            .untracked_responders
            .saturating_add(o.untracked_responders);
        self.bytes_sent = self.bytes_sent.saturating_add(o.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(o.bytes_received);
        self.send_exhausted = self.send_exhausted.saturating_add(o.send_exhausted);
        self.send_blocked = self.send_blocked.saturating_add(o.send_blocked);
        self.unsent = self.unsent.saturating_add(o.unsent);
        self.timeouts = self.timeouts.saturating_add(o.timeouts);
        self.unmatched = self.unmatched.saturating_add(o.unmatched);
        self.ids_reused_early = self.ids_reused_early.saturating_add(o.ids_reused_early);
        self.unexpected = self.unexpected.saturating_add(o.unexpected);
        if self.unexpected_sample.is_none() {
            self.unexpected_sample.clone_from(&o.unexpected_sample);
        }
        self.dns_truncated = self.dns_truncated.saturating_add(o.dns_truncated);
        for (k, v) in &o.dns_rcodes {
            let e = self.dns_rcodes.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
        for (k, v) in &o.errors {
            let e = self.errors.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }
}

fn yes() -> bool {
    true
}

fn header_match() -> String {
    "header".into()
}

fn load_command() -> String {
    "load".into()
}

pub use crate::apps::histogram::new_histogram;

pub use super::rtt::{HistogramData, MAX_HIST_TOTAL, RttUs, add_checked};

/// Bursts of a paced run (`load --burst N --burst-interval T`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Burst {
    /// Datagrams back to back per burst (all workers together).
    pub datagrams: u64,
    /// Seconds from one burst's start to the next.
    pub interval_s: f64,
}

/// The result of a run, or of several merged.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    /// The subcommand that wrote it: `load`, or `report` for a merge.
    #[serde(default = "load_command")]
    pub command: String,
    /// What wrote it: `udpring` and its version.
    #[serde(default)]
    pub generator: String,
    /// Each run's random token (hex), the one its datagrams carry: two
    /// results with a token in common are the same run, counted twice if
    /// merged.
    #[serde(default)]
    pub run_tokens: Vec<String>,
    /// Target address(es).
    pub target: String,
    /// `flood`, `ping`, `rate`, or a merge of several.
    pub mode: String,
    /// Requested rate (rate mode).
    pub rate: Option<f64>,
    /// How replies were matched: `header`, `id:OFFSET:LEN`, `flow`, `none`.
    #[serde(default = "header_match", rename = "match")]
    pub matching: String,
    /// Paced runs: the furthest a send fell behind its intended time, µs
    /// (`null` for floods and ping).
    #[serde(default)]
    pub schedule_lag_max_us: Option<f64>,
    /// A paced run that could not keep its schedule (sent under 95% of
    /// the asked rate): its figures describe this generator's limit, not
    /// the target's. A merge with one such generator is not valid.
    #[serde(default)]
    pub saturated: bool,
    /// When measuring began, wall clock (Unix seconds): with `--start-at`
    /// when it actually began, otherwise when it was due (after the
    /// warm-up).
    #[serde(default)]
    pub start_unix_s: Option<f64>,
    /// With `--start-at`: how late measuring began, seconds (0 when on
    /// time; above 0.01 the generator also says so).
    #[serde(default)]
    pub start_late_s: Option<f64>,
    /// What the generator warned of or hinted at, as it also says on
    /// standard error unless `-q`: a paced run that fell behind, a late
    /// start, what to try after a loss. With `--json -q` this is where
    /// they are.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// False when a worker of the run failed, or, for a merge, when a
    /// generator was saturated (see `invalid_because`).
    #[serde(default = "yes")]
    pub valid: bool,
    /// Why the result is not valid.
    #[serde(default)]
    pub invalid_because: Option<String>,
    /// `--timeouts-as-latency`: requests without an answer are in the
    /// histogram at the timeout.
    #[serde(default)]
    pub timeouts_as_latency: bool,
    /// `--kernel-timestamps`: each round trip split at the kernel's stamps
    /// (`send_path`, `wire_and_server`, `receive_queue`), µs; `null`
    /// without it (and in a merge).
    #[serde(default)]
    pub kernel_timestamps: Option<crate::apps::stages::KernelStages>,
    /// One-way (`--match none`): nothing was expected back; `lost` is 0
    /// and `rtt_us` null by design. The sink reports what arrived.
    #[serde(default)]
    pub one_way: bool,
    /// A paced run in bursts: how many datagrams, how often.
    #[serde(default)]
    pub burst: Option<Burst>,
    /// How a run paced at a rate spaced its sends (`--arrivals`): `even`
    /// or `poisson`; `None` for one that was not (flood, ping, bursts, a
    /// capture's own timing).
    #[serde(default)]
    pub arrivals: Option<String>,
    /// What every answer was checked for (`--expect`, OFFSET:HEX each);
    /// those without it are `counts.unexpected`.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Backend of the generator.
    pub backend: String,
    /// Payload size.
    pub size: usize,
    /// Flows.
    pub flows: usize,
    /// Workers.
    pub workers: usize,
    /// Datagrams per send (1: no GSO).
    #[serde(alias = "gso")]
    pub gso_segments: usize,
    /// Seconds measured (the longest, after a merge).
    pub duration_s: f64,
    /// Runs merged into this one.
    pub runs: usize,
    /// `sent - received`, after the drain wait.
    pub lost: u64,
    /// Send errors by errno name (from the engine).
    pub send_errors: BTreeMap<String, u64>,
    /// Host-wide UDP error counter deltas over the run.
    pub host_udp: HostUdp,
    /// The generator's sockets in the kernel's units, the whole run (at
    /// the top level of the document: `received_bufs`, `kernel_drops`, ...).
    #[serde(flatten)]
    pub kernel: KernelCounts,
    /// The run's counts (at the top level of the document: `sent`,
    /// `received`, `timeouts`, ...).
    #[serde(flatten)]
    pub counts: Counts,
    /// Sent datagrams per second.
    pub pps_sent: f64,
    /// Received (distinct) replies per second.
    pub pps_received: f64,
    /// Received payload, Gbit/s.
    #[serde(alias = "gbps")]
    pub gbps_received: f64,
    /// Sent payload, Gbit/s.
    pub gbps_sent: f64,
    /// RTT percentiles; `null` when no reply came.
    pub rtt_us: Option<RttUs>,
    /// The RTT histogram, exactly.
    pub histogram: HistogramData,
    /// Multicast target: every responder's own account (empty otherwise).
    #[serde(default)]
    pub responders: Vec<ResponderReport>,
}

impl LoadReport {
    /// Checks what JSON cannot: every figure a finite number (JSON has no
    /// infinity; a result with one would not read back), the histogram
    /// decodable. `report` checks each file it reads and what it writes.
    pub fn check(&self) -> Result<(), String> {
        let r = self.rtt_us.clone().unwrap_or_default();
        let floats = [
            ("duration_s", self.duration_s),
            ("pps_sent", self.pps_sent),
            ("pps_received", self.pps_received),
            ("gbps_received", self.gbps_received),
            ("gbps_sent", self.gbps_sent),
            ("rate", self.rate.unwrap_or(0.0)),
            ("rtt_us.p50", r.p50),
            ("rtt_us.p90", r.p90),
            ("rtt_us.p99", r.p99),
            ("rtt_us.p999", r.p999),
            ("rtt_us.p9999", r.p9999),
            ("rtt_us.max", r.max),
            ("rtt_us.min", r.min),
            ("rtt_us.mean", r.mean),
        ];
        for (name, v) in floats {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} is {v}: not a finite, non-negative number"));
            }
        }
        // What no run of udpring can have made: a run of over a year,
        // rates past 10^12 a second, latencies past the histograms' 60 s.
        let ceilings = [
            ("duration_s", self.duration_s, 366.0 * 86400.0),
            ("pps_sent", self.pps_sent, 1e12),
            ("pps_received", self.pps_received, 1e12),
            ("gbps_received", self.gbps_received, 1e6),
            ("gbps_sent", self.gbps_sent, 1e6),
            ("rate", self.rate.unwrap_or(0.0), 1e12),
            ("rtt_us.max", r.max, 60e6),
        ];
        for (name, v, max) in ceilings {
            if v > max {
                return Err(format!("{name} is {v}: past {max}, which no run makes"));
            }
        }
        self.histogram.to_histogram().map(drop)
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A report built from random numbers (floats finite, as a run makes
    /// them), with a histogram of random values.
    fn report() -> impl Strategy<Value = LoadReport> {
        (
            proptest::collection::vec(any::<u64>(), 12),
            proptest::collection::vec(0.0f64..1e5, 6),
            proptest::collection::vec((1u64..59_000_000_000, 1u64..1000), 0..20),
            any::<bool>(),
        )
            .prop_map(|(n, f, hist, with_rate)| {
                let mut h = new_histogram();
                for (v, c) in hist {
                    h.record_n(v, c).unwrap();
                }
                LoadReport {
                    command: "load".into(),
                    generator: "udpring test".into(),
                    run_tokens: vec![format!("{:016x}", n[3])],
                    kernel_timestamps: None,
                    target: "127.0.0.1:9".into(),
                    mode: "flood".into(),
                    rate: with_rate.then_some(f[0]),
                    one_way: false,
                    schedule_lag_max_us: None,
                    saturated: false,
                    start_unix_s: None,
                    start_late_s: None,
                    warnings: Vec::new(),
                    valid: true,
                    invalid_because: None,
                    timeouts_as_latency: false,
                    matching: "header".into(),
                    burst: None,
                    arrivals: None,
                    expect: Vec::new(),
                    backend: "uring".into(),
                    size: (n[0] % 65_000) as usize,
                    flows: (n[1] % 1024) as usize + 1,
                    workers: (n[2] % 64) as usize + 1,
                    gso_segments: 1,
                    duration_s: f[1],
                    runs: 1,
                    lost: n[5],
                    send_errors: [("ENOBUFS".to_string(), n[10])].into(),
                    host_udp: HostUdp::default(),
                    kernel: KernelCounts {
                        received_bufs: n[4],
                        sent_bufs: n[3],
                        drops: n[11],
                        zc_sent: n[5],
                        zc_copied: n[6],
                    },
                    counts: Counts {
                        sent: n[3],
                        received: n[4],
                        reordered: n[6],
                        duplicated: n[7],
                        invalid: n[8],
                        foreign: n[9],
                        ..Counts::default()
                    },
                    pps_sent: f[2],
                    pps_received: f[3],
                    gbps_received: f[4],
                    gbps_sent: f[5],
                    rtt_us: RttUs::from_histogram(&h),
                    histogram: HistogramData::from_histogram(&h),
                    responders: Vec::new(),
                }
            })
    }

    proptest! {
        /// What `load --json` writes, `report` reads back exactly.
        #[test]
        fn written_results_read_back(r in report()) {
            r.check().unwrap();
            let text = serde_json::to_string(&r).unwrap();
            let back: LoadReport = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, r);
        }

        /// Merging any results never panics; counts that do not fit are
        /// refused (never clamped), and what a merge may not carry (an
        /// infinite rate) is refused by check().
        #[test]
        fn merges_never_panic(a in report(), b in report()) {
            match LoadReport::merge(&[a.clone(), b.clone()]) {
                Ok(m) => {
                    prop_assert_eq!(Some(m.counts.sent), a.counts.sent.checked_add(b.counts.sent));
                    let _ = m.check();
                }
                Err(e) => prop_assert!(e.contains("add up past") || e.contains("merge"), "{}", e),
            }
        }

        /// Any bytes as a result file: an error, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(r) = serde_json::from_str::<LoadReport>(&text) {
                let _ = r.check();
            }
        }

        /// A valid result with one field replaced by junk: an error, never
        /// a panic, and check() holds for what parses.
        #[test]
        fn damaged_results_never_panic(r in report(), cut in 0usize..2000, junk in any::<u8>()) {
            let mut text = serde_json::to_string(&r).unwrap().into_bytes();
            let i = cut % text.len();
            text[i] = junk;
            if let Ok(s) = std::str::from_utf8(&text)
                && let Ok(back) = serde_json::from_str::<LoadReport>(s)
            {
                let _ = back.check();
                let _ = LoadReport::merge(&[back.clone(), back]);
            }
        }
    }
}
