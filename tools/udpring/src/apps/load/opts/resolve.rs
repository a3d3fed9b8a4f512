//! A load run's options resolved and checked: [`LoadOpts::parse`] as the
//! command parses them, [`LoadOpts::resolve`] (the defaults that depend on
//! other flags, the payloads read) and [`LoadOpts::validate`] (the checks
//! across flags, again for each size of a size list).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Arrivals, KSTAMP_MAX_FLOWS, LoadOpts, Mode};
use crate::apps::header::HEADER_LEN;
use crate::apps::load::matcher::Match;

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
        if !self.target.ip().is_multicast() {
            // The interface a group's traffic leaves by, or the xdp
            // backend's: a unicast target over sockets follows its route.
            let iface_unused = self.backend != Some(udpring::Backend::Xdp) && self.iface.is_some();
            for (flag, given) in [
                ("--ttl", self.ttl.is_some()),
                ("--max-responders", self.max_responders.is_some()),
                ("--iface (without --backend xdp)", iface_unused),
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
        if self.arrivals == Arrivals::Poisson && !self.paced_at_a_rate() {
            return Err(
                "--arrivals poisson spaces a paced run's sends: give --rate or \
                        --bitrate (not --burst or --pcap-timing)"
                    .into(),
            );
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
            return Err(if self.matching == Match::Flow {
                // The mode was not asked for: --match flow made it ping.
                "--gso needs flood or rate mode, and --match flow keeps one request in flight \
                 per flow (ping) unless --rate paces it"
                    .into()
            } else {
                "--gso needs flood or rate mode (ping has one datagram in flight)".into()
            });
        }
        match (self.duration, self.count) {
            (None, None) => return Err("give --duration or --count".into()),
            (_, Some(0)) => return Err("--count must be at least 1".into()),
            (Some(d), _) if d.is_zero() => return Err("--duration must be > 0".into()),
            _ => {}
        }
        self.validate_payloads()?;
        if self.one_way()
            && (self.timeout_arg.is_some()
                || self.timeouts_as_latency
                || self.drain_arg.is_some_and(|d| !d.is_zero()))
        {
            return Err(
                "--match none is one-way: no request waits for a reply, so --timeout, \
                 --timeouts-as-latency and --drain mean nothing"
                    .into(),
            );
        }
        if self.one_way() && !self.expect.is_empty() {
            return Err(
                "--match none is one-way: no answer comes back for --expect to check".into(),
            );
        }
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
