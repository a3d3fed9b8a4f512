//! What a load run is asked to do: the options of `udpring load`, as they
//! are parsed (each check next to its flag where one flag suffices), then
//! resolved once ([`LoadOpts::resolve`]: the defaults that depend on
//! other flags, the payloads read, the checks across flags), and read as
//! they are by the generator. No field is copied from one struct into
//! another on the way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use udpring::Backend;

use super::matcher::{Match, Payloads};
use crate::apps::header::{HEADER_LEN, sockperf};
use crate::apps::load::payload::PayloadArgs;
use crate::common::{
    SocketArgs, parse_addr, parse_backend, parse_bitrate, parse_rate, parse_secs,
    parse_secs_or_zero,
};

/// Flows a run with `--kernel-timestamps` may have: each TX timestamp ID
/// holds the flow in its upper 20 bits (`worker/kstamp.rs`).
pub const KSTAMP_MAX_FLOWS: usize = 1 << 20;

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

/// `--mode`: flood or ping (a rate comes from --rate, --bitrate, --burst).
fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "flood" => Ok(Mode::Flood),
        "ping" => Ok(Mode::Ping),
        _ => Err(format!("'{s}': flood or ping")),
    }
}

/// A target `HOST:PORT`, names resolved.
fn parse_target(s: &str) -> Result<SocketAddr, String> {
    crate::common::resolve(s).map_err(|f| f.msg)
}

/// An integer in `lo..=hi` for `flag`; the message names both.
fn in_range(flag: &str, s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("{flag} {s} must be {lo}..{hi}"))
}

/// What to run: the options of `udpring load` that shape the traffic.
#[derive(Args, Clone, Debug)]
pub struct LoadOpts {
    /// The echo server: HOST:PORT (names are resolved; IPv6 as `[ADDR]:PORT`).
    #[arg(value_name = "TARGET", value_parser = parse_target)]
    pub target: SocketAddr,
    /// flood: as fast as possible; ping: one request in flight per flow.
    /// With --rate the mode is an open loop at that rate.
    #[arg(long, default_value = "flood", value_parser = parse_mode)]
    pub mode: Mode,
    /// Open loop at this many datagrams per second (all workers together):
    /// 20000, 20k, 1.5M.
    #[arg(long, value_parser = parse_rate, conflicts_with_all = ["bitrate", "burst"])]
    pub rate: Option<f64>,
    /// Open loop at this many payload bits per second (like iperf3 -b):
    /// 100M, 1G, 500k. The datagram rate is this over 8 x --size.
    #[arg(long, value_parser = parse_bitrate, conflicts_with = "burst")]
    pub bitrate: Option<f64>,
    /// Open loop in bursts: this many datagrams back to back (all workers
    /// together) every --burst-interval.
    #[arg(long, requires = "burst_interval")]
    pub burst: Option<u64>,
    /// Time between the starts of two bursts, seconds (0.001 = 1 ms).
    #[arg(long, value_parser = parse_secs, requires = "burst")]
    pub burst_interval: Option<Duration>,
    /// How replies are matched to requests. header (the default without a
    /// payload): udpring's own header, echoed back (an echo server);
    /// id:OFFSET:LEN: an ID of LEN bytes (1..8) udpring writes into each
    /// request at OFFSET and the service copies back there (DNS and
    /// memcached's UDP frame: id:0:2; the default with --dns-queries);
    /// flow: one request in flight per flow, any reply answers it; none:
    /// one-way load to a sink (`udpring sink`, or any service that answers
    /// nothing): what was sent and what the kernel refused are counted,
    /// nothing is lost.
    #[arg(long = "match", value_name = "HOW", value_parser = Match::parse)]
    pub match_asked: Option<Match>,
    /// What to send instead of udpring's header.
    #[command(flatten)]
    pub(crate) payload: PayloadArgs,
    /// Interface and marks of every flow.
    #[command(flatten)]
    pub(crate) socket: SocketArgs,
    /// Payload bytes per datagram (32..65507; 46.. with --sockperf). A list
    /// (64,512,1400) runs one measurement per size, one after the other.
    /// [default: 64]
    #[arg(long = "size", short = 's', value_delimiter = ',', num_args = 1..)]
    pub sizes: Vec<usize>,
    /// Flows: sockets with distinct source ports, spread over the workers
    /// (1..1024).
    #[arg(long, default_value_t = 1, value_parser = |s: &str| in_range("--flows", s, 1, 1024))]
    pub flows: usize,
    /// Worker threads (each pinned to a CPU), 1..256.
    #[arg(long, short = 'w', default_value_t = 1, value_parser = |s: &str| in_range("--workers", s, 1, 256))]
    pub workers: usize,
    /// Seconds to send, after the warm-up.
    #[arg(long, short = 't', value_parser = parse_secs, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Datagrams to send, after the warm-up (instead of --duration).
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Seconds of traffic before measuring starts.
    /// [default: 0.2; 0 with --match none, so that what the sink counts
    /// is what was sent]
    #[arg(long, value_parser = parse_secs_or_zero)]
    pub warmup: Option<Duration>,
    /// Datagrams per send as one GSO train (1: no GSO), 1..64. Replies are
    /// received with GRO.
    #[arg(long, default_value_t = 1, value_parser = |s: &str| in_range("--gso", s, 1, 64))]
    pub gso: usize,
    /// Flood: at most this many datagrams in flight per worker (default
    /// 256). A bigger window only queues in the server's socket buffer, and
    /// what overflows it is lost: the run then measures the buffer, not
    /// the server. Raise it for long paths (window >= rate x RTT).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: Option<u64>,
    /// Flood with no window: as fast as this host can send, replies or
    /// not (expect loss at the server's socket; finds the ceiling).
    #[arg(long, conflicts_with = "window")]
    pub unbounded: bool,
    /// Seconds to wait for late replies after the last send.
    #[arg(long, default_value = "0.5", value_parser = parse_secs_or_zero)]
    pub drain: Duration,
    /// Seconds before a request counts as unanswered (ping mode; with ID
    /// matching, before its ID may be reused: a paced run remembers a
    /// timeout's worth of requests, and when the IDs cannot cover that it
    /// writes the oldest off sooner rather than wait, counted as
    /// ids_reused_early).
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Record each request that got no answer at --timeout in the latency
    /// histogram: percentiles then cover every request, not only the
    /// answered ones (loss is still reported apart).
    #[arg(long)]
    pub timeouts_as_latency: bool,
    /// With --mode ping: split each round trip at the kernel's own
    /// timestamps (software TX stamp of the request, RX stamp of the
    /// reply): send_path (app -> kernel TX), wire_and_server (kernel TX ->
    /// kernel RX) and receive_queue (kernel RX -> app), each with its
    /// percentiles. Pair with `udpring echo --kernel-timestamps` for the
    /// server's own split.
    #[arg(long)]
    pub kernel_timestamps: bool,
    /// uring: send datagrams (or GSO trains) of at least BYTES zero-copy
    /// (IORING_OP_SEND_ZC from registered buffers); the JSON's
    /// kernel.zc_sent / zc_copied say what the kernel did (loopback and
    /// local delivery always copy).
    #[arg(long, value_name = "BYTES")]
    pub zerocopy_min: Option<usize>,
    /// Backend: uring, mmsg, simple or xdp (AF_XDP: frames skip the
    /// kernel's UDP stack; root, a real interface, --iface with a wildcard
    /// --bind, one flow per worker, no --gso). Default: mmsg for a flood (sendmmsg
    /// of a batch measured the faster sender here, PERF.md) unless it is
    /// one-way (--match none) with GSO trains of 32 KiB or more (--gso x
    /// --size: there io_uring sent more), uring otherwise (ping, rate,
    /// --zerocopy-min, --kernel-timestamps).
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<Backend>,
    /// xdp: the interface to send and receive frames on, when --bind does
    /// not name an address of it.
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
    /// Local address to send from. Port 0: the kernel picks a port per
    /// flow; port P: flow k sends from port P + k (with --shard I/N,
    /// generator I's flows take the I-th slice of that range).
    #[arg(long, value_parser = parse_addr)]
    pub bind: Option<SocketAddr>,
    /// Prefix sockperf's header so `sockperf server` can be the target.
    #[arg(long)]
    pub sockperf: bool,
    /// Do not connect the flows' sockets to the target: slower sends, but
    /// datagrams from other addresses reach udpring and count as foreign
    /// (connected, the kernel drops them).
    #[arg(long)]
    pub unconnected: bool,
    /// Seconds between live lines (like iperf3's -i; at least 0.1).
    #[arg(long, short = 'i', default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,
    /// Pin workers from this CPU index up (default: the last CPUs, leaving
    /// the first ones to a server on the same host).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Never sleep waiting for replies (spin): lower, steadier latency for
    /// a whole CPU per worker.
    #[arg(long)]
    pub busy_poll: bool,
    /// Multicast target: responders tracked per worker (each costs a
    /// sequence window per flow); replies from more are counted as
    /// untracked_responders.
    /// [default: 64]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_responders: Option<u32>,
    /// TTL / hop limit when the target is a multicast group (each
    /// responder, e.g. `udpring mcast pong`, is then reported on its own).
    /// [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=255))]
    pub ttl: Option<u32>,

    // What `resolve` makes of the flags above.
    /// Payload bytes per datagram of this run (one of `sizes`, or the
    /// payloads' largest).
    #[arg(skip)]
    pub size: usize,
    /// How replies are matched: as asked, or the default for the payload.
    #[arg(skip)]
    pub matching: Match,
    /// The payloads to send (`None`: udpring's header), read once.
    #[arg(skip)]
    pub payloads: Option<Arc<Payloads>>,
    /// Read each reply as DNS: count response codes and truncated answers.
    #[arg(skip)]
    pub dns: bool,
    /// Replay the payloads' capture timing, this many times faster.
    #[arg(skip)]
    pub replay_speed: Option<f64>,
    /// Rate mode in bursts: this many datagrams back to back (all workers
    /// together), every this long; the mode's rate is their quotient.
    #[arg(skip)]
    pub bursts: Option<(u64, Duration)>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d < Duration::from_millis(100) {
        return Err("--interval must be at least 0.1 s".into());
    }
    Ok(d)
}

/// `load TARGET ARGS...` parsed as the command would.
#[derive(clap::Parser)]
struct Parse {
    #[command(flatten)]
    opts: LoadOpts,
}

impl LoadOpts {
    /// The options of `udpring load TARGET ARGS...` (`args` as on the
    /// command line after the target), resolved.
    pub fn parse(target: SocketAddr, args: &[&str]) -> Result<Self, String> {
        let t = target.to_string();
        let all = ["load", t.as_str()].into_iter().chain(args.iter().copied());
        let mut o = <Parse as clap::Parser>::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .opts;
        o.resolve()?;
        Ok(o)
    }

    /// A flood of 64-byte datagrams for 5 seconds, 256 in flight: the
    /// command's defaults, but for the warm-up (none; the command's is
    /// 0.2 s), so that a run built in code counts all it sends.
    pub fn new(target: SocketAddr) -> Self {
        LoadOpts::parse(target, &["--warmup", "0"]).expect("the defaults resolve")
    }

    /// Resolves what depends on several flags, once, before any run: the
    /// mode (a rate from --rate, --bitrate or --burst), the first size,
    /// the duration's and the warm-up's defaults, the payloads (read now),
    /// how replies match, the window, the drain. Then [`Self::validate`].
    pub fn resolve(&mut self) -> Result<(), String> {
        let paced = self.rate.is_some() || self.bitrate.is_some() || self.burst.is_some();
        self.mode = match (paced, self.mode) {
            (true, Mode::Ping) => {
                return Err(
                    "--rate, --bitrate and --burst are an open loop: they do not go \
                            with --mode ping"
                        .into(),
                );
            }
            (true, _) => Mode::Rate(self.rate.unwrap_or(1.0)),
            (false, m) => m,
        };
        if let (Some(n), Some(every)) = (self.burst, self.burst_interval) {
            self.bursts = Some((n, every));
            self.mode = Mode::Rate(n as f64 / every.as_secs_f64());
        }
        if self.sizes.len() > 16 {
            return Err("--size takes at most 16 sizes".into());
        }
        self.size = self.sizes.first().copied().unwrap_or(64);
        if let Some(bits) = self.bitrate {
            self.mode = Mode::Rate(bits / (self.size as f64 * 8.0));
        }
        if self.duration.is_none() && self.count.is_none() {
            self.duration = Some(Duration::from_secs(5));
        }
        let payloads = crate::apps::load::payload::payloads(&self.payload).map_err(|f| f.msg)?;
        self.matching = match (self.match_asked, &payloads) {
            (Some(m), _) => m,
            (None, Some((_, true))) => Match::Id { offset: 0, len: 2 },
            (None, _) => Match::Header,
        };
        if self.warmup.is_none() {
            self.warmup = Some(if self.one_way() {
                Duration::ZERO
            } else {
                Duration::from_millis(200)
            });
        }
        if let Some((p, dns)) = payloads {
            if self.payload.pcap_timing {
                let (times, cycle) = p.times().unwrap_or((&[], 1));
                self.replay_speed = Some(self.payload.speed);
                self.mode =
                    Mode::Rate(times.len() as f64 * self.payload.speed / (cycle as f64 / 1e9));
            }
            if !self.sizes.is_empty() {
                return Err("--size does not go with a payload: the payloads set it".into());
            }
            self.size = p.size_range().1;
            self.dns = dns;
            self.payloads = Some(Arc::new(p));
        }
        // One request in flight per flow: a closed loop.
        if self.matching == Match::Flow && !paced {
            self.mode = Mode::Ping;
        }
        self.window = match (self.mode, self.window, self.unbounded) {
            _ if self.replay_speed.is_some() => None,
            (Mode::Flood, None, false) if self.one_way() => None,
            (Mode::Flood, _, true) => None,
            (Mode::Flood, w, false) => Some(w.unwrap_or(crate::apps::window::DEFAULT_WINDOW)),
            (_, None, false) => None,
            (mode, _, unbounded) => {
                let flag = if unbounded { "--unbounded" } else { "--window" };
                let other = match mode {
                    Mode::Rate(_) => "--rate (or --bitrate, --burst)",
                    _ => "--mode ping",
                };
                return Err(format!(
                    "{flag} cannot be combined with {other}: {flag} shapes a flood; \
                     --mode ping keeps one request in flight per flow and --rate paces \
                     the sends"
                ));
            }
        };
        // One-way: no reply to wait for.
        if self.one_way() {
            self.drain = Duration::ZERO;
        }
        if !self.target.ip().is_multicast() {
            for (flag, given) in [
                ("--ttl", self.ttl.is_some()),
                ("--max-responders", self.max_responders.is_some()),
            ] {
                if given {
                    return Err(format!(
                        "{flag} is for a multicast target; {} is unicast",
                        self.target
                    ));
                }
            }
        }
        if let Some(b) = self.bind
            && b.port() != 0
            && usize::from(b.port()) + self.flows > 65536
        {
            return Err(format!(
                "--bind {b} with --flows {}: flow k sends from port {} + k, past 65535",
                self.flows,
                b.port()
            ));
        }
        self.validate()
    }

    /// This run with payloads of `size` bytes (a size list runs one per
    /// size): a rate from --bitrate follows the size.
    pub fn with_size(&self, size: usize) -> Result<Self, String> {
        let mut x = self.clone();
        if x.payloads.is_none() {
            x.size = size;
        }
        if let Some(bits) = x.bitrate {
            x.mode = Mode::Rate(bits / (size as f64 * 8.0));
        }
        x.validate().map(|()| x)
    }

    /// One-way: nothing is expected back (`--match none`).
    pub fn one_way(&self) -> bool {
        self.matching == Match::None
    }

    /// Sent and answered but not counted (resolved: 0.2 s, 0 one-way).
    pub fn warmup(&self) -> Duration {
        self.warmup.unwrap_or_default()
    }

    /// Connect each flow's socket to the target (as iperf3 does): sends
    /// skip the route lookup, and the kernel itself drops datagrams from
    /// other addresses (counted in the host's UDP NoPorts, not here). Off
    /// (`--unconnected`): every datagram is looked at, and those from
    /// elsewhere count as `foreign`.
    pub fn connect(&self) -> bool {
        !self.unconnected
    }

    /// TTL / hop limit of datagrams sent to a multicast target.
    pub fn multicast_ttl(&self) -> u32 {
        self.ttl.unwrap_or(1)
    }

    /// Multicast target: responders tracked per worker.
    pub fn max_responders(&self) -> usize {
        self.max_responders.unwrap_or(64) as usize
    }

    pub(crate) fn header_offset(&self) -> usize {
        if self.sockperf { sockperf::LEN } else { 0 }
    }

    fn validate_payloads(&self) -> Result<(), String> {
        let Some(p) = &self.payloads else {
            return match self.matching {
                Match::Id { .. } | Match::Flow => Err(format!(
                    "--match {} needs a payload to send (--payload, --payload-file or \
                     --dns-queries): udpring's own header is matched with --match header",
                    self.matching.name()
                )),
                _ => Ok(()),
            };
        };
        if self.matching == Match::Header {
            return Err(
                "a payload of your own is not udpring's header: say how replies \
                        match requests (--match id:OFFSET:LEN, flow or none)"
                    .into(),
            );
        }
        if self.gso > 1 || self.sockperf {
            return Err("--gso and --sockperf send udpring's header, not a payload".into());
        }
        if self.target.ip().is_multicast() && self.matching == Match::Flow {
            return Err(
                "--match flow cannot tell which request a group's replies answer: \
                 --match id:OFFSET:LEN, or `udpring mcast ping --payload` (one request \
                 per round)"
                    .into(),
            );
        }
        if let Match::Id { offset, len } = self.matching {
            let (min, _) = p.size_range();
            if min < offset + len {
                return Err(format!(
                    "--match id:{offset}:{len} needs payloads of at least {} bytes; the \
                     shortest is {min}",
                    offset + len
                ));
            }
        }
        if self.matching == Match::Flow && self.mode != Mode::Ping {
            return Err("--match flow keeps one request in flight per flow: --mode ping".into());
        }
        Ok(())
    }

    /// Checks the options across flags; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.payloads.is_some() {
            return self.validate_common();
        }
        let min = HEADER_LEN + self.header_offset();
        let max = if self.target.is_ipv6() {
            udpring::MAX_UDP6_PAYLOAD
        } else {
            udpring::MAX_UDP_PAYLOAD
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
        self.validate_common()
    }

    fn validate_common(&self) -> Result<(), String> {
        if self.target.port() == 0 {
            return Err("target port 0: give the port the server listens on".into());
        }
        if self.kernel_timestamps {
            if self.mode != Mode::Ping {
                return Err(
                    "--kernel-timestamps splits round trips one at a time: --mode ping".into(),
                );
            }
            if self.target.ip().is_multicast() {
                return Err("--kernel-timestamps needs one server (a unicast target)".into());
            }
            if self.flows > KSTAMP_MAX_FLOWS {
                return Err(format!(
                    "--kernel-timestamps takes at most {} flows",
                    KSTAMP_MAX_FLOWS
                ));
            }
        }
        match (self.mode, self.bursts) {
            (Mode::Rate(_), Some((n, every))) => {
                if !(2..=1_000_000).contains(&n) {
                    return Err(format!("--burst {n} must be 2..1000000 datagrams"));
                }
                if !(Duration::from_micros(10)..=Duration::from_secs(3600)).contains(&every) {
                    return Err(format!("--burst-interval {every:?} must be 10 us..1 hour"));
                }
                if n < self.workers as u64 {
                    return Err(format!(
                        "--burst {n} is fewer datagrams than --workers {}: each worker sends \
                         its share of every burst",
                        self.workers
                    ));
                }
                if n as f64 / every.as_secs_f64() > 100e6 {
                    return Err(format!(
                        "--burst {n} every {every:?} is over 100M datagrams/s"
                    ));
                }
            }
            (_, Some(_)) => return Err("--burst goes with a paced run only".into()),
            (Mode::Rate(_), None) if self.replay_speed.is_some() => {
                let ok = self.payloads.as_ref().is_some_and(|p| p.times().is_some());
                if !ok {
                    return Err("--pcap-timing needs a capture's times (--pcap)".into());
                }
                if self.workers != 1 {
                    return Err("--pcap-timing replays one schedule: --workers 1".into());
                }
                if !self
                    .replay_speed
                    .is_some_and(|s| s.is_finite() && (0.001..=1e6).contains(&s))
                {
                    return Err("--speed must be 0.001..1000000".into());
                }
            }
            (Mode::Rate(r), None) if !(r.is_finite() && (1.0..=100e6).contains(&r)) => {
                return Err(format!("--rate {r} must be 1..100000000 datagrams/s"));
            }
            _ => {}
        }
        // Also checked by the flags' parsers; here for options built in code.
        for (flag, v, max) in [
            ("--flows", self.flows, 1024),
            ("--workers", self.workers, 256),
            ("--gso", self.gso, 64),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("{flag} {v} must be 1..{max}"));
            }
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
        self.validate_payloads()?;
        if self.one_way() && self.mode == Mode::Ping {
            return Err("--match none is one-way: --mode ping waits for replies".into());
        }
        if self.one_way() && self.window.is_some() && self.mode == Mode::Flood {
            return Err("--match none is one-way: no reply comes back to open a --window".into());
        }
        if self.window == Some(0) {
            return Err("--window must be at least 1".into());
        }
        Ok(())
    }
}
