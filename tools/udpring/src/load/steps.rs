//! `load --rate-steps START:END:STEP`: open-loop steps of rising rate, one
//! table row each, and the knee: the highest step whose loss and p99 stay
//! under `--max-loss` / `--max-p99` (1% loss when neither is given).

use crate::apps::load::{LoadOpts, LoadReport, Mode};

use crate::common::{Failure, parse_rate, usage};
use crate::limits::Limits;

/// Most steps one run takes.
const MAX_STEPS: usize = 100;

/// The rates of `--rate-steps`.
#[derive(Clone, Debug)]
pub(crate) struct Steps(pub(crate) Vec<f64>);

/// The rates of `START:END:STEP` (units allowed: 10k:100k:10k).
pub(crate) fn parse_steps(s: &str) -> Result<Steps, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [a, b, c] = parts[..] else {
        return Err(format!("'{s}' is not START:END:STEP (e.g. 10k:100k:10k)"));
    };
    let (start, end, step) = (parse_rate(a)?, parse_rate(b)?, parse_rate(c)?);
    if end < start {
        return Err(format!("'{s}': END is below START"));
    }
    let n = ((end - start) / step).floor() as usize + 1;
    if n > MAX_STEPS {
        return Err(format!("'{s}' is {n} steps; at most {MAX_STEPS}"));
    }
    Ok(Steps((0..n).map(|i| start + i as f64 * step).collect()))
}

/// Runs every step and prints the table (or, with `json`, one document
/// with every step's result and the knee). Exit 1 when no step meets the
/// thresholds.
pub(crate) fn run(
    base: &LoadOpts,
    rates: &[f64],
    json: bool,
    quiet: bool,
    limits: &Limits,
) -> Result<(), Failure> {
    let runs: Vec<LoadOpts> = rates
        .iter()
        .map(|&r| {
            let mut o = base.clone();
            o.mode = Mode::Rate(r);
            o.window = None;
            o.validate().map(|()| o)
        })
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let limits = limits.or_default_loss(1.0);
    let mut results: Vec<LoadReport> = Vec::new();
    let mut knee: Option<f64> = None;
    if !json {
        say!(
            "{:>12} {:>12} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}  {}",
            "offered/s",
            "achieved/s",
            "answered",
            "lost",
            "loss%",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "within"
        );
    }
    for (o, &rate) in runs.iter().zip(rates) {
        if crate::common::stop_requested() {
            break;
        }
        let r = super::run_one(o, &mut |p| {
            if !quiet {
                note!("{}", p.line());
            }
        })?;
        let ok = limits.violated(&r).is_none() && r.counts.received > 0;
        if ok {
            knee = Some(rate);
        }
        if !json {
            let us = |f: fn(&crate::apps::load::RttUs) -> f64| {
                r.rtt_us
                    .as_ref()
                    .map_or("-".into(), |x| format!("{:.1}", f(x)))
            };
            say!(
                "{:>12.0} {:>12.0} {:>10} {:>10} {:>8.3} {:>10} {:>10} {:>10}  {}",
                rate,
                r.pps_sent,
                r.counts.received,
                r.lost,
                if r.counts.sent > 0 {
                    100.0 * r.lost as f64 / r.counts.sent as f64
                } else {
                    0.0
                },
                us(|x| x.p50),
                us(|x| x.p99),
                us(|x| x.p999),
                if ok { "yes" } else { "no" }
            );
        }
        results.push(r);
    }
    if json {
        crate::common::say_json(
            "load",
            None,
            serde_json::json!({ "results": results, "knee_rate": knee }),
        );
    } else {
        match knee {
            Some(k) => say!(
                "knee: {k:.0}/s, the highest step within {}",
                limits.describe()
            ),
            None => say!("knee: none; no step stayed within {}", limits.describe()),
        }
    }
    match knee {
        Some(_) => Ok(()),
        None => Err(Failure {
            code: 1,
            msg: format!("no step stayed within {}", limits.describe()),
        }),
    }
}
