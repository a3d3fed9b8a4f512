//! `udpring fanout`: relay every datagram to several destinations.

use std::net::{IpAddr, SocketAddr};

use crate::apps::fanout::{ControlCounts, Fanout, Kind, Relay, RelayOpts, State, Table};
use clap::Args;
use udpring::{Engine, Interface, Join, Stats};

use crate::common::{EngineArgs, Failure, GuardArgs, config_error, parse_addr, runtime, usage};
use crate::serve::{ServeArgs, run_until};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring fanout --listen 0.0.0.0:5000 --to 10.0.0.2:5000,10.0.0.3:5000\n  \
    udpring fanout --listen 0.0.0.0:5000 --join 239.1.1.1 --to 10.0.0.9:6000   # group -> host\n  \
    udpring fanout --listen 0.0.0.0:5000 --join 232.1.1.1@10.0.0.1 --to 239.2.2.2:5000 --ttl 4\n  \
    udpring fanout --listen 0.0.0.0:5000 --control 0.0.0.0:5001   # live subscribers\n\n\
Subscribing (--control): send, from the address that should receive,\n  \
    'SUB' padded with spaces to 32 bytes   -> answer 'TOKEN <16 hex>'\n  \
    'SUB <token>'                          -> 'OK <expiry s>' (or 'FULL'); again to refresh\n  \
    'UNSUB <token>'                        -> 'BYE' (the token is revoked)\n\
A subscriber that does not refresh within --expiry is dropped. The token\n\
proves the subscriber receives at its address (sources can be forged).\n\n\
Loops: everything the relay sends carries the server mark (TTL 200), and it\n\
relays nothing that carries it, so two relays sent to each other, or an\n\
echo among the destinations, stop after one copy (counted: guard_marked).\n\
A relay below another relay takes --accept-marked.")]
pub(crate) struct FanoutArgs {
    /// Address to receive on.
    #[arg(long, value_parser = parse_addr)]
    listen: SocketAddr,
    #[command(flatten)]
    relay: RelayOpts,
    /// Address where peers subscribe and unsubscribe (protocol below).
    #[arg(long, value_parser = parse_addr)]
    control: Option<SocketAddr>,
    /// Join GROUP (or GROUP@SOURCE, source-specific) before receiving;
    /// comma-separated or repeated.
    #[arg(long, value_parser = parse_join, value_delimiter = ',')]
    join: Vec<(IpAddr, Option<IpAddr>)>,
    /// TTL / hop limit of multicast sent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: Option<u32>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_join(s: &str) -> Result<(IpAddr, Option<IpAddr>), String> {
    let (g, src) = match s.split_once('@') {
        Some((g, src)) => (g, Some(src)),
        None => (s, None),
    };
    let g: IpAddr = g
        .parse()
        .map_err(|_| format!("'{g}' is not a group address"))?;
    if !g.is_multicast() {
        return Err(format!(
            "{g} is not a multicast group (224.0.0.0/4 or ff00::/8)"
        ));
    }
    let src = match src {
        Some(x) => {
            let a: IpAddr = x
                .parse()
                .map_err(|_| format!("'{x}' is not a source address"))?;
            if a.is_ipv6() != g.is_ipv6() || a.is_multicast() {
                return Err(format!("source {a} does not go with group {g}"));
            }
            Some(a)
        }
        None => None,
    };
    Ok((g, src))
}

/// What a fan-out did, in the form `--json` prints and the text is made
/// from.
#[derive(serde::Serialize)]
struct FanoutTotals {
    received: u64,
    from_destination: u64,
    looped: u64,
    answers: u64,
    /// Live destinations, then those that left.
    destinations: Vec<DestTotals>,
    /// Live subscribers at the end.
    subscribers: u64,
    /// Destinations that left beyond those listed.
    departed_not_listed: u64,
    control: ControlCounts,
    other_errors: u64,
    sent: u64,
    send_errors: std::collections::BTreeMap<String, u64>,
    /// Relays the engine gave up (a send buffer that stayed full) and
    /// cancelled at the stop: neither left.
    send_blocked: u64,
    cancelled: u64,
    slots_out: u64,
    /// The engine's guard: what it refused before the relay saw it, by
    /// reason (`guard_marked`, `guard_loop`, ...), named as in `echo`.
    #[serde(flatten)]
    guard: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(serde::Serialize)]
struct DestTotals {
    /// The destination, named `addr` as every peer in every document.
    addr: String,
    kind: Kind,
    state: State,
    forwarded: u64,
    failed: u64,
    /// Given up by the engine, its send buffer full (`send_blocked`, as in
    /// every document).
    send_blocked: u64,
    /// Still queued or in flight at the stop (`cancelled`).
    cancelled: u64,
    /// Failed sends to it by errno (`send_errors`, as in every document).
    send_errors: std::collections::BTreeMap<String, u64>,
    refused: u64,
}

impl FanoutTotals {
    fn new(t: &Table, s: &Stats) -> Self {
        FanoutTotals {
            received: t.received,
            from_destination: t.from_destination,
            looped: t.looped,
            answers: t.answers,
            destinations: t
                .dests
                .iter()
                .chain(&t.departed)
                .map(|d| DestTotals {
                    addr: d.addr.to_string(),
                    kind: d.kind,
                    state: d.state,
                    forwarded: d.forwarded(),
                    failed: d.failed,
                    send_blocked: d.blocked,
                    cancelled: d.cancelled,
                    send_errors: d
                        .errors
                        .iter()
                        .map(|(&e, &n)| (udpring::errno_name(e), n))
                        .collect(),
                    refused: d.refused,
                })
                .collect(),
            subscribers: t
                .dests
                .iter()
                .filter(|d| d.kind == Kind::Subscriber)
                .count() as u64,
            departed_not_listed: t.departed_dropped,
            control: t.control,
            other_errors: t.other_errors,
            sent: s.sent,
            send_errors: s
                .send_errors
                .iter()
                .map(|&(e, n)| (udpring::errno_name(e), n))
                .collect(),
            send_blocked: s.send_blocked,
            cancelled: s.cancelled,
            slots_out: s.slots_out,
            guard: s
                .counters()
                .filter(|(n, _)| n.starts_with("guard_"))
                .collect(),
        }
    }

    fn text(&self, s: &Stats) -> String {
        let c = &self.control;
        let mut out = format!(
            "received {} sent {} send-errors {} given-up {} cancelled {}  dropped: {} from a destination, {} looped through groups, {} answers to our sends; {} errors about no destination\n",
            self.received,
            self.sent,
            s.send_errors_text(),
            self.send_blocked,
            self.cancelled,
            self.from_destination,
            self.looped,
            self.answers,
            self.other_errors,
        );
        let refused: Vec<String> = self
            .guard
            .iter()
            .filter(|&(_, &v)| v > 0)
            .map(|(n, v)| format!("{} {v}", n.trim_start_matches("guard_").replace('_', "-")))
            .collect();
        if !refused.is_empty() {
            out += &format!("refused by the guard: {}\n", refused.join(" "));
        }
        if c.tokens + c.malformed + c.too_short + c.bad_token > 0 {
            out += &format!(
                "control: tokens {} subscribed {} refreshed {} unsubscribed {} expired {} full {} host-full {} prefix-full {} bad-token {} not-subscribed {} malformed {} too-short {}; {} subscribers now\n",
                c.tokens,
                c.subscribed,
                c.refreshed,
                c.unsubscribed,
                c.expired,
                c.full,
                c.host_full,
                c.prefix_full,
                c.bad_token,
                c.not_subscribed,
                c.malformed,
                c.too_short,
                self.subscribers
            );
        }
        for d in &self.destinations {
            out += &format!(
                "  to {} ({}, {}) forwarded {} failed {} given-up {} cancelled {} refused {}\n",
                d.addr,
                d.kind.name(),
                d.state.name(),
                d.forwarded,
                d.failed,
                d.send_blocked,
                d.cancelled,
                d.refused
            );
        }
        out
    }
}

pub(crate) fn fanout(a: FanoutArgs) -> Result<(), Failure> {
    let mut cfg = a.engine.config(a.listen)?;
    crate::serve::stop_on_failure(&mut cfg);
    let iface = match &a.engine.iface {
        Some(name) => {
            udpring::interface_index(name).map_err(|e| usage(e.to_string()))?;
            Interface::Name(name.clone())
        }
        None => Interface::Any,
    };
    for &(group, source) in &a.join {
        if group.is_ipv6() != a.listen.is_ipv6() {
            return Err(usage(format!(
                "--join {group}: not of --listen {}'s family",
                a.listen
            )));
        }
        cfg.multicast.joins.push(Join {
            group,
            source,
            interface: iface.clone(),
        });
    }
    // Listening on a group's address receives only that group, and only
    // once joined: join it (any source), as `mcast listen GROUP:PORT` does,
    // unless --join named it already.
    let listen_group = a.listen.ip().is_multicast();
    if listen_group && !a.join.iter().any(|(g, _)| *g == a.listen.ip()) {
        cfg.multicast.joins.push(Join {
            group: a.listen.ip(),
            source: None,
            interface: iface.clone(),
        });
    }
    if let Some(d) = a
        .relay
        .to
        .iter()
        .find(|d| d.is_ipv6() != a.listen.is_ipv6() && !a.listen.is_ipv6())
    {
        return Err(usage(format!(
            "--to {d}: an IPv4 socket cannot send to IPv6"
        )));
    }
    if a.engine.iface.is_some() {
        cfg.multicast.interface = Some(iface.clone());
    }
    if let Some(t) = a
        .ttl
        .filter(|_| !a.relay.to.iter().any(|d| d.ip().is_multicast()))
    {
        return Err(usage(format!(
            "--ttl {t} is the TTL of what is sent to a group, and no --to is one (unicast goes \
             out with the system's TTL, or the server mark's)"
        )));
    }
    let to = &a.relay.to;
    if let Some(d) = (1..to.len()).find_map(|k| to[..k].contains(&to[k]).then_some(to[k])) {
        return Err(usage(format!(
            "--to {d} is given twice: each destination gets one copy of every datagram"
        )));
    }
    if let Some(d) = a.relay.to.iter().find(|d| **d == a.listen) {
        return Err(usage(format!(
            "--to {d} is --listen itself: every datagram would come back to be relayed again"
        )));
    }
    // A group this relay receives, on the port it listens on: what it
    // sends there comes back to it (the host hears its own multicast).
    if let Some(d) = a.relay.to.iter().find(|d| {
        d.port() == a.listen.port() && cfg.multicast.joins.iter().any(|j| j.group == d.ip())
    }) {
        return Err(usage(format!(
            "--to {d} is a group this relay receives on its port: every datagram would come \
             back to be relayed again"
        )));
    }
    if let Some(c) = a.control {
        if c.port() != 0 && c.port() == a.listen.port() {
            return Err(usage(format!(
                "--control {c}: must be another port than --listen {}",
                a.listen
            )));
        }
        if c.is_ipv6() != a.listen.is_ipv6() {
            return Err(usage(format!(
                "--control {c}: not of --listen {}'s family",
                a.listen
            )));
        }
    }
    cfg.multicast.ttl = a.ttl;
    cfg.reuse_addr = !cfg.multicast.joins.is_empty();
    cfg.guard = a.guard.guard();
    // The relay sends from a socket of its own (see apps::fanout).
    cfg.also_bind = crate::apps::fanout::config(a.listen, a.control).also_bind;
    cfg.validate().map_err(config_error)?;
    udpring::signals::install().map_err(runtime)?;
    let mut opts = a.relay.clone();
    opts.max_departed = opts.max_subscribers;
    let relay = Relay::new(opts);
    let r2 = relay.clone();
    let engine = Engine::start(cfg, move |_| Fanout::new(r2.clone())).map_err(runtime)?;
    // With --json, standard output carries the JSON document alone: the
    // banner and the live lines go to standard error.
    let json = a.serve.out.json_out();
    let line = |text: String| {
        if json {
            note!("{text}");
        } else {
            say!("{text}");
        }
    };
    let control = match a.control {
        Some(_) => format!(
            "subscribers on {}",
            engine
                .local_addrs()
                .get(2 * engine.workers())
                .copied()
                .unwrap_or(engine.local_addr())
        ),
        None => String::new(),
    };
    if let Some(why) = engine.fallback_reason() {
        note!("udpring: note: {why}");
    }
    // The static destinations, then where subscribers come from.
    let to: Vec<String> = a
        .relay
        .to
        .iter()
        .map(|d| d.to_string())
        .chain((!control.is_empty()).then_some(control))
        .collect();
    line(format!(
        "udpring fanout: listening on {} (backend {}), relaying to {}",
        engine.local_addr(),
        engine.backend(),
        to.join(", ")
    ));
    crate::metrics::start_metrics(a.serve.metrics, &engine)?;
    let (mut prev, mut prev_out) = (0, 0);
    let (mut prev_stats, mut last_t) = (udpring::Stats::default(), 0.0);
    let secs = run_until(a.serve.duration, a.serve.out.every(), |t, dt| {
        let now_stats = engine.stats();
        a.serve
            .out
            .say_interval("fanout", t, dt, &now_stats, &prev_stats);
        (prev_stats, last_t) = (now_stats, t);
        let (now, out, dests) = {
            let t = relay.table();
            let out: u64 = t.dests.iter().chain(&t.departed).map(|d| d.queued).sum();
            (t.received, out, t.dests.len())
        };
        if !a.serve.out.quiet {
            line(format!(
                "t={t:>6.1}s in {:>10.0}/s  out {:>10.0}/s  destinations {dests}",
                (now - prev) as f64 / dt,
                (out - prev_out) as f64 / dt
            ));
        }
        (prev, prev_out) = (now, out);
    });
    let (s, failure) = crate::serve::stop(engine);
    // The tail since the last interval: the intervals add up to the totals.
    a.serve
        .out
        .say_interval("fanout", secs, secs - last_t, &s, &prev_stats);
    let totals = FanoutTotals::new(&relay.table(), &s);
    if a.serve.out.json_out() {
        a.serve.out.say_end("fanout", secs, &totals);
    } else {
        say_raw!("{}", totals.text(&s));
    }
    failure.map_or(Ok(()), Err)
}
