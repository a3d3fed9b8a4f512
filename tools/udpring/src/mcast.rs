//! `udpring mcast listen|send|pong|ping` and `udpring fanout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::apps::mcast::{
    Expect, McastListen, McastPing, McastPong, McastSend, PeerCounts, PeerTable, PingPayload,
    PongCounts,
};
use clap::{Args, Subcommand};
use udpring::{Config, Engine, Interface, Join};

use crate::common::{Failure, GuardArgs, parse_addr, parse_secs, run_until, runtime, usage};

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
    /// GROUP:PORT, e.g. 239.1.2.3:5000 or [ff15::1]:5000 (scope: [ff12::1%eth0]).
    group: String,
    /// Interface name for the join and for sending.
    #[arg(long)]
    iface: Option<String>,
    /// Stop after this many seconds (ping: default, after the last ping and
    /// a drain; send with -c: after the last datagram).
    #[arg(long, value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `mcast listen`.
#[derive(Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Only this source (a source-specific join).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Check sequence numbers (loss, duplicates, reordering) of `mcast send`
    /// traffic.
    #[arg(long)]
    verify: bool,
}

/// `mcast pong`.
#[derive(Args)]
pub(crate) struct PongArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Serve the engine's counters at http://ADDR/metrics in Prometheus'
    /// text format.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
    /// Only this source (a source-specific join).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Answer datagrams sent to the group whose payload starts with these
    /// bytes (hex: `printf 'Client: Ping' | xxd -p`) instead of udpring's
    /// ping: another program's pinger or discovery query. Echoed, unless
    /// --answer.
    #[arg(long, value_name = "HEX")]
    expect: Option<String>,
    /// With --expect: answer with these bytes (hex) instead of an echo.
    #[arg(long, value_name = "HEX", requires = "expect")]
    answer: Option<String>,
    /// With --answer: send it even when it is longer than the datagram it
    /// answers (refused and counted by default: a forged source would be
    /// sent more than it sent).
    #[arg(long, requires = "answer")]
    amplify: bool,
    #[command(flatten)]
    guard: GuardArgs,
}

/// `mcast ping`.
#[derive(Args)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    send: SendArgs,
    /// Send this payload (hex, e.g. `printf 'Client: Ping' | xxd -p`)
    /// instead of udpring's header, to ping programs udpring did not
    /// write. Without the header a reply belongs to the round it arrives
    /// in: one ping per interval (1/--rate), replies within --timeout of
    /// it (later ones are counted late).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["payload_file", "size"])]
    payload: Option<String>,
    /// Send the payloads of FILE in turn, one per ping: hex lines (blank
    /// lines and # comments skipped), or with --payload-format raw, records
    /// of a u16 big-endian length and that many bytes.
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    payload_file: Option<std::path::PathBuf>,
    /// How --payload-file is written.
    #[arg(long, default_value = "hex", value_parser = ["hex", "raw"], requires = "payload_file")]
    payload_format: String,
    /// With --payload or --payload-file: count only replies starting with
    /// these bytes (hex); the rest are counted invalid.
    #[arg(long, value_name = "HEX")]
    expect: Option<String>,
    /// With --payload or --payload-file: how long after a ping its replies
    /// count, in seconds (default and most: the interval, 1/--rate).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
}

/// `mcast send`.
#[derive(Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// TTL / hop limit of what is sent.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: u32,
    /// Do not hear our own multicast on this host.
    #[arg(long)]
    no_loop: bool,
    /// Datagrams per second (0.001..10000000).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Datagrams to send (send default: until stopped; ping default: 10).
    #[arg(long, short = 'c')]
    count: Option<u64>,
    /// Payload size (32..65507; 65527 over IPv6).
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
}

/// Every `mcast` option in one place, each subcommand's own set filled in
/// and the rest at defaults: one set of checks ([`Group::new`]).
struct McastArgs {
    group: String,
    source: Option<std::net::IpAddr>,
    iface: Option<String>,
    ttl: u32,
    no_loop: bool,
    rate: f64,
    count: Option<u64>,
    size: usize,
    verify: bool,
    duration: Option<Duration>,
    json: bool,
    guard: Option<GuardArgs>,
    metrics: Option<SocketAddr>,
}

impl McastArgs {
    fn new(c: CommonArgs) -> Self {
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
            json: c.json,
            guard: None,
            metrics: None,
        }
    }

    fn sending(s: SendArgs) -> Self {
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
    if !a.ip().is_multicast() {
        return Err(usage(format!(
            "{} is not a multicast group (224.0.0.0/4 or ff00::/8)",
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

/// What `mcast` and `fanout` share about one group: where, on which
/// interface, and the checks on the options.
struct Group {
    addr: SocketAddr,
    iface: Interface,
}

impl Group {
    fn new(a: &McastArgs) -> Result<Group, Failure> {
        let addr = parse_group(&a.group)?;
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
                "--rate {} must be 0.001..10000000 datagrams per second",
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
        Ok(Group { addr, iface })
    }

    /// One worker on the group's port (a receiver, joined) or on port 0 (a
    /// sender).
    fn config(&self, a: &McastArgs, receiver: bool) -> Config {
        let port = if receiver { self.addr.port() } else { 0 };
        let mut cfg = Config::new(crate::apps::unspecified_like(self.addr, port));
        cfg.workers = 1;
        cfg.reuse_addr = receiver;
        // Listeners answer nothing and pingers talk to responders on any
        // port; pong sets the server's guard.
        cfg.guard = udpring::Guard::client();
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

pub(crate) fn mcast(c: McastCmd) -> Result<(), Failure> {
    match c {
        McastCmd::Listen(l) => listen(&McastArgs {
            source: l.source,
            verify: l.verify,
            ..McastArgs::new(l.common)
        }),
        McastCmd::Send(s) => send(&McastArgs::sending(s)),
        McastCmd::Pong(p) => {
            let expect = pong_expect(&p)?;
            pong(
                &McastArgs {
                    source: p.source,
                    guard: Some(p.guard),
                    metrics: p.metrics,
                    ..McastArgs::new(p.common)
                },
                expect,
            )
        }
        McastCmd::Ping(p) => {
            let a = McastArgs::sending(p.send);
            // The rate and the group first: the round rules divide by it.
            Group::new(&a)?;
            let payload = ping_payload(
                &a,
                p.payload.as_deref(),
                p.payload_file
                    .as_deref()
                    .map(|f| (f, p.payload_format == "raw")),
                p.expect.as_deref(),
                p.timeout,
            )?;
            ping(&a, payload)
        }
    }
}

fn listen(a: &McastArgs) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let table: PeerTable = Arc::default();
    let (t2, verify) = (table.clone(), a.verify);
    let engine = start(&g, "listen", g.config(a, true), move |_| {
        McastListen::new(verify, t2.clone())
    })?;
    finish(a, &g, "listen", engine, a.duration, &table, no_extra)
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
fn pong_expect(p: &PongArgs) -> Result<Option<Expect>, Failure> {
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
fn ping_payload(
    a: &McastArgs,
    payload: Option<&str>,
    file: Option<(&std::path::Path, bool)>,
    expect: Option<&str>,
    timeout: Option<Duration>,
) -> Result<PingPayload, Failure> {
    let payloads = match (payload, file) {
        (Some(h), _) => vec![hex_flag("payload", h)?],
        (None, Some((f, raw))) => {
            use crate::apps::load::payload::{MAX_FILE_BYTES, payload_file, read_bounded};
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

fn pong(a: &McastArgs, expect: Option<Expect>) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let counts = Arc::new(PongCounts::default());
    let (c2, group) = (counts.clone(), g.addr.ip());
    let mut cfg = g.config(a, true);
    if let Some(g) = &a.guard {
        cfg.guard = g.guard();
    }
    let what = if expect.is_some() {
        "not the expected bytes"
    } else {
        "not a ping"
    };
    let engine = start(&g, "pong", cfg, move |_| {
        McastPong::new(group, expect.clone(), c2.clone())
    })?;
    crate::metrics::start_metrics(a.metrics, &engine)?;
    use std::sync::atomic::Ordering::Relaxed;
    let c2 = counts.clone();
    let r = finish(
        a,
        &g,
        "pong",
        engine,
        a.duration,
        &PeerTable::default(),
        |s| {
            // What was not answered: refused by the engine's guard (by reason,
            // named as in `echo`), or by the pong itself.
            let guard: serde_json::Map<String, serde_json::Value> = s
                .counters()
                .filter(|(n, _)| n.starts_with("guard_"))
                .map(|(n, v)| (n.to_string(), v.into()))
                .collect();
            serde_json::json!({
                "guard": guard,
                "not_answered": {
                    "not_to_group": c2.not_to_group.load(Relaxed),
                    "not_a_ping": c2.not_a_ping.load(Relaxed),
                    "would_amplify": c2.would_amplify.load(Relaxed),
                },
            })
        },
    );
    note!(
        "udpring mcast pong: {} datagrams not answered: {} not sent to the group, {} {what}, \
         {} whose answer would be longer (--amplify)",
        counts.ignored(),
        counts.not_to_group.load(Relaxed),
        counts.not_a_ping.load(Relaxed),
        counts.would_amplify.load(Relaxed)
    );
    r
}

fn send(a: &McastArgs) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let (to, rate, size, count) = (g.addr, a.rate, a.size, a.count);
    let engine = start(&g, "send", g.config(a, false), move |_| {
        McastSend::new(to, rate, size, count)
    })?;
    // A counted send ends by itself after its last datagram.
    let natural =
        count.map(|c| Duration::from_secs_f64(c as f64 / rate) + Duration::from_millis(100));
    finish(
        a,
        &g,
        "send",
        engine,
        a.duration.or(natural),
        &PeerTable::default(),
        no_extra,
    )
}

fn ping(a: &McastArgs, payload: PingPayload) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let table: PeerTable = Arc::default();
    let (t2, to, rate) = (table.clone(), g.addr, a.rate);
    let count = a.count.unwrap_or(10);
    let engine = start(&g, "ping", g.config(a, false), move |_| {
        McastPing::new(to, rate, payload.clone(), count, t2.clone())
    })?;
    // Ends after the last ping and a drain for its replies.
    let natural = Duration::from_secs_f64(count as f64 / rate) + Duration::from_millis(500);
    finish(
        a,
        &g,
        "ping",
        engine,
        Some(a.duration.unwrap_or(natural)),
        &table,
        no_extra,
    )
}

fn start<H: udpring::Handler>(
    g: &Group,
    kind: &str,
    cfg: Config,
    factory: impl Fn(usize) -> H + Send + Sync + 'static,
) -> Result<Engine, Failure> {
    udpring::signals::install().map_err(runtime)?;
    let engine = Engine::start(cfg, factory).map_err(runtime)?;
    note!(
        "udpring mcast {kind}: {} (local {}, backend {})",
        g.addr,
        engine.local_addr(),
        engine.backend()
    );
    Ok(engine)
}

/// Nothing beyond the per-peer table.
fn no_extra(_: &udpring::Stats) -> serde_json::Value {
    serde_json::Value::Null
}

/// Runs until `end` (or a signal), stops, and prints the per-peer table
/// (and in JSON, what `extra` adds from the engine's counters).
fn finish(
    a: &McastArgs,
    g: &Group,
    kind: &str,
    engine: Engine,
    end: Option<Duration>,
    table: &PeerTable,
    extra: impl FnOnce(&udpring::Stats) -> serde_json::Value,
) -> Result<(), Failure> {
    let secs = run_until(end, None, |_, _| {});
    let (stats, failure) = crate::common::stop(engine);
    let extra = extra(&stats);
    let report = table.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let peers: Vec<(SocketAddr, PeerCounts)> = report.peers;
    // A ping no responder answered failed its purpose: exit 1 (after the
    // report), as `ping` and `load` do.
    let failure = failure.map(Err).or_else(|| {
        (kind == "ping" && stats.sent > 0 && peers.iter().all(|(_, c)| c.received == 0)).then(
            || {
                Err(Failure {
                    code: 1,
                    msg: format!(
                        "no responder answered {} pings to {} (is `udpring mcast pong` \
                     joined there, and the TTL enough?)",
                        stats.sent, g.addr
                    ),
                })
            },
        )
    });
    if a.json {
        // Per peer: its address and its counts, side by side (the shape of
        // `load`'s responders). Responders answer a ping; sources are heard.
        let list: Vec<serde_json::Value> = peers
            .iter()
            .map(|(p, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("addr".into(), p.to_string().into());
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({"group": g.addr.to_string(), "sent": stats.sent});
        if kind != "send" {
            // A sender hears nothing: no receive counts, no peers.
            v["received"] = stats.received.into();
            v["untracked"] = report.untracked.into();
            v["invalid"] = report.invalid.into();
        }
        if kind == "ping" {
            v["late"] = report.late.into();
        }
        if let (Some(m), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            m.extend(x);
        }
        match kind {
            "ping" => v["responders"] = list.into(),
            "send" => {}
            _ => v["sources"] = list.into(),
        }
        crate::common::say_json(&format!("mcast {kind}"), Some(secs), v);
        return failure.unwrap_or(Ok(()));
    }
    let late = if kind == "ping" {
        format!("  late {}", report.late)
    } else {
        String::new()
    };
    say!(
        "{kind} {}: sent {} received {}  not ours {}{late}  from sources beyond the {} tracked {}",
        g.addr,
        stats.sent,
        stats.received,
        report.invalid,
        crate::apps::mcast::MAX_PEERS,
        report.untracked
    );
    for (p, c) in peers {
        let rtt = c.rtt_us.as_ref().map_or(String::new(), |r| {
            format!(
                "  rtt p50 {:.1} p99 {:.1} max {:.1} us",
                r.p50, r.p99, r.max
            )
        });
        say!(
            "  {p}: received {} lost {} duplicated {} reordered {}{rtt}",
            c.received,
            c.lost,
            c.duplicated,
            c.reordered
        );
    }
    failure.unwrap_or(Ok(()))
}
