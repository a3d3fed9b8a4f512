//! What `udpring mcast` takes: the subcommands' options as clap reads
//! them, gathered into one set ([`McastArgs`]) with one set of checks
//! ([`Group::new`]), and the flags turned into what the handlers take
//! (`pong --expect/--answer`, `ping --payload/--payload-file`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use udpring::{Config, Interface, Join};

use crate::apps::mcast::Expect;
use crate::apps::mcast::ping::PingPayload;
use crate::common::{Failure, GuardArgs, parse_addr, parse_secs, usage};
use crate::serve::OutputArgs;

#[derive(Subcommand)]
pub(crate) enum McastCmd {
    /// Join GROUP:PORT and count what arrives per source; --verify checks
    /// sequences (loss, duplicates, reordering) of `mcast send` traffic.
    Listen(ListenArgs),
    /// Send sequenced datagrams to GROUP:PORT at a rate.
    Send(SendArgs),
    /// Join GROUP:PORT and answer every ping sent to the group by unicast
    /// to its sender: udpring's ping, or with --expect another program's
    /// (echoed, or answered with --answer).
    Pong(PongArgs),
    /// Ping GROUP:PORT and report every responder: replies, loss, RTT. With
    /// --payload, any program's: one datagram to the group, every answer.
    Ping(PingArgs),
}

/// What every `mcast` subcommand takes.
#[derive(Args)]
pub(crate) struct CommonArgs {
    /// GROUP:PORT, e.g. 239.1.2.3:5000 or [ff15::1]:5000 (scope:
    /// [ff12::1%eth0]); or an IPv4 broadcast address of this host,
    /// 255.255.255.255:5000 or a subnet's (192.168.1.255:5000): no join,
    /// SO_BROADCAST to send.
    pub(super) group: String,
    /// Interface name for the join and for sending (a broadcast: the one
    /// interface to send and hear on, by SO_BINDTODEVICE).
    #[arg(long, value_parser = crate::common::parse_iface)]
    pub(super) iface: Option<String>,
    /// Stop after this many seconds (ping: default, after the last ping and
    /// a drain; send with -c: after the last datagram).
    #[arg(long, value_parser = parse_secs, allow_negative_numbers = true)]
    pub(super) duration: Option<Duration>,
    #[command(flatten)]
    pub(super) out: OutputArgs,
}

/// `mcast listen`.
#[derive(Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// Only this source (a source-specific join).
    #[arg(long)]
    pub(super) source: Option<std::net::IpAddr>,
    /// Check sequence numbers (loss, duplicates, reordering) of `mcast send`
    /// traffic.
    #[arg(long)]
    pub(super) verify: bool,
}

/// `mcast pong`.
#[derive(Args)]
pub(crate) struct PongArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// Serve the engine's counters at http://ADDR/metrics in Prometheus'
    /// text format.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub(super) metrics: Option<SocketAddr>,
    /// Only this source (a source-specific join).
    #[arg(long)]
    pub(super) source: Option<std::net::IpAddr>,
    /// Answer datagrams sent to the group whose payload starts with these
    /// bytes (hex: `printf 'Client: Ping' | xxd -p`) instead of udpring's
    /// ping: another program's pinger or discovery query. Echoed, unless
    /// --answer.
    #[arg(long, value_name = "HEX")]
    pub(super) expect: Option<String>,
    /// With --expect: answer with these bytes (hex) instead of an echo.
    #[arg(long, value_name = "HEX", requires = "expect")]
    pub(super) answer: Option<String>,
    /// With --answer: send it even when it is longer than the datagram it
    /// answers (refused and counted by default: a forged source would be
    /// sent more than it sent).
    #[arg(long, requires = "answer")]
    pub(super) amplify: bool,
    #[command(flatten)]
    pub(super) guard: GuardArgs,
}

/// `mcast ping`.
#[derive(Args)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    pub(super) send: SendArgs,
    /// Send this payload (hex, e.g. `printf 'Client: Ping' | xxd -p`)
    /// instead of udpring's header, to ping programs udpring did not
    /// write. Without the header a reply belongs to the round it arrives
    /// in: one ping per interval (1/--rate), replies within --timeout of
    /// it (later ones are counted late).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["payload_file", "size"])]
    pub(super) payload: Option<String>,
    /// Send the payloads of FILE in turn, one per ping: hex lines (blank
    /// lines and # comments skipped), or with --payload-format raw, records
    /// of a u16 big-endian length and that many bytes. `-`: standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    pub(super) payload_file: Option<std::path::PathBuf>,
    /// How --payload-file is written.
    #[arg(long, default_value = "hex", value_parser = ["hex", "raw"], requires = "payload_file")]
    pub(super) payload_format: String,
    /// With --payload or --payload-file: count only replies starting with
    /// these bytes (hex); the rest are counted invalid.
    #[arg(long, value_name = "HEX")]
    pub(super) expect: Option<String>,
    /// With --payload or --payload-file: how long after a ping its replies
    /// count, in seconds (default and most: the interval, 1/--rate).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(super) timeout: Option<Duration>,
}

/// `mcast send`.
#[derive(Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// TTL / hop limit of what is sent to a group (a broadcast stays on
    /// its link).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    pub(super) ttl: u32,
    /// Do not hear our own multicast on this host (multicast only).
    #[arg(long)]
    pub(super) no_loop: bool,
    /// Datagrams per second (0.001..10M; as `load --rate`: 20k, 1.5M).
    #[arg(long, default_value = "10", value_parser = parse_group_rate)]
    pub(super) rate: f64,
    /// Datagrams to send (send default: until stopped; ping default: 10).
    #[arg(long, short = 'c')]
    pub(super) count: Option<u64>,
    /// Payload size (32..65507; 65527 over IPv6).
    #[arg(long, short = 's', default_value_t = 64)]
    pub(super) size: usize,
}

/// Every `mcast` option in one place, each subcommand's own set filled in
/// and the rest at defaults: one set of checks ([`Group::new`]).
pub(super) struct McastArgs {
    pub(super) group: String,
    pub(super) source: Option<std::net::IpAddr>,
    pub(super) iface: Option<String>,
    pub(super) ttl: u32,
    pub(super) no_loop: bool,
    pub(super) rate: f64,
    pub(super) count: Option<u64>,
    pub(super) size: usize,
    pub(super) verify: bool,
    pub(super) duration: Option<Duration>,
    pub(super) out: OutputArgs,
    pub(super) guard: Option<GuardArgs>,
    pub(super) metrics: Option<SocketAddr>,
}

impl McastArgs {
    pub(super) fn new(c: CommonArgs) -> Self {
        McastArgs {
            group: c.group,
            source: None,
            iface: c.iface,
            ttl: 1,
            no_loop: false,
            rate: 10.0,
            count: None,
            size: 64,
            verify: false,
            duration: c.duration,
            out: c.out,
            guard: None,
            metrics: None,
        }
    }

    pub(super) fn sending(s: SendArgs) -> Self {
        McastArgs {
            ttl: s.ttl,
            no_loop: s.no_loop,
            rate: s.rate,
            count: s.count,
            size: s.size,
            ..McastArgs::new(s.common)
        }
    }
}

/// Parses GROUP:PORT (an optional %IFACE scope on IPv6 names the interface).
fn parse_group(s: &str) -> Result<SocketAddr, Failure> {
    let (text, scope) = match (s.find('%'), s.rfind(']')) {
        (Some(p), Some(q)) if p < q => (format!("{}{}", &s[..p], &s[q..]), Some(&s[p + 1..q])),
        _ => (s.to_string(), None),
    };
    let mut a: SocketAddr = text.parse().map_err(|_| {
        usage(format!(
            "'{s}' is not GROUP:PORT (e.g. 239.1.2.3:5000 or [ff15::1]:5000)"
        ))
    })?;
    if !a.ip().is_multicast() && !udpring::os::is_broadcast(a.ip()) {
        return Err(usage(format!(
            "{} is not a multicast group (224.0.0.0/4 or ff00::/8) nor a broadcast address of \
             this host (255.255.255.255, or an IPv4 subnet's, e.g. 192.168.1.255 for \
             192.168.1.0/24)",
            a.ip()
        )));
    }
    if a.port() == 0 {
        return Err(usage(format!("{s}: give a port")));
    }
    if let (Some(sc), SocketAddr::V6(v6)) = (scope, &mut a) {
        let idx = match sc.parse::<u32>() {
            Ok(i) => i,
            Err(_) => udpring::interface_index(sc).map_err(|e| usage(e.to_string()))?,
        };
        v6.set_scope_id(idx);
    }
    Ok(a)
}

/// Most datagrams `send` and `ping` take a count of.
const MAX_COUNT: u64 = 1_000_000_000_000;
/// Longest a counted `send` or `ping` may run, seconds (a year).
const MAX_SECS: f64 = 365.0 * 86400.0;

/// What every `mcast` subcommand knows about its group: where, on which
/// interface, and the checks on the options.
pub(super) struct Group {
    pub(super) addr: SocketAddr,
    pub(super) iface: Interface,
    /// An IPv4 broadcast address, not a group: no join, `SO_BROADCAST`
    /// to send, datagrams to it handed over, `--iface` by `SO_BINDTODEVICE`.
    pub(super) broadcast: bool,
}

impl Group {
    pub(super) fn new(a: &McastArgs) -> Result<Group, Failure> {
        let addr = parse_group(&a.group)?;
        let broadcast = !addr.ip().is_multicast();
        if broadcast && a.source.is_some() {
            return Err(usage(format!(
                "--source picks a multicast group's sender; {} is a broadcast address",
                addr.ip()
            )));
        }
        let max = if addr.is_ipv6() {
            udpring::MAX_UDP6_PAYLOAD
        } else {
            udpring::MAX_UDP_PAYLOAD
        };
        if !(crate::apps::header::HEADER_LEN..=max).contains(&a.size) {
            return Err(usage(format!("--size {} must be 32..{max}", a.size)));
        }
        if !(a.rate.is_finite() && (0.001..=10e6).contains(&a.rate)) {
            return Err(usage(format!(
                "--rate {} must be 0.001..10M datagrams per second",
                a.rate
            )));
        }
        if let Some(c) = a.count
            && !(1..=MAX_COUNT).contains(&c)
        {
            return Err(usage(format!("--count {c} must be 1..{MAX_COUNT}")));
        }
        if let Some(c) = a.count
            && c as f64 / a.rate > MAX_SECS
        {
            return Err(usage(format!(
                "--count {c} at --rate {} would take more than a year",
                a.rate
            )));
        }
        if let Some(s) = a.source
            && (s.is_ipv6() != addr.is_ipv6() || s.is_multicast())
        {
            return Err(usage(format!(
                "--source {s} does not go with group {}",
                addr.ip()
            )));
        }
        let iface = match (&a.iface, addr) {
            (Some(n), _) => {
                udpring::interface_index(n).map_err(|e| usage(e.to_string()))?;
                Interface::Name(n.clone())
            }
            (None, SocketAddr::V6(v6)) if v6.scope_id() != 0 => Interface::Index(v6.scope_id()),
            _ => Interface::Any,
        };
        Ok(Group {
            addr,
            iface,
            broadcast,
        })
    }

    /// One worker on the group's port (a receiver, joined) or on port 0 (a
    /// sender).
    pub(super) fn config(&self, a: &McastArgs, receiver: bool) -> Config {
        let port = if receiver { self.addr.port() } else { 0 };
        let mut cfg = Config::new(crate::apps::unspecified_like(self.addr, port));
        cfg.workers = 1;
        cfg.reuse_addr = receiver;
        // Listeners answer nothing and pingers talk to responders on any
        // port; pong sets the server's guard.
        cfg.guard = udpring::Guard::client();
        if self.broadcast {
            // A broadcast: no group to join; the interface by binding to
            // it (which also picks where a subnet's broadcast leaves).
            cfg.broadcast = true;
            cfg.guard.broadcast_destinations = true;
            if let Interface::Name(n) = &self.iface {
                cfg.bind_device = Some(n.clone());
            }
            return cfg;
        }
        cfg.multicast.ttl = Some(a.ttl);
        cfg.multicast.loopback = Some(!a.no_loop);
        if self.iface != Interface::Any {
            cfg.multicast.interface = Some(self.iface.clone());
        }
        if receiver {
            cfg.multicast.joins.push(Join {
                group: self.addr.ip(),
                source: a.source,
                interface: self.iface.clone(),
            });
        }
        cfg
    }
}

/// `--name HEX` as bytes, or a usage error naming the flag.
fn hex_flag(name: &str, h: &str) -> Result<Vec<u8>, Failure> {
    let b = crate::apps::load::payload::hex(h).map_err(|e| usage(format!("--{name}: {e}")))?;
    if b.is_empty() || b.len() > udpring::MAX_UDP_PAYLOAD {
        return Err(usage(format!(
            "--{name}: {} bytes; 1..{} fit a datagram",
            b.len(),
            udpring::MAX_UDP_PAYLOAD
        )));
    }
    Ok(b)
}

/// What `pong --expect/--answer` ask for.
pub(super) fn pong_expect(p: &PongArgs) -> Result<Option<Expect>, Failure> {
    let Some(e) = &p.expect else {
        return Ok(None);
    };
    Ok(Some(Expect {
        prefix: hex_flag("expect", e)?,
        answer: p
            .answer
            .as_deref()
            .map(|a| hex_flag("answer", a))
            .transpose()?,
        amplify: p.amplify,
    }))
}

/// What `ping` sends: the header, or the user's payloads with the round
/// rules.
pub(super) fn ping_payload(
    a: &McastArgs,
    payload: Option<&str>,
    file: Option<(&std::path::Path, bool)>,
    expect: Option<&str>,
    timeout: Option<Duration>,
) -> Result<PingPayload, Failure> {
    let payloads = match (payload, file) {
        (Some(h), _) => vec![hex_flag("payload", h)?],
        (None, Some((f, raw))) => {
            use crate::apps::load::payload::{MAX_FILE_BYTES, payload_file};
            use crate::input::read_bounded;
            let buf = read_bounded(f, MAX_FILE_BYTES)?;
            let list =
                payload_file(&buf, raw).map_err(|e| usage(format!("{}: {e}", f.display())))?;
            if list.is_empty() {
                return Err(usage(format!("{}: no payload in the file", f.display())));
            }
            if let Some((i, p)) = list
                .iter()
                .enumerate()
                .find(|(_, p)| p.is_empty() || p.len() > udpring::MAX_UDP_PAYLOAD)
            {
                return Err(usage(format!(
                    "{}: payload {} is {} bytes: 1..{} fit a datagram",
                    f.display(),
                    i + 1,
                    p.len(),
                    udpring::MAX_UDP_PAYLOAD
                )));
            }
            list
        }
        (None, None) => {
            if expect.is_some() || timeout.is_some() {
                return Err(usage(
                    "--expect and --timeout go with --payload or --payload-file \
                     (udpring's header matches replies by itself)",
                ));
            }
            return Ok(PingPayload::Header { size: a.size });
        }
    };
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let timeout = timeout.unwrap_or(interval);
    if timeout.is_zero() || timeout > interval {
        return Err(usage(format!(
            "--timeout {:.3} s: a reply belongs to the round it arrives in, so it must be \
             above 0 and at most the interval between pings ({:.3} s at --rate {}); \
             lower --rate for slower responders",
            timeout.as_secs_f64(),
            interval.as_secs_f64(),
            a.rate
        )));
    }
    Ok(PingPayload::Given {
        payloads,
        expect: expect.map(|e| hex_flag("expect", e)).transpose()?,
        timeout,
    })
}

/// `--rate` of the group commands: a number with `load`'s SI suffixes
/// (`20k`, `1.5M`); fractions below one per second too (the range is
/// checked with the other options).
fn parse_group_rate(s: &str) -> Result<f64, String> {
    crate::parse::parse_si(s)
        .ok_or_else(|| format!("'{s}' is not a rate in datagrams per second (e.g. 10, 0.5, 20k)"))
}
