//! `udpring load`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use udpring::Backend;

use crate::common::{
    Failure, parse_addr, parse_backend, parse_bitrate, parse_rate, parse_secs, parse_secs_or_zero,
    resolve, runtime, usage,
};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring load 127.0.0.1:9000                        # flood 64 B for 5 s, 256 in flight\n  \
    udpring load 127.0.0.1:9000 --unbounded            # flood with no window: the ceiling\n  \
    udpring load 127.0.0.1:9000 --mode ping --flows 4  # closed-loop RTT, 4 flows\n  \
    udpring load [::1]:9000 --rate 100000 --size 512   # paced, latency from intended send time\n  \
    udpring load host:11111 --sockperf --mode ping     # against `sockperf server`\n  \
    udpring load 127.0.0.1:9000 --gso 64 --json > a.json")]
pub(crate) struct LoadArgs {
    /// The echo server: HOST:PORT (names are resolved; IPv6 as [ADDR]:PORT).
    target: String,
    /// flood: as fast as possible; ping: one request in flight per flow.
    /// With --rate the mode is an open loop at that rate.
    #[arg(long, default_value = "flood", value_parser = ["flood", "ping"])]
    mode: String,
    /// Open loop at this many datagrams per second (all workers together):
    /// 20000, 20k, 1.5M.
    #[arg(long, value_parser = parse_rate, conflicts_with_all = ["bitrate", "burst"])]
    rate: Option<f64>,
    /// Open loop at this many payload bits per second (like iperf3 -b):
    /// 100M, 1G, 500k. The datagram rate is this over 8 x --size.
    #[arg(long, value_parser = parse_bitrate, conflicts_with = "burst")]
    bitrate: Option<f64>,
    /// Open loop in bursts: this many datagrams back to back (all workers
    /// together) every --burst-interval.
    #[arg(long, requires = "burst_interval")]
    burst: Option<u64>,
    /// Time between the starts of two bursts, seconds (0.001 = 1 ms).
    #[arg(long, value_parser = parse_secs, requires = "burst")]
    burst_interval: Option<Duration>,
    /// How replies are matched to requests. header (the default without a
    /// payload): udpring's own header, echoed back (an echo server);
    /// id:OFFSET:LEN: an ID of LEN bytes (1..8) udpring writes into each
    /// request at OFFSET and the service copies back there (DNS and
    /// memcached's UDP frame: id:0:2; the default with --dns-queries);
    /// flow: one request in flight per flow, any reply answers it; none:
    /// one-way load to a sink (`udpring sink`, or any service that answers
    /// nothing): what was sent and what the kernel refused are counted,
    /// nothing is lost.
    #[arg(long = "match", value_name = "HOW")]
    match_: Option<String>,
    #[command(flatten)]
    payload: crate::payload::PayloadArgs,
    #[command(flatten)]
    socket: crate::common::SocketArgs,
    /// Payload bytes per datagram (32..65507; 46.. with --sockperf). A list
    /// (64,512,1400) runs one measurement per size, one after the other.
    /// [default: 64]
    #[arg(long, short = 's', value_delimiter = ',', num_args = 1..)]
    size: Vec<usize>,
    /// Flows: sockets with distinct source ports, spread over the workers
    /// (1..1024).
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// Worker threads (each pinned to a CPU).
    #[arg(long, short = 'w', default_value_t = 1)]
    workers: usize,
    /// Seconds to send, after the warm-up.
    #[arg(long, short = 't', value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Datagrams to send, after the warm-up (instead of --duration).
    #[arg(long, short = 'n', conflicts_with = "duration")]
    count: Option<u64>,
    /// Seconds of traffic before measuring starts.
    /// [default: 0.2; 0 with --match none, so that what the sink counts
    /// is what was sent]
    #[arg(long, value_parser = parse_secs_or_zero)]
    warmup: Option<Duration>,
    /// Datagrams per send as one GSO train (1: no GSO). Replies are received
    /// with GRO.
    #[arg(long, default_value_t = 1)]
    gso: usize,
    /// Flood: at most this many datagrams in flight per worker (default
    /// 256). A bigger window only queues in the server's socket buffer, and
    /// what overflows it is lost: the run then measures the buffer, not
    /// the server. Raise it for long paths (window >= rate x RTT).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    window: Option<u64>,
    /// Flood with no window: as fast as this host can send, replies or
    /// not (expect loss at the server's socket; finds the ceiling).
    #[arg(long, conflicts_with = "window")]
    unbounded: bool,
    /// Seconds to wait for late replies after the last send.
    #[arg(long, default_value = "0.5", value_parser = parse_secs_or_zero)]
    drain: Duration,
    /// Seconds before a request counts as unanswered (ping mode; with ID
    /// matching, before its ID may be reused).
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    timeout: Duration,
    /// Open-loop steps of rising rate, START:END:STEP (units allowed:
    /// 10k:100k:10k), one table row each, and the knee: the highest step
    /// within --max-loss / --max-p99 (1% loss when neither is given).
    #[arg(long, value_name = "START:END:STEP", value_parser = crate::steps::parse_steps,
          conflicts_with_all = ["rate", "bitrate", "burst", "pcap_timing"])]
    rate_steps: Option<crate::steps::Steps>,
    /// Seconds per step of --rate-steps.
    #[arg(long, value_parser = parse_secs, requires = "rate_steps", default_value = "2")]
    step_duration: Duration,
    /// Generator I of N (0-based, as Kubernetes' JOB_COMPLETION_INDEX):
    /// 1/N of --rate, --bitrate, --burst and --count, and payloads I, I+N,
    /// I+2N, ... of the payload source, so N generators together are one
    /// load; `udpring report` merges their results.
    #[arg(long, value_name = "I/N", value_parser = crate::fleet::parse_shard)]
    shard: Option<(usize, usize)>,
    /// Wait and start measuring at this instant (RFC 3339, e.g.
    /// 2026-11-23T10:00:00Z, or Unix seconds), so generators on many hosts
    /// start together; one that is late says by how much.
    #[arg(long, value_name = "TIME", value_parser = crate::fleet::parse_time)]
    start_at: Option<std::time::SystemTime>,
    /// Record each request that got no answer at --timeout in the latency
    /// histogram: percentiles then cover every request, not only the
    /// answered ones (loss is still reported apart).
    #[arg(long)]
    timeouts_as_latency: bool,
    /// With --mode ping: split each round trip at the kernel's own
    /// timestamps (software TX stamp of the request, RX stamp of the
    /// reply): send_path (app -> kernel TX), wire_and_server (kernel TX ->
    /// kernel RX) and receive_queue (kernel RX -> app), each with its
    /// percentiles. Pair with `udpring echo --kernel-timestamps` for the
    /// server's own split.
    #[arg(long)]
    kernel_timestamps: bool,
    /// uring: send datagrams (or GSO trains) of at least BYTES zero-copy
    /// (IORING_OP_SEND_ZC from registered buffers); the JSON's
    /// kernel.zc_sent / zc_copied say what the kernel did (loopback and
    /// local delivery always copy).
    #[arg(long, value_name = "BYTES")]
    zerocopy_min: Option<usize>,
    #[command(flatten)]
    limits: crate::limits::Limits,
    /// Backend: uring, mmsg or simple. Default: mmsg for a flood (sendmmsg
    /// of a batch measured the faster sender here, PERF.md) unless it is
    /// one-way (--match none) with GSO trains of 32 KiB or more (--gso x
    /// --size: there io_uring sent more), uring otherwise (ping, rate,
    /// --zerocopy-min, --kernel-timestamps).
    #[arg(long, value_parser = parse_backend)]
    backend: Option<Backend>,
    /// Local address to send from. Port 0: the kernel picks a port per
    /// flow; port P: flow k sends from port P + k (with --shard I/N,
    /// generator I's flows take the I-th slice of that range).
    #[arg(long, value_parser = parse_addr)]
    bind: Option<SocketAddr>,
    /// Prefix sockperf's header so `sockperf server` can be the target.
    #[arg(long)]
    sockperf: bool,
    /// Do not connect the flows' sockets to the target: slower sends, but
    /// datagrams from other addresses reach udpring and count as foreign
    /// (connected, the kernel drops them).
    #[arg(long)]
    unconnected: bool,
    /// Print the result as JSON (histogram included; `udpring report` merges).
    #[arg(long)]
    json: bool,
    /// Write the RTT percentile distribution (HdrHistogram .hgrm text, µs).
    #[arg(long)]
    hist_out: Option<std::path::PathBuf>,
    /// Write one RTT histogram per interval (-i) in HdrHistogram's interval
    /// log format (V2, compressed, base64; values in ns), which
    /// HdrHistogram's own tools read.
    #[arg(long, value_name = "FILE")]
    hist_log: Option<std::path::PathBuf>,
    /// Draw the run as an SVG: the RTT percentile distribution, and the
    /// per-interval rates and p50/p99 below it.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// The per-interval lines as CSV on standard output (a header row,
    /// then one row per interval); the final table goes to standard error.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Seconds between live lines (like iperf3's -i; at least 0.1).
    #[arg(long, short = 'i', default_value = "1", value_parser = parse_secs)]
    interval: Duration,
    /// No live lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Pin workers from this CPU index up (default: the last CPUs, leaving
    /// the first ones to a server on the same host).
    #[arg(long)]
    cpu: Option<usize>,
    /// Never sleep waiting for replies (spin): lower, steadier latency for
    /// a whole CPU per worker.
    #[arg(long)]
    busy_poll: bool,
    /// Multicast target: responders tracked per worker (each costs a
    /// sequence window per flow); replies from more are counted as
    /// untracked_responders.
    /// [default: 64]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_responders: Option<u32>,
    /// TTL / hop limit when the target is a multicast group (each
    /// responder, e.g. `udpring mcast pong`, is then reported on its own).
    /// [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: Option<u32>,
}

pub(crate) fn load(a: LoadArgs) -> Result<(), Failure> {
    use crate::apps::load::{LoadOpts, Mode};
    let target = resolve(&a.target)?;
    let mut o = LoadOpts::new(target);
    let paced = a.rate.is_some() || a.bitrate.is_some() || a.burst.is_some();
    o.mode = match (paced, a.mode.as_str()) {
        (true, "flood") => Mode::Rate(a.rate.unwrap_or(1.0)),
        (true, _) => {
            return Err(usage(
                "--rate, --bitrate and --burst are an open loop: they do not go with --mode ping",
            ));
        }
        (false, "ping") => Mode::Ping,
        _ => Mode::Flood,
    };
    if let (Some(n), Some(every)) = (a.burst, a.burst_interval) {
        o.burst = Some((n, every));
        o.mode = Mode::Rate(n as f64 / every.as_secs_f64());
    }
    if a.size.len() > 16 {
        return Err(usage("--size takes at most 16 sizes"));
    }
    let sizes = if a.size.is_empty() {
        vec![64]
    } else {
        a.size.clone()
    };
    o.size = sizes[0];
    o.flows = a.flows;
    o.workers = a.workers;
    o.count = a.count;
    o.duration = match (a.duration, a.count) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(5)),
    };
    o.warmup = a.warmup.unwrap_or(if a.match_.as_deref() == Some("none") {
        Duration::ZERO
    } else {
        Duration::from_millis(200)
    });
    o.gso = a.gso;
    let payloads = crate::payload::payloads(&a.payload)?;
    o.matching = match (&a.match_, &payloads) {
        (Some(m), _) => crate::apps::load::Match::parse(m).map_err(usage)?,
        (None, Some((_, true))) => crate::apps::load::Match::Id { offset: 0, len: 2 },
        (None, _) => crate::apps::load::Match::Header,
    };
    if let Some((p, dns)) = payloads {
        if a.payload.pcap_timing {
            let (times, cycle) = p.times().unwrap_or((&[], 1));
            o.replay_speed = Some(a.payload.speed);
            o.mode = Mode::Rate(times.len() as f64 * a.payload.speed / (cycle as f64 / 1e9));
            o.window = None;
        }
        o.size = p.size_range().1;
        o.dns = dns;
        o.payloads = Some(std::sync::Arc::new(p));
        if !a.size.is_empty() {
            return Err(usage(
                "--size does not go with a payload: the payloads set it",
            ));
        }
    }
    // One request in flight per flow: a closed loop.
    if o.matching == crate::apps::load::Match::Flow && !paced {
        o.mode = Mode::Ping;
    }
    o.window = match (&o.mode, a.window, a.unbounded) {
        (Mode::Flood, None, false) if o.one_way() => None,
        (Mode::Flood, _, true) => None,
        (Mode::Flood, w, false) => Some(w.unwrap_or(crate::apps::window::DEFAULT_WINDOW)),
        (_, None, false) => None,
        _ => {
            return Err(usage(
                "--window and --unbounded shape a flood; --mode ping keeps one request in \
                 flight per flow and --rate paces the sends",
            ));
        }
    };
    // One-way: no reply to wait for.
    o.drain = if o.one_way() { Duration::ZERO } else { a.drain };
    o.ping_timeout = a.timeout;
    o.backend = a.backend;
    o.bind = a.bind;
    o.sockperf = a.sockperf;
    o.connect = !a.unconnected;
    if !target.ip().is_multicast() {
        for (flag, given) in [
            ("--ttl", a.ttl.is_some()),
            ("--max-responders", a.max_responders.is_some()),
        ] {
            if given {
                return Err(usage(format!(
                    "{flag} is for a multicast target; {target} is unicast"
                )));
            }
        }
    }
    if let Some(b) = a.bind
        && b.port() != 0
        && usize::from(b.port()) + a.flows > 65536
    {
        return Err(usage(format!(
            "--bind {b} with --flows {}: flow k sends from port {} + k, past 65535",
            a.flows,
            b.port()
        )));
    }
    o.multicast_ttl = a.ttl.unwrap_or(1);
    o.max_responders = a.max_responders.unwrap_or(64) as usize;
    o.busy_poll = a.busy_poll;
    o.bind_device = a.socket.bind_device.clone();
    o.mark = a.socket.mark;
    o.tos = a.socket.tos();
    o.only_v6 = a.socket.only_v6();
    o.first_cpu = a.cpu;
    if a.interval < Duration::from_millis(100) {
        return Err(usage("--interval must be at least 0.1 s"));
    }
    o.progress_every = a.interval;
    o.timeouts_as_latency = a.timeouts_as_latency;
    o.kernel_timestamps = a.kernel_timestamps;
    o.zero_copy_min = a.zerocopy_min;
    if let Some((i, n)) = a.shard {
        crate::fleet::shard(&mut o, i, n)?;
    }
    if let Some(rates) = &a.rate_steps {
        if sizes.len() > 1 || a.hist_out.is_some() || a.mode == "ping" || a.count.is_some() {
            return Err(usage(
                "--rate-steps runs paced steps of one size for --step-duration each: not with \
                 a size list, --hist-out, --mode ping or --count",
            ));
        }
        o.duration = Some(a.step_duration);
        udpring::signals::install().map_err(runtime)?;
        return crate::steps::run(&o, &rates.0, a.json, a.quiet, &a.limits);
    }
    // Every size's options, checked before the first run.
    let runs: Vec<LoadOpts> = sizes
        .iter()
        .map(|&size| {
            let mut x = o.clone();
            if x.payloads.is_none() {
                x.size = size;
            }
            if let Some(bits) = a.bitrate {
                x.mode = Mode::Rate(bits / (size as f64 * 8.0));
            }
            x.validate().map(|()| x)
        })
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    if runs.len() > 1 && a.hist_out.is_some() {
        return Err(usage(
            "--hist-out writes one distribution: give one --size (or write each size's \
             --json and merge nothing)",
        ));
    }
    udpring::signals::install().map_err(runtime)?;
    // An output file that cannot be written fails now, not after the run.
    let hist_out = a.hist_out.as_deref().map(OutFile::create).transpose()?;
    if runs.len() > 1 && (a.hist_log.is_some() || a.csv) {
        return Err(usage(
            "--hist-log and --csv follow one run: give one --size",
        ));
    }
    if let Some(t) = a.start_at {
        // Measuring begins after the warm-up: start that much earlier.
        crate::fleet::wait_until(t, runs[0].warmup)?;
    }
    if runs.len() == 1 {
        let mut log = a
            .hist_log
            .as_deref()
            .map(|p| crate::histlog::HistLog::create(p, runs[0].warmup))
            .transpose()?;
        let (csv, quiet) = (a.csv, a.quiet);
        if csv {
            say!("{}", crate::apps::load::Progress::CSV_HEADER);
        }
        let began = std::time::SystemTime::now() + runs[0].warmup;
        // On a terminal, how long is left (a counted or cancelled run
        // cannot tell).
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let total = runs[0].duration.map(|d| d.as_secs_f64());
        let mut points = Vec::new();
        let report = run_one(&runs[0], &mut |p| {
            points.push(crate::plot::Point {
                t: p.elapsed,
                sent: p.pps_sent,
                received: p.pps_received,
                p50: p.p50_us,
                p99: p.p99_us,
            });
            if csv {
                say!("{}", p.csv());
            } else if !quiet {
                match total {
                    Some(t) if tty && !p.draining => {
                        note!("{}  ({:.0} s left)", p.line(), (t - p.elapsed).max(0.0))
                    }
                    _ => note!("{}", p.line()),
                }
            }
            if let Some(l) = &mut log {
                l.write(p);
            }
        })?;
        if let Some(l) = log {
            l.finish()?;
        }
        if let Some(svg) = &a.plot {
            let h = report.histogram.to_histogram().map_err(usage)?;
            let title = format!("udpring load {} ({})", report.target, report.mode);
            let label = format!("{} B {}", report.size, report.mode);
            crate::plot::plot(svg, &title, &[(label, &h)], Some(&points))?;
        }
        let mut report = report;
        if let Some(t) = a.start_at {
            crate::fleet::mark_start(&mut report, t, began);
        }
        if csv {
            note_raw!("{}", report.table());
            if let Some(h) = hist_out {
                print_report(&report, false, Some(h))?;
            }
        } else {
            print_report(&report, a.json, hist_out)?;
        }
        return crate::verdict::judge(&report, &runs[0], &a.limits);
    }
    // A size sweep: one run per size; with --json one document holding
    // every result.
    let mut results = Vec::new();
    let mut verdict = Ok(());
    for x in &runs {
        if crate::common::stop_requested() {
            break;
        }
        if !a.json {
            say!("== size {} B", x.size);
        }
        let report = run_one(x, &mut |p| {
            if !a.quiet {
                note!("{}", p.line());
            }
        })?;
        if !a.json {
            say_raw!("{}", report.table());
        }
        if let Err(f) = crate::verdict::judge(&report, x, &a.limits) {
            note!("udpring: size {} B: {}", x.size, f.msg);
            verdict = Err(Failure {
                code: f.code,
                msg: format!("size {} B failed its measurement", x.size),
            });
        }
        results.push(report);
    }
    if a.json {
        crate::common::say_json("load", None, serde_json::json!({ "results": results }));
    }
    verdict
}

/// One run, each interval's progress given to `live`, and a stop on a
/// signal or when the output goes away. The watcher thread ends with the
/// run however the run ends (a panic included: `Done` is dropped on the
/// way out), so no thread outlives it.
pub(crate) fn run_one(
    o: &crate::apps::load::LoadOpts,
    live: &mut dyn FnMut(&crate::apps::load::Progress),
) -> Result<crate::apps::load::LoadReport, Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Says "done" when dropped.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let cancel = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if crate::common::stop_requested() {
                    cancel.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let _done = Done(&done);
        crate::apps::load::run_load(o, &cancel, live).map_err(runtime)
    })
}

/// A file to write at the end of a run, created (and so checked) before it.
pub(crate) struct OutFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl OutFile {
    pub(crate) fn create(path: &std::path::Path) -> Result<OutFile, Failure> {
        let file = std::fs::File::create(path)
            .map_err(|e| usage(format!("{}: cannot write here: {e}", path.display())))?;
        Ok(OutFile {
            path: path.to_path_buf(),
            file,
        })
    }

    fn write(mut self, text: &str) -> Result<(), Failure> {
        use std::io::Write;
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Failure {
                code: 1,
                msg: format!("{}: {e}", self.path.display()),
            })
    }
}

pub(crate) fn print_report(
    r: &crate::apps::load::LoadReport,
    json: bool,
    hist_out: Option<OutFile>,
) -> Result<(), Failure> {
    if let Some(out) = hist_out {
        let text = r
            .percentile_text()
            .map_err(|e| Failure { code: 1, msg: e })?;
        out.write(&text)?;
    }
    if json {
        // Its own `command` (load, or report for a merge) and duration.
        let command = r.command.clone();
        crate::common::say_json(&command, None, r);
    } else {
        say_raw!("{}", r.table());
    }
    Ok(())
}
