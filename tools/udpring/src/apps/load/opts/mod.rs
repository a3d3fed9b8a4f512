//! What a load run is asked to do: the options of `udpring load`, as they
//! are parsed (each check next to its flag where one flag suffices), then
//! resolved once ([`LoadOpts::resolve`]: the defaults that depend on
//! other flags, the payloads read, the checks across flags), and read as
//! they are by the generator. No field is copied from one struct into
//! another on the way. The parsing as the command does it, the resolving
//! and the checks across flags are in [`resolve`].

mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use udpring::Backend;

use super::expect::Expect;
use super::matcher::{Match, Payloads};
use crate::apps::header::sockperf;
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
    crate::common::resolve_target(s)
}

/// An integer in `lo..=hi` for `flag`; the message names both.
fn in_range(flag: &str, s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("{flag} {s} must be {lo}..{hi}"))
}

/// How a paced run spaces its sends (`--arrivals`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arrivals {
    /// One every 1/rate.
    #[default]
    Even,
    /// Independent exponential gaps of mean 1/rate.
    Poisson,
}

impl Arrivals {
    /// Its name, as the flag takes it and the result says it.
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Even => "even",
            Arrivals::Poisson => "poisson",
        }
    }
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
    /// How a paced run (--rate, --bitrate) spaces its sends. even: one
    /// every 1/rate. poisson: independent exponential gaps of mean 1/rate,
    /// as requests from many independent clients arrive (the bursts and
    /// lulls a service sees at the same mean rate; each worker's every
    /// 1,024 sends take exactly 1,024/rate). Latency counts from each
    /// send's due time either way.
    #[arg(long, value_enum, default_value_t = Arrivals::Even)]
    pub arrivals: Arrivals,
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
    /// Check every answer: it must carry these bytes at byte OFFSET
    /// (OFFSET:HEX; e.g. 8:56414c5545, "VALUE" after memcached's 8-byte UDP
    /// frame header); only a MASK's bits of them (OFFSET:HEX/MASK; e.g.
    /// 3:00/0f, a DNS answer's RCODE is NOERROR); or anywhere in the answer
    /// (any:HEX; e.g. any:4f4b, "OK"). An answer without them still counts
    /// as received, with its RTT, and also as unexpected, with the first
    /// one's bytes shown: a service answering errors fast would read as
    /// fast. Give it again for more checks (all must hold). No answer
    /// passing exits 1.
    #[arg(long, value_name = "OFFSET:HEX[/MASK]|any:HEX", value_parser = Expect::parse)]
    pub expect: Vec<Expect>,
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
    /// Worker threads (each pinned to a CPU, unless --no-pin), 1..256.
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
    /// Seconds to wait for late replies after the last send. Default: 0.5
    /// (none one-way).
    #[arg(long = "drain", value_name = "DRAIN", value_parser = parse_secs_or_zero)]
    pub drain_arg: Option<Duration>,
    /// Seconds before a request counts as unanswered (ping mode, where an
    /// ICMP error about it, such as port unreachable, ends it sooner and
    /// its flow sends again within 20 ms; with ID
    /// matching, before its ID may be reused: a paced run remembers a
    /// timeout's worth of requests, and when the IDs cannot cover that it
    /// writes the oldest off sooner rather than wait, counted as
    /// ids_reused_early). Default: 1.
    #[arg(long = "timeout", value_name = "TIMEOUT", value_parser = parse_secs)]
    pub timeout_arg: Option<Duration>,
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
    /// The interface a multicast target's datagrams leave by (default:
    /// the route's); xdp: the interface to send and receive frames on,
    /// when --bind does not name an address of it.
    #[arg(long, value_name = "NAME", value_parser = crate::common::parse_iface)]
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
    /// the first ones to a server on the same host, which pins from the
    /// first).
    #[arg(long, value_parser = crate::common::parse_cpu)]
    pub cpu: Option<usize>,
    /// Do not pin workers to CPUs (let the scheduler place them).
    #[arg(long, conflicts_with = "cpu")]
    pub no_pin: bool,
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

impl LoadOpts {
    /// Paced at a rate (`--rate`, `--bitrate`): not in bursts, nor on a
    /// capture's own timing. Its sends are spaced by `--arrivals`.
    pub fn paced_at_a_rate(&self) -> bool {
        matches!(self.mode, Mode::Rate(_)) && self.bursts.is_none() && self.replay_speed.is_none()
    }

    /// One-way: nothing is expected back (`--match none`).
    pub fn one_way(&self) -> bool {
        self.matching == Match::None
    }

    /// Before a request counts as unanswered (`--timeout`, 1 s unless
    /// given).
    pub fn timeout(&self) -> Duration {
        self.timeout_arg.unwrap_or(Duration::from_secs(1))
    }

    /// How long to wait for late replies after the last send (`--drain`,
    /// 0.5 s unless given; none one-way, where none come).
    pub fn drain(&self) -> Duration {
        if self.one_way() {
            return Duration::ZERO;
        }
        self.drain_arg.unwrap_or(Duration::from_millis(500))
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
}
