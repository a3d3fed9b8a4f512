//! `udpring load`: its options and its runs; `steps.rs`, the runs of
//! `--rate-steps`.

mod steps;

use std::time::Duration;

use clap::Args;

use crate::apps::load::{LoadOpts, Mode};

use crate::common::{Failure, parse_secs, runtime, usage};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring load 127.0.0.1:9000                        # flood 64 B for 5 s, 256 in flight\n  \
    udpring load 127.0.0.1:9000 --unbounded            # flood with no window: the ceiling\n  \
    udpring load 127.0.0.1:9000 --mode ping --flows 4  # closed-loop RTT, 4 flows\n  \
    udpring load [::1]:9000 --rate 100000 --size 512   # paced, latency from intended send time\n  \
    udpring load host:11111 --sockperf --mode ping     # against `sockperf server`\n  \
    udpring load 127.0.0.1:9000 --gso 64 --json > a.json")]
pub(crate) struct LoadArgs {
    /// The traffic: target, mode, rates, sizes, payloads, flows, ...
    #[command(flatten)]
    opts: LoadOpts,
    /// Open-loop steps of rising rate, START:END:STEP (units allowed:
    /// 10k:100k:10k), one table row each, and the knee: the highest step
    /// within --max-loss / --max-p99 (1% loss when neither is given).
    #[arg(long, value_name = "START:END:STEP", value_parser = steps::parse_steps,
          conflicts_with_all = ["rate", "bitrate", "burst", "pcap_timing"])]
    rate_steps: Option<steps::Steps>,
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
    #[command(flatten)]
    limits: crate::limits::Limits,
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
    /// Write the run as one self-contained HTML page (no network
    /// fetches): what was run, the summary, the RTT distribution and the
    /// per-interval figures, responders, DNS rcodes, where datagrams died.
    #[arg(long, value_name = "FILE.html")]
    html: Option<std::path::PathBuf>,
    /// The per-interval lines as CSV on standard output (a header row,
    /// then one row per interval: unix_s, elapsed_s, interval_s, draining,
    /// sent, received, pps_sent, pps_received, p50_us, p99_us, p999_us,
    /// max_us, sent_total, received_total, unanswered); the final table
    /// goes to standard error.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Newline-delimited JSON on standard output, as iperf3's
    /// --json-stream: one object per interval (-i) with `"event":
    /// "interval"` (what was sent and received in it, rates, `rtt_us`,
    /// running totals), then the result with `"event": "end"`. Every line
    /// has `schema` and `command`.
    #[arg(long, conflicts_with_all = ["json", "csv", "rate_steps"])]
    json_stream: bool,
    /// Serve the run's figures at http://ADDR/metrics in Prometheus' text
    /// format while it runs (sent, received, unanswered, the RTT as a
    /// summary in seconds; updated every interval, -i), e.g.
    /// 127.0.0.1:9465 (port 0 picks one, said on standard error).
    #[arg(long, value_name = "ADDR", value_parser = crate::common::parse_addr,
          conflicts_with = "rate_steps")]
    metrics: Option<std::net::SocketAddr>,
    /// Errors only on standard error: no live lines, warnings or hints
    /// (with --json they are in the result's `warnings`).
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub(crate) fn load(a: LoadArgs) -> Result<(), Failure> {
    let mut o = a.opts.clone();
    o.resolve().map_err(usage)?;
    if o.one_way() {
        // Nothing comes back: no RTT to write or bound, and loss is the
        // sink's to count (a --max-loss here would pass whatever was lost).
        let meaningless = [
            ("--hist-out", a.hist_out.is_some()),
            ("--hist-log", a.hist_log.is_some()),
            ("--plot", a.plot.is_some()),
            // Its knee is the highest step within a loss or p99 bound.
            ("--rate-steps", a.rate_steps.is_some()),
        ]
        .into_iter()
        .chain(a.limits.given())
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect::<Vec<_>>();
        if !meaningless.is_empty() {
            return Err(usage(format!(
                "--match none is one-way: nothing comes back to measure, so {} {} nothing \
                 (what arrived and was lost is the sink's to count: `udpring sink`)",
                meaningless.join(" and "),
                if meaningless.len() == 1 {
                    "means"
                } else {
                    "mean"
                }
            )));
        }
    }
    if a.limits.bounds_unexpected() && o.expect.is_empty() {
        return Err(usage(
            "--max-unexpected bounds the answers --expect finds without its bytes: give \
             --expect OFFSET:HEX (or OFFSET:HEX/MASK, any:HEX)",
        ));
    }
    if let Some((i, n)) = a.shard {
        crate::fleet::shard(&mut o, i, n)?;
    }
    if let Some(rates) = &a.rate_steps {
        if o.sizes.len() > 1 || a.hist_out.is_some() || o.mode == Mode::Ping || o.count.is_some() {
            return Err(usage(
                "--rate-steps runs paced steps of one size for --step-duration each: not with \
                 a size list, --hist-out, --mode ping or --count",
            ));
        }
        o.duration = Some(a.step_duration);
        udpring::signals::install().map_err(runtime)?;
        return steps::run(&o, &rates.0, a.json, a.quiet, &a.limits);
    }
    // Every size's options, checked before the first run.
    let sizes = if o.sizes.is_empty() {
        vec![o.size]
    } else {
        o.sizes.clone()
    };
    let runs: Vec<LoadOpts> = sizes
        .iter()
        .map(|&size| o.with_size(size))
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
    let hist_out = a.hist_out.as_deref().map(OutFile::checked).transpose()?;
    for p in [&a.plot, &a.html].into_iter().flatten() {
        OutFile::check(p)?;
    }
    if runs.len() > 1
        && (a.hist_log.is_some()
            || a.csv
            || a.json_stream
            || a.metrics.is_some()
            || a.html.is_some())
    {
        return Err(usage(
            "--hist-log, --csv, --json-stream, --metrics and --html follow one run: give one --size",
        ));
    }
    if let Some(t) = a.start_at {
        // Measuring begins after the warm-up: start that much earlier.
        crate::fleet::wait_until(t, runs[0].warmup())?;
    }
    if runs.len() == 1 {
        let mut log = a
            .hist_log
            .as_deref()
            .map(|p| crate::histlog::HistLog::create(p, runs[0].warmup()))
            .transpose()?;
        let (csv, quiet, stream) = (a.csv, a.quiet, a.json_stream);
        let snapshot = std::sync::Arc::new(std::sync::Mutex::new(
            crate::metrics::LoadSnapshot::default(),
        ));
        if let Some(addr) = a.metrics {
            let (s, target) = (snapshot.clone(), runs[0].target.to_string());
            let body: crate::metrics::Body = std::sync::Arc::new(move || {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .prometheus(&target)
            });
            let bound = crate::metrics::serve(addr, body)?;
            if !quiet {
                note!("udpring: metrics on http://{bound}/metrics");
            }
        }
        if csv {
            say!("{}", crate::apps::load::Progress::CSV_HEADER);
        }
        let began = std::time::SystemTime::now() + runs[0].warmup();
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
            }
            if stream {
                crate::common::say_json("load", None, p.event());
            }
            if a.metrics.is_some() {
                snapshot.lock().unwrap_or_else(|e| e.into_inner()).update(p);
            }
            if !csv && !quiet {
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
        let mut report = report;
        // When measuring began, on the wall clock: a result can be placed
        // in time (and beside other generators') without --start-at.
        report.start_unix_s = began
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        if let Some(t) = a.start_at {
            crate::fleet::mark_start(&mut report, t, began);
        }
        if let Some(svg) = &a.plot {
            let h = report.histogram.to_histogram().map_err(usage)?;
            let title = "udpring load: round-trip time";
            let label = format!("{} B {}", report.size, report.mode);
            let about = crate::plot::about(&report);
            crate::plot::plot(svg, title, &about, &[(label, &h)], Some(&points))?;
        }
        if let Some(page) = &a.html {
            let name = format!("{} B {}", report.size, report.mode);
            crate::html::write(page, "udpring load", &[(name, &report)], Some(&points))?;
        }
        let advice = crate::verdict::advice(&report, &runs[0]);
        report.warnings.extend(advice);
        if !quiet {
            for w in &report.warnings {
                note!("udpring: {w}");
            }
        }
        if csv {
            note_raw!("{}", report.table());
            if let Some(h) = hist_out {
                print_report(&report, false, Some(h))?;
            }
        } else if stream {
            if let Some(out) = hist_out {
                let text = report
                    .percentile_text()
                    .map_err(|e| Failure { code: 1, msg: e })?;
                out.write(&text)?;
            }
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            v["event"] = "end".into();
            crate::common::say_json(&report.command, None, v);
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
        let mut report = run_one(x, &mut |p| {
            if !a.quiet {
                note!("{}", p.line());
            }
        })?;
        let advice = crate::verdict::advice(&report, x);
        report.warnings.extend(advice);
        if !a.quiet {
            for w in &report.warnings {
                note!("udpring: size {} B: {w}", x.size);
            }
        }
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
        crate::common::spawn_scoped(s, "udpring-stop", || {
            while !done.load(Ordering::Relaxed) {
                if crate::common::stop_requested() {
                    cancel.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .map_err(runtime)?;
        let _done = Done(&done);
        crate::apps::load::run_load(o, &cancel, live).map_err(runtime)
    })
}

/// A file written at the end of a run (`--hist-out`). Checked when the
/// run starts, so that one that cannot be written fails then, not after the
/// run; written (created or replaced) only when there is something to put
/// in it, so a run that fails before leaves what was there, and no empty
/// file.
pub(crate) struct OutFile {
    path: std::path::PathBuf,
}

impl OutFile {
    pub(crate) fn checked(path: &std::path::Path) -> Result<OutFile, Failure> {
        OutFile::check(path)?;
        Ok(OutFile {
            path: path.to_path_buf(),
        })
    }

    /// Checks that a file written at the end of the run (`--plot`,
    /// `--html`) can be: opened for writing now (not truncated), and
    /// removed again if it was not there.
    pub(crate) fn check(path: &std::path::Path) -> Result<(), Failure> {
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| usage(format!("{}: cannot write here: {e}", path.display())))?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn write(self, text: &str) -> Result<(), Failure> {
        std::fs::write(&self.path, text).map_err(|e| Failure {
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
