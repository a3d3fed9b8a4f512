//! `udpring fanout`: relay every datagram to several destinations.

use std::net::{IpAddr, SocketAddr};

use clap::Args;
use udpring::apps::fanout::{Fanout, FanoutCounters};
use udpring::{Engine, Interface, Join, Stats};

use crate::common::{
    EngineArgs, Failure, GuardArgs, ServeArgs, parse_addr, run_until, runtime, usage,
};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring fanout --listen 0.0.0.0:5000 --to 10.0.0.2:5000,10.0.0.3:5000\n  \
    udpring fanout --listen 0.0.0.0:5000 --join 239.1.1.1 --to 10.0.0.9:6000   # group -> host\n  \
    udpring fanout --listen 0.0.0.0:5000 --join 232.1.1.1@10.0.0.1 --to 239.2.2.2:5000 --ttl 4")]
pub(crate) struct FanoutArgs {
    /// Address to receive on.
    #[arg(long, value_parser = parse_addr)]
    listen: SocketAddr,
    /// Destinations, comma-separated ADDR:PORT (unicast or multicast).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_addr)]
    to: Vec<SocketAddr>,
    /// Join GROUP (or GROUP@SOURCE, source-specific) before receiving; repeatable.
    #[arg(long, value_parser = parse_join)]
    join: Vec<(IpAddr, Option<IpAddr>)>,
    /// Interface (name) for joins and for multicast sent.
    #[arg(long)]
    iface: Option<String>,
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
    answers: u64,
    destinations: Vec<DestTotals>,
    other_errors: u64,
    sent: u64,
    send_errors: std::collections::BTreeMap<String, u64>,
    slots_out: u64,
}

#[derive(serde::Serialize)]
struct DestTotals {
    to: String,
    forwarded: u64,
    failed: u64,
    refused: u64,
}

impl FanoutTotals {
    fn new(to: &[SocketAddr], c: &FanoutCounters, s: &Stats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        FanoutTotals {
            received: c.received.load(Relaxed),
            from_destination: c.from_destination.load(Relaxed),
            answers: c.answers.load(Relaxed),
            destinations: to
                .iter()
                .zip(&c.dests)
                .map(|(d, c)| DestTotals {
                    to: d.to_string(),
                    forwarded: c.forwarded(),
                    failed: c.failed.load(Relaxed),
                    refused: c.refused.load(Relaxed),
                })
                .collect(),
            other_errors: c.other_errors.load(Relaxed),
            sent: s.sent,
            send_errors: s
                .send_errors
                .iter()
                .map(|&(e, n)| (udpring::errno_name(e), n))
                .collect(),
            slots_out: s.slots_out,
        }
    }

    fn text(&self, s: &Stats) -> String {
        let mut out = format!(
            "received {} sent {} send-errors {}  dropped: {} from a destination, {} answers to our sends; {} errors about no destination\n",
            self.received,
            self.sent,
            s.send_errors_text(),
            self.from_destination,
            self.answers,
            self.other_errors,
        );
        for d in &self.destinations {
            out += &format!(
                "  to {} forwarded {} failed {} refused {}\n",
                d.to, d.forwarded, d.failed, d.refused
            );
        }
        out
    }
}

pub(crate) fn fanout(a: FanoutArgs) -> Result<(), Failure> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut cfg = a.engine.config(a.listen);
    let iface = match &a.iface {
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
    if let Some(d) =
        a.to.iter()
            .find(|d| d.is_ipv6() != a.listen.is_ipv6() && !a.listen.is_ipv6())
    {
        return Err(usage(format!(
            "--to {d}: an IPv4 socket cannot send to IPv6"
        )));
    }
    if a.iface.is_some() {
        cfg.multicast.interface = Some(iface.clone());
    }
    if let Some(d) = a.to.iter().find(|d| **d == a.listen) {
        return Err(usage(format!(
            "--to {d} is --listen itself: every datagram would come back to be relayed again"
        )));
    }
    cfg.multicast.ttl = a.ttl;
    cfg.reuse_addr = !a.join.is_empty();
    cfg.guard = a.guard.guard();
    // The relay sends from a socket of its own (see apps::fanout).
    cfg.also_bind = udpring::apps::fanout::config(a.listen).also_bind;
    cfg.validate().map_err(|e| usage(e.to_string()))?;
    udpring::signals::install().map_err(runtime)?;
    let counters = FanoutCounters::new(a.to.len());
    let (c2, dests) = (counters.clone(), a.to.clone());
    let engine =
        Engine::start(cfg, move |_| Fanout::new(dests.clone(), c2.clone())).map_err(runtime)?;
    // With --json, standard output carries the JSON document alone: the
    // banner and the live lines go to standard error.
    let json = a.serve.json;
    let line = |text: String| {
        if json {
            eprintln!("{text}");
        } else {
            say!("{text}");
        }
    };
    line(format!(
        "udpring fanout: listening on {} (backend {}), relaying to {}",
        engine.local_addr(),
        engine.backend(),
        a.to.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    crate::common::start_metrics(a.serve.metrics, &engine)?;
    let mut prev = 0;
    let secs = run_until(a.serve.duration, a.serve.quiet, |t, dt| {
        let now = counters.received.load(Relaxed);
        line(format!(
            "t={t:>6.1}s in {:>10.0}/s  out {:>10.0}/s",
            (now - prev) as f64 / dt,
            (now - prev) as f64 * a.to.len() as f64 / dt
        ));
        prev = now;
    });
    let (s, failure) = crate::common::stop(engine);
    let totals = FanoutTotals::new(&a.to, &counters, &s);
    if a.serve.json {
        crate::common::say_json("fanout", Some(secs), &totals);
    } else {
        say_raw!("{}", totals.text(&s));
    }
    failure.map_or(Ok(()), Err)
}
