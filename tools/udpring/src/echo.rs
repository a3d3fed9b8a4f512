//! `udpring echo`.

use std::net::SocketAddr;

use clap::Args;
use std::sync::{Arc, Mutex};

use crate::apps::echo::{Echo, TimedEcho};
use udpring::{Engine, Stats};

use crate::common::{EngineArgs, Failure, GuardArgs, config_error, parse_addr, runtime};
use crate::serve::{ServeArgs, rate_line, run_until, stop, totals};

#[derive(Args)]
pub(crate) struct EchoArgs {
    /// Address to listen on: IPv4 `ADDR:PORT` or IPv6 `[ADDR]:PORT`.
    #[arg(long, short = 'b', default_value = "0.0.0.0:9000", value_parser = parse_addr)]
    bind: SocketAddr,
    /// Clear sockperf's client flag so `sockperf ping-pong` accepts the echoes.
    #[arg(long)]
    sockperf: bool,
    /// Answer each datagram with the DSCP and ECN it arrived with (read
    /// per datagram, set per reply), instead of the socket's marking; CE
    /// is answered as ECT(0), never reflected.
    #[arg(long, conflicts_with = "discard")]
    reflect_tos: bool,
    /// Reply to nothing: count and drop, at the engine's full speed (a
    /// sender's ceiling). For loss, reordering and jitter per sender, use
    /// `udpring sink`; either way send with `load --match none`.
    #[arg(long, conflicts_with = "sockperf")]
    discard: bool,
    /// Split the server's own time at the kernel's timestamps:
    /// receive_queue (kernel RX -> handler) and reply_path (handler ->
    /// kernel TX of the reply), printed at exit (JSON: kernel_timestamps).
    /// Costs a control message per reply. Pair with `udpring load --mode
    /// ping --kernel-timestamps`.
    #[arg(long, conflicts_with = "discard")]
    kernel_timestamps: bool,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The echo's spin before sleeping unless `--spin` says otherwise (µs): a
/// reflector for latency tests answers a closed loop without a wake-up
/// (PERF.md, "An adaptive spin before sleeping"); idle, it sleeps.
const SPIN_US: u32 = 50;

pub(crate) fn run(a: EchoArgs) -> Result<(), Failure> {
    // An echo joins no group: the interface is the xdp backend's alone.
    crate::common::xdp_iface_only(a.engine.iface.as_deref(), a.engine.backend)?;
    let mut cfg = a.engine.config(a.bind)?;
    crate::serve::stop_on_failure(&mut cfg);
    cfg.guard = a.guard.guard();
    cfg.recv_tos |= a.reflect_tos;
    cfg.reflect_tos = a.reflect_tos;
    if !a.discard {
        a.engine.spin_by_default(&mut cfg, SPIN_US);
    }
    let spin = cfg.spin_us;
    cfg.validate().map_err(config_error)?;
    cfg.rx_timestamps = a.kernel_timestamps;
    cfg.tx_timestamps = a.kernel_timestamps;
    udpring::signals::install().map_err(runtime)?;
    let (sockperf, discard) = (a.sockperf, a.discard);
    let echo = Echo {
        sockperf,
        discard,
        ..Echo::default()
    };
    let stages = Arc::new(Mutex::new(None));
    let engine = if a.kernel_timestamps {
        let out = stages.clone();
        Engine::start(cfg, move |_| TimedEcho::new(echo, out.clone()))
    } else {
        Engine::start(cfg, move |_| echo)
    }
    .map_err(runtime)?;
    if let Some(why) = engine.fallback_reason() {
        note!("udpring: note: {why}");
    }
    let info = engine.socket_info();
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
    line(format!(
        "udpring echo: listening on {} (backend {}, {} worker{}, rcvbuf {} sndbuf {}{}{}{}{})",
        engine.local_addr(),
        engine.backend(),
        engine.workers(),
        if engine.workers() == 1 { "" } else { "s" },
        info.recv_buffer,
        info.send_buffer,
        if info.gro { ", gro" } else { "" },
        if spin > 0 {
            format!(", spin {spin} us")
        } else {
            String::new()
        },
        if sockperf { ", sockperf" } else { "" },
        if discard { ", discard" } else { "" },
    ));
    crate::metrics::start_metrics(a.serve.metrics, &engine)?;
    let (mut prev, mut last_t) = (Stats::default(), 0.0);
    let secs = run_until(a.serve.duration, a.serve.out.every(), |t, dt| {
        let now = engine.stats();
        if !a.serve.out.quiet {
            line(rate_line(t, &now, &prev, dt));
        }
        a.serve.out.say_interval("echo", t, dt, &now, &prev);
        (prev, last_t) = (now, t);
    });
    let (s, failure) = stop(engine);
    // The tail since the last interval: the intervals add up to the totals.
    a.serve
        .out
        .say_interval("echo", secs, secs - last_t, &s, &prev);
    let stages = stages
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|st| st.report());
    if a.serve.out.json_out() {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            stats: &'a Stats,
            #[serde(skip_serializing_if = "Option::is_none")]
            kernel_timestamps: Option<crate::apps::stages::KernelStages>,
        }
        let out = Out {
            stats: &s,
            kernel_timestamps: stages,
        };
        a.serve.out.say_end("echo", secs, &out);
    } else {
        say!("{}", totals(&s, info.gro));
        if let Some(k) = stages {
            say!("{}", k.text().trim_end());
        }
    }
    failure.map_or(Ok(()), Err)
}
