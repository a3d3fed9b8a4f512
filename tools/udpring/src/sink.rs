//! `udpring sink`: one-way reception, like iperf3's server. Receives
//! udpring-stamped traffic (`load --match none`, `mcast send`) and reports,
//! per sender, what arrived: received, lost (gaps in the sequence),
//! reordered, duplicated, and RFC 3550 interarrival jitter.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::apps::mcast::{MAX_PEERS, McastListen, PeerTable};
use clap::Args;
use udpring::Engine;

use crate::common::{Failure, config_error, parse_addr, runtime};
use crate::serve::{ServeArgs, run_until, stop};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring sink --bind 0.0.0.0:9001                                # on the receiver\n  \
    udpring load 10.0.0.2:9001 --match none --bitrate 100M -s 1400  # on the sender\n\n\
Each sender (source address and port: one per flow) is a stream of its own,
checked by the sequence numbers and send times udpring stamps: lost counts
the gaps between the lowest and highest sequence seen, jitter is RFC 3550's
smoothed variation of transit time, in microseconds. At most 1024 senders
are tracked; datagrams from more are counted as untracked, and datagrams
without udpring's header as invalid. One worker: a sink measures, it is not
built to take more than one core's worth.")]
pub(crate) struct SinkArgs {
    /// Address to listen on: IPv4 `ADDR:PORT` or IPv6 `[ADDR]:PORT`.
    #[arg(long, short = 'b', default_value = "0.0.0.0:9001", value_parser = parse_addr)]
    bind: SocketAddr,
    /// Backend: uring, mmsg, simple or xdp (AF_XDP; root and a real
    /// interface). Default: uring if the kernel has it, else mmsg.
    #[arg(long, value_parser = crate::common::parse_backend)]
    backend: Option<udpring::Backend>,
    /// xdp: the interface to attach to, when --bind is a wildcard address.
    #[arg(long, value_name = "NAME", value_parser = crate::common::parse_iface)]
    iface: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

pub(crate) fn run(a: SinkArgs) -> Result<(), Failure> {
    crate::common::xdp_iface_only(a.iface.as_deref(), a.backend)?;
    let mut cfg = udpring::Config::new(a.bind);
    cfg.workers = 1;
    cfg.backend = a.backend;
    cfg.xdp_iface = a.iface.clone();
    // Each sender's DSCP/ECN marks, as they arrived.
    cfg.recv_tos = true;
    // A sink answers nothing, so it can be no half of a loop: any source.
    cfg.guard = udpring::Guard::client();
    crate::serve::stop_on_failure(&mut cfg);
    cfg.validate().map_err(config_error)?;
    udpring::signals::install().map_err(runtime)?;
    let table: PeerTable = Arc::default();
    let t2 = table.clone();
    let engine =
        Engine::start(cfg, move |_| McastListen::new(true, t2.clone())).map_err(runtime)?;
    if let Some(why) = engine.fallback_reason() {
        note!("udpring: note: {why}");
    }
    let banner = format!(
        "udpring sink: listening on {} (backend {})",
        engine.local_addr(),
        engine.backend()
    );
    let json = a.serve.out.json_out();
    if json {
        note!("{banner}");
    } else {
        say!("{banner}");
    }
    crate::metrics::start_metrics(a.serve.metrics, &engine)?;
    let (mut prev, mut last_t) = (udpring::Stats::default(), 0.0);
    let secs = run_until(a.serve.duration, a.serve.out.every(), |t, dt| {
        let now = engine.stats();
        let line = format!(
            "t={t:>6.1}s in {:>10.0}/s",
            now.received.saturating_sub(prev.received) as f64 / dt
        );
        match (a.serve.out.quiet, json) {
            (true, _) => {}
            (false, true) => note!("{line}"),
            (false, false) => say!("{line}"),
        }
        a.serve.out.say_interval("sink", t, dt, &now, &prev);
        (prev, last_t) = (now, t);
    });
    let (stats, failure) = stop(engine);
    // The tail since the last interval: the intervals add up to the totals.
    a.serve
        .out
        .say_interval("sink", secs, secs - last_t, &stats, &prev);
    let report = table.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if json {
        let sources: Vec<serde_json::Value> = report
            .peers
            .iter()
            .map(|(p, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["addr"] = p.to_string().into();
                v
            })
            .collect();
        a.serve.out.say_end(
            "sink",
            secs,
            serde_json::json!({
                "received": stats.received, "invalid": report.invalid,
                "untracked": report.untracked, "kernel_drops": stats.kernel_drops,
                "sources": sources,
            }),
        );
    } else {
        say!(
            "sink: received {} in {secs:.2} s  invalid {}  from senders beyond the {MAX_PEERS} \
             tracked {}  kernel drops {}",
            stats.received,
            report.invalid,
            report.untracked,
            stats.kernel_drops
        );
        for (p, c) in &report.peers {
            let expected = c.received + c.lost;
            say!(
                "  from {p}: received {} lost {} ({:.3}%) reordered {} duplicated {} jitter {}{}",
                c.received,
                c.lost,
                if expected > 0 {
                    100.0 * c.lost as f64 / expected as f64
                } else {
                    0.0
                },
                c.reordered,
                c.duplicated,
                c.jitter_us
                    .map_or("-".to_string(), |j| format!("{j:.1} us")),
                c.tos.map_or(String::new(), |t| format!(
                    "  dscp {} ecn {}",
                    t >> 2,
                    t & 3
                ))
            );
        }
    }
    failure.map_or(Ok(()), Err)
}
