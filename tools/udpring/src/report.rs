//! `udpring report`: merge results, or compare two.

use clap::Args;

use crate::common::{Failure, usage};
use crate::load::{OutFile, print_report};

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Result files from `udpring load --json`, merged into one (runs made
    /// at the same time, e.g. from several hosts: counts and rates add up).
    /// A pipe is read too: `<(ssh host cat result.json)`, or `-` for
    /// standard input (`udpring load ... --json | udpring report -`).
    #[arg(required_unless_present = "diff")]
    files: Vec<std::path::PathBuf>,
    /// Compare two results instead: each figure of A and B side by side,
    /// with the change from A to B.
    #[arg(long, num_args = 2, value_names = ["A", "B"],
          conflicts_with_all = ["files", "hist_out", "allow_duplicates", "allow_mixed"])]
    diff: Option<Vec<std::path::PathBuf>>,
    /// Merge a result whose run token is already in another file (the same
    /// run would count twice), or with --interval-logs a log identical to
    /// another; refused by default.
    #[arg(long)]
    allow_duplicates: bool,
    /// Merge results of different modes, sizes or targets into one RTT
    /// distribution; refused by default.
    #[arg(long)]
    allow_mixed: bool,
    /// Print the merged result (or the diff) as JSON.
    #[arg(long)]
    json: bool,
    /// Write the merged RTT percentile distribution (.hgrm text, µs).
    #[arg(long)]
    hist_out: Option<std::path::PathBuf>,
    /// Draw each result's RTT percentile distribution as one curve of an
    /// SVG (before/after comparisons: give both files).
    #[arg(long, value_name = "FILE.svg", conflicts_with_all = ["diff", "interval_logs"])]
    plot: Option<std::path::PathBuf>,
    /// Write the results as one self-contained HTML page, side by side
    /// (one column and one curve each, not merged; no network fetches).
    #[arg(long, value_name = "FILE.html", conflicts_with_all = ["diff", "interval_logs"])]
    html: Option<std::path::PathBuf>,
    /// The files are HdrHistogram interval logs (`load --hist-log`, from
    /// many hosts): merge them on one timeline, slot by slot (--slot), and
    /// print each slot's count and percentiles, and the whole run's.
    #[arg(long, conflicts_with_all = ["diff", "hist_out", "allow_mixed"])]
    interval_logs: bool,
    /// With --interval-logs: seconds per slot of the merged timeline (the
    /// logs' own interval).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 1.0,
        requires = "interval_logs"
    )]
    slot: f64,
}

/// `report --interval-logs`: interval logs of many generators on one
/// timeline.
fn interval_logs(a: &ReportArgs, step: f64) -> Result<(), Failure> {
    use crate::apps::load::{RttUs, histlog};
    if !(step.is_finite() && (0.001..=3600.0).contains(&step)) {
        return Err(usage(format!("--slot {step}: a slot is 0.001..3600 s")));
    }
    let bufs = a
        .files
        .iter()
        .map(|f| crate::input::read_bounded(f, MAX_REPORT_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    // A log carries no run token: the same bytes twice are the same run,
    // whose every reply would count twice (two generators never log the
    // same intervals to the nanosecond).
    if !a.allow_duplicates
        && let Some((i, j)) = (0..bufs.len())
            .flat_map(|j| (0..j).map(move |i| (i, j)))
            .find(|&(i, j)| bufs[i] == bufs[j])
    {
        return Err(usage(format!(
            "{} and {} are the same log: merged, every reply would count twice \
             (--allow-duplicates merges them anyway)",
            a.files[i].display(),
            a.files[j].display()
        )));
    }
    let logs = bufs
        .iter()
        .zip(&a.files)
        .map(|(buf, f)| histlog::read(buf).map_err(|e| usage(format!("{}: {e}", f.display()))))
        .collect::<Result<Vec<_>, _>>()?;
    let (slots, total) = histlog::merge_by_time(logs, step).map_err(usage)?;
    let t0 = slots.first().map_or(0.0, |s| s.start_unix_s);
    if a.json {
        let rows: Vec<serde_json::Value> = slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "start_unix_s": s.start_unix_s, "duration_s": s.length_s,
                    "received": s.received, "rtt_us": s.rtt_us,
                })
            })
            .collect();
        crate::common::say_json(
            "report",
            None,
            serde_json::json!({
                "runs": a.files.len(), "received": total.len(),
                "rtt_us": RttUs::from_histogram(&total), "results": rows,
            }),
        );
        return Ok(());
    }
    say!(
        "{:>8} {:>10} {:>10} {:>10} {:>10}",
        "t s",
        "replies",
        "p50 us",
        "p99 us",
        "max us"
    );
    let row = |t: String, received: u64, r: Option<RttUs>| {
        let f = |g: fn(&RttUs) -> f64| r.as_ref().map_or("-".into(), |r| format!("{:.1}", g(r)));
        say!(
            "{t:>8} {received:>10} {:>10} {:>10} {:>10}",
            f(|r| r.p50),
            f(|r| r.p99),
            f(|r| r.max)
        );
    };
    for s in &slots {
        row(
            format!("{:.1}", s.start_unix_s - t0),
            s.received,
            s.rtt_us.clone(),
        );
    }
    row("all".into(), total.len(), RttUs::from_histogram(&total));
    Ok(())
}

/// Reads a schema-1 result as schema 2: its `counts` and `kernel` objects
/// (each quantity there also had a second name at the top level) become
/// top-level names, `kernel.drops` is `kernel_drops`.
fn upgrade_schema_1(v: &mut serde_json::Value) {
    let Some(top) = v.as_object_mut() else { return };
    for nested in ["counts", "kernel"] {
        if let Some(serde_json::Value::Object(m)) = top.remove(nested) {
            for (k, x) in m {
                let k = if k == "drops" {
                    "kernel_drops".into()
                } else {
                    k
                };
                top.entry(k).or_insert(x);
            }
        }
    }
    top.insert("schema".into(), crate::common::SCHEMA.into());
}

/// A file's name without its folders, for labels.
fn file_name(f: &std::path::Path) -> String {
    f.file_name().map_or(f.display().to_string(), |n| {
        n.to_string_lossy().into_owned()
    })
}

/// Largest result file `report` reads.
const MAX_REPORT_BYTES: u64 = 64 << 20;

/// Reads a result file (a regular file or a pipe: see `input`), at most
/// [`MAX_REPORT_BYTES`].
fn read_result(f: &std::path::Path) -> Result<crate::apps::load::LoadReport, Failure> {
    let buf = crate::input::read_bounded(f, MAX_REPORT_BYTES)?;
    let text = String::from_utf8_lossy(&buf);
    let not_ours = |e: String| {
        usage(format!(
            "{}: not a `udpring load --json` result: {e}",
            f.display()
        ))
    };
    if text.trim().is_empty() {
        // What `load --json > FILE` leaves when the run failed before its
        // result (the reason went to its standard error).
        return Err(not_ours(
            "the file is empty (a run that failed before its result writes none; its \
             standard error says why)"
                .into(),
        ));
    }
    let mut v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| not_ours(e.to_string()))?;
    // A document of another shape version is not read as this one.
    match v.get("schema").and_then(|s| s.as_u64()) {
        Some(crate::common::SCHEMA) => {}
        Some(1) => upgrade_schema_1(&mut v),
        Some(s) => {
            return Err(usage(format!(
                "{}: schema {s}: this udpring reads schema {} (a result of another version)",
                f.display(),
                crate::common::SCHEMA
            )));
        }
        None => return Err(not_ours("no schema".into())),
    }
    let r: crate::apps::load::LoadReport =
        serde_json::from_value(v).map_err(|e| not_ours(e.to_string()))?;
    r.check()
        .map_err(|e| usage(format!("{}: {e}", f.display())))?;
    Ok(r)
}

pub(crate) fn report(a: ReportArgs) -> Result<(), Failure> {
    if a.interval_logs {
        return interval_logs(&a, a.slot);
    }
    use crate::apps::load::LoadReport;
    if let Some(d) = &a.diff {
        let (x, y) = (read_result(&d[0])?, read_result(&d[1])?);
        let rows = crate::apps::load::diff(&x, &y);
        if a.json {
            let v = serde_json::json!({
                "files": [d[0].display().to_string(), d[1].display().to_string()],
                "diff": rows,
            });
            crate::common::say_json("report", None, v);
        } else {
            let name = |p: &std::path::Path| {
                p.file_name().map_or(p.display().to_string(), |n| {
                    n.to_string_lossy().into_owned()
                })
            };
            say_raw!(
                "{}",
                crate::apps::load::diff_text(&rows, &name(&d[0]), &name(&d[1]))
            );
        }
        return Ok(());
    }
    let hist_out = a.hist_out.as_deref().map(OutFile::checked).transpose()?;
    let reports = a
        .files
        .iter()
        .map(|f| read_result(f))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(page) = &a.html {
        let named: Vec<(String, &LoadReport)> =
            a.files.iter().map(|f| file_name(f)).zip(&reports).collect();
        crate::html::write(page, "udpring report", &named, None)?;
        if a.plot.is_none() {
            return Ok(());
        }
    }
    if let Some(svg) = &a.plot {
        // One curve per file: different runs side by side, not merged.
        let hists = reports
            .iter()
            .map(|r| r.histogram.to_histogram().map_err(usage))
            .collect::<Result<Vec<_>, _>>()?;
        let named: Vec<(String, &LoadReport)> =
            a.files.iter().map(|f| file_name(f)).zip(&reports).collect();
        let curves: Vec<(String, &hdrhistogram::Histogram<u64>)> = crate::plot::labels(&named)
            .into_iter()
            .zip(&hists)
            .collect();
        let about = format!(
            "{} results: {}",
            named.len(),
            named
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return crate::plot::plot(
            svg,
            "udpring report: round-trip time",
            &about,
            &curves,
            None,
        );
    }
    let names: Vec<String> = a.files.iter().map(|f| f.display().to_string()).collect();
    let named: Vec<(&str, &LoadReport)> = names.iter().map(String::as_str).zip(&reports).collect();
    if let Some(why) = crate::apps::load::merge_conflict(&named, a.allow_duplicates, a.allow_mixed)
    {
        return Err(usage(why));
    }
    let merged = LoadReport::merge(&reports).map_err(usage)?;
    merged.check().map_err(usage)?;
    print_report(&merged, a.json, hist_out)?;
    match &merged.invalid_because {
        // The merge measured the generators, not the target: exit 1.
        Some(why) if !merged.valid => Err(Failure {
            code: 1,
            msg: format!("the merged run is not valid: {why}"),
        }),
        _ => Ok(()),
    }
}
