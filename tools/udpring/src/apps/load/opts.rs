//! What a load run is asked to do, and the checks on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::matcher::{Match, Payloads};

use crate::apps::header::{HEADER_LEN, sockperf};
use udpring::Backend;

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
    /// Flood only: most datagrams in flight per worker (default
    /// [`DEFAULT_WINDOW`](crate::apps::window::DEFAULT_WINDOW)); `None`:
    /// unbounded, as fast as the engine can send.
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
    /// Multicast target: responders tracked per worker (each costs a
    /// sequence window per flow); replies from more are counted, not kept.
    pub max_responders: usize,
    /// How often the live line reports (at least every 100 ms).
    pub progress_every: Duration,
    /// Index (among the CPUs this process may use) of the first CPU to pin
    /// workers to; `None`: the last ones, so that a server started with its
    /// defaults on the same host (from the first CPU up) keeps its own.
    pub first_cpu: Option<usize>,
    /// Rate mode in bursts: this many datagrams back to back (all workers
    /// together), every this long, instead of evenly spaced. The mode's
    /// rate must then be their quotient.
    pub burst: Option<(u64, Duration)>,
    /// How replies are matched to requests: udpring's header (an echo
    /// server), an ID in the payload, the flow, or not at all (one-way to
    /// a sink: nothing is lost; a flood then has no window).
    pub matching: Match,
    /// What to send instead of udpring's header (with `Match::Id`,
    /// `Match::Flow` or `Match::None`): cycled per flow.
    pub payloads: Option<Arc<Payloads>>,
    /// Read each reply as DNS: count response codes and truncated answers.
    pub dns: bool,
    /// Replay the payloads' capture timing, this many times faster (paced
    /// mode; the payloads must carry times).
    pub replay_speed: Option<f64>,
    /// `SO_BINDTODEVICE` for every flow.
    pub bind_device: Option<String>,
    /// `SO_MARK` for every flow.
    pub mark: Option<u32>,
    /// TOS byte / traffic class (DSCP and ECN) of every datagram sent.
    pub tos: Option<u8>,
    /// `IPV6_V6ONLY` for IPv6 flows (`None`: the system's default).
    pub only_v6: Option<bool>,
    /// Record a request that got no answer at the timeout (`ping_timeout`)
    /// in the latency histogram, so percentiles include them.
    pub timeouts_as_latency: bool,
    /// Ping mode: split each round trip at the kernel's TX stamp of the
    /// request and RX stamp of the reply (`send_path`, `wire_and_server`,
    /// `receive_queue`).
    pub kernel_timestamps: bool,
    /// `uring`: sends of at least this many bytes go zero-copy
    /// (`IORING_OP_SEND_ZC`, see `Config::send_zero_copy_min`).
    pub zero_copy_min: Option<usize>,
}

impl LoadOpts {
    /// A flood of 64-byte datagrams for 5 seconds, 256 in flight.
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
            window: Some(crate::apps::window::DEFAULT_WINDOW),
            backend: None,
            progress_every: Duration::from_secs(1),
            bind: None,
            sockperf: false,
            drain: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(1),
            connect: true,
            multicast_ttl: 1,
            busy_poll: false,
            max_responders: 64,
            first_cpu: None,
            burst: None,
            matching: Match::Header,
            payloads: None,
            dns: false,
            replay_speed: None,
            bind_device: None,
            mark: None,
            tos: None,
            only_v6: None,
            timeouts_as_latency: false,
            kernel_timestamps: false,
            zero_copy_min: None,
        }
    }

    /// One-way: nothing is expected back (`--match none`).
    pub fn one_way(&self) -> bool {
        self.matching == Match::None
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
        if self.target.ip().is_multicast() {
            return Err("payloads go to one service: a multicast target takes the header".into());
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

    /// Checks the options; the message says what is wrong.
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
            if self.flows > super::worker::KSTAMP_MAX_FLOWS {
                return Err(format!(
                    "--kernel-timestamps takes at most {} flows",
                    super::worker::KSTAMP_MAX_FLOWS
                ));
            }
        }
        match (self.mode, self.burst) {
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
        if !(1..=1024).contains(&self.flows) {
            return Err(format!("--flows {} must be 1..1024", self.flows));
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
