//! `udpring bench`: the main job.

use std::time::Duration;

use crate::apps::bench::{self, BenchOpts};
use clap::Args;
use udpring::Backend;

use crate::common::{Failure, parse_backend, parse_size, runtime, usage};

#[derive(Args)]
#[command(
    after_help = "Rows: flood (a window of datagrams in flight: echo throughput) at 64 and\n\
    1400 B per backend, ping (one in flight: round-trip time) per backend, and\n\
    floods with GSO/GRO (trains of up to 64 datagrams per send) on uring.\n\
    'vs simple' compares with the simple backend (one syscall per datagram):\n\
    echoed/s for floods, median RTT for ping; above 1 is better."
)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    opts: BenchOpts,
    /// Run every workload on every backend (GSO/GRO rows included).
    #[arg(long)]
    compare: bool,
    /// Leave out the C limit rows (each flood workload's echo driven by
    /// the kernel-level reference flood, `udpring reference`).
    #[arg(long)]
    no_c_limit: bool,
    /// Only these server backends (comma-separated: simple, mmsg, uring;
    /// xdp needs a NIC or veth, not loopback); default: all.
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    backend: Vec<Backend>,
    /// Only these payload sizes in bytes (comma-separated; 32..65507);
    /// replaces 64 and 1400 in the flood rows.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    size: Vec<usize>,
    /// Only floods, or only ping.
    #[arg(long, value_parser = ["flood", "ping"])]
    only: Option<String>,
    /// Print {"command":"bench","rows":[...]} JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Print the table as CSV (a header row, then one row per workload).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

pub(crate) fn run(a: BenchArgs) -> Result<(), Failure> {
    if !a.opts.bind.ip().is_loopback() {
        return Err(usage(format!(
            "--bind {}: bench runs on loopback only (127.0.0.0/8 or ::1)",
            a.opts.bind
        )));
    }
    let mut opts = a.opts.clone();
    let backends: Vec<Backend> = if a.backend.is_empty() {
        let mut v = vec![Backend::Simple, Backend::Mmsg];
        match udpring::uring_support().and_then(|()| uring_starts(a.opts.bind)) {
            Ok(()) => v.push(Backend::Uring),
            Err(why) => {
                note!("udpring: note: skipping uring: {why}");
                // The flood clients too.
                opts.client_backend = Some(Backend::Mmsg);
            }
        }
        v
    } else {
        a.backend.clone()
    };
    if backends.contains(&Backend::Xdp) {
        return Err(usage(
            "--backend xdp: bench runs on loopback, which has no receive queue for an \
             AF_XDP socket; measure xdp on a veth pair or a NIC (`udpring sink --backend \
             xdp --iface IFACE`, tools/perf/xdp.sh)",
        ));
    }
    let mut cases = bench::default_cases(&backends, a.compare);
    if !a.size.is_empty() {
        let mut v = Vec::new();
        for c in cases.iter().filter(|c| c.size == 64) {
            for &size in &a.size {
                if c.workload == bench::Workload::Flood || size == a.size[0] {
                    v.push(bench::Case { size, ..*c });
                }
            }
        }
        cases = v;
    }
    match a.only.as_deref() {
        Some("flood") => cases.retain(|c| c.workload == bench::Workload::Flood),
        Some("ping") => {
            // What shapes only the flood rows (and their C limits) would be
            // accepted and mean nothing.
            let given = [
                (a.opts.window.is_some(), "--window"),
                (a.opts.gso_segments.is_some(), "--gso-segments"),
                (a.no_c_limit, "--no-c-limit"),
                (a.compare, "--compare"),
            ];
            if let Some((_, flag)) = given.iter().find(|(g, _)| *g) {
                return Err(usage(format!(
                    "{flag} shapes the flood rows, and --only ping runs none: one request \
                     in flight per backend, no GSO, no C limit"
                )));
            }
            cases.retain(|c| c.workload == bench::Workload::Ping)
        }
        _ => {}
    }
    opts.bind.set_port(0);
    let mut results = Vec::new();
    // Progress (which row, how long is left) on a terminal only: quiet in
    // pipes, in scripts and under --json or --csv.
    let show = !a.json && !a.csv && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let per_row = opts.duration + opts.warmup + Duration::from_millis(300);
    let total = cases.len();
    let done = cases.clone();
    for (k, c) in cases.into_iter().enumerate() {
        if show {
            note_raw!(
                "[{}/{total}] {} {} {} B{} (about {:.0} s left) ... ",
                k + 1,
                c.workload.name(),
                c.backend,
                c.size,
                if c.gso { " gso/gro" } else { "" },
                (per_row * (total - k) as u32).as_secs_f64()
            );
        }
        let r = bench::run_case(c, &opts).map_err(runtime)?;
        if show {
            note!("{:.0} echoed/s", r.pps_received);
        }
        results.push(r);
    }
    // The C limit of each flood workload: the same echo under the
    // kernel-level reference flood.
    if !a.no_c_limit {
        for c in bench::c_limit_cases(&done) {
            if show {
                note_raw!(
                    "[C limit] {} {} B{} ... ",
                    c.backend,
                    c.size,
                    if c.gso { " gso/gro" } else { "" }
                );
            }
            let r = bench::run_c_limit(c, &opts).map_err(runtime)?;
            if show {
                note!("{:.0} echoed/s", r.pps_received);
            }
            results.push(r);
        }
    }
    if a.json {
        crate::common::say_json("bench", None, serde_json::json!({ "rows": results }));
    } else if a.csv {
        say_raw!("{}", bench::report::csv(&results));
    } else {
        say_raw!("{}", bench::report::table(&results));
    }
    Ok(())
}

/// Whether an engine on the uring backend starts here: the kernel may
/// have io_uring and still refuse a ring of the size the engine asks
/// for (a locked-memory limit, said in the error).
fn uring_starts(bind: std::net::SocketAddr) -> Result<(), String> {
    let mut cfg = udpring::Config::new(std::net::SocketAddr::new(bind.ip(), 0));
    cfg.backend = Some(Backend::Uring);
    cfg.workers = 1;
    let engine = udpring::Engine::start(cfg, |_| crate::apps::echo::Echo::new())
        .map_err(|e| e.to_string())?;
    engine.stop().map(drop).map_err(|e| e.to_string())
}
