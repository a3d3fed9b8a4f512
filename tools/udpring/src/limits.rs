//! `load`'s pass/fail thresholds, for CI.

use std::time::Duration;

use clap::Args;

/// Pass/fail thresholds for CI: a run over any exits 1, the line saying
/// which.
#[derive(Args, Clone, Default)]
pub(crate) struct Limits {
    /// Fail (exit 1) when more than PCT percent of what was sent was lost.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    max_loss: Option<f64>,
    /// Fail (exit 1) when the 99th percentile RTT is above this: 2ms,
    /// 500us, 0.002 (seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_latency)]
    max_p99: Option<Duration>,
    /// Fail (exit 1) when the 99.9th percentile RTT is above this.
    #[arg(long, value_name = "DURATION", value_parser = parse_latency)]
    max_p999: Option<Duration>,
    /// Fail (exit 1) when more than PCT percent of the answers did not
    /// carry the --expect bytes (`unexpected`: errors, misses). With
    /// --rate-steps, a step over it is past the knee.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    max_unexpected: Option<f64>,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s} must be 0..100 percent"));
    }
    Ok(v)
}

/// A latency: a number with ns, us, ms or s, or bare seconds.
fn parse_latency(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|&(u, k)| t.strip_suffix(u).map(|n| (n, k)))
        .unwrap_or((t, 1.0));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (2ms, 500us, 0.002)"))?;
    let secs = v * scale;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{s} must be above 0 and at most an hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Limits {
    /// Each threshold's flag and whether it was given.
    pub(crate) fn given(&self) -> [(&'static str, bool); 4] {
        [
            ("--max-loss", self.max_loss.is_some()),
            ("--max-p99", self.max_p99.is_some()),
            ("--max-p999", self.max_p999.is_some()),
            ("--max-unexpected", self.max_unexpected.is_some()),
        ]
    }

    /// Whether `--max-unexpected` was given (it needs `--expect`).
    pub(crate) fn bounds_unexpected(&self) -> bool {
        self.max_unexpected.is_some()
    }

    /// The first threshold `r` is over, as the line to print.
    pub(crate) fn violated(&self, r: &crate::apps::load::LoadReport) -> Option<String> {
        if let Some(max) = self.max_loss
            && r.counts.sent > 0
        {
            let pct = 100.0 * r.lost as f64 / r.counts.sent as f64;
            if pct > max {
                return Some(format!(
                    "loss {pct:.3}% ({} of {}) is over --max-loss {max}%",
                    r.lost, r.counts.sent
                ));
            }
        }
        if let Some(max) = self.max_unexpected
            && r.counts.received > 0
        {
            let c = &r.counts;
            let pct = 100.0 * c.unexpected as f64 / c.received as f64;
            if pct > max {
                return Some(format!(
                    "unexpected answers {pct:.3}% ({} of {}) are over --max-unexpected {max}%",
                    c.unexpected, c.received
                ));
            }
        }
        for (name, max, got) in [
            ("--max-p99", self.max_p99, r.rtt_us.as_ref().map(|x| x.p99)),
            (
                "--max-p999",
                self.max_p999,
                r.rtt_us.as_ref().map(|x| x.p999),
            ),
        ] {
            let Some(max) = max else { continue };
            let max_us = max.as_secs_f64() * 1e6;
            match got {
                Some(v) if v > max_us => {
                    return Some(format!(
                        "{} {v:.1} us is over {name} {max_us:.1} us",
                        &name[6..]
                    ));
                }
                None => return Some(format!("no RTT measured: {name} cannot be met")),
                _ => {}
            }
        }
        None
    }

    /// These limits, or, when none is set, a loss limit of `pct`.
    pub(crate) fn or_default_loss(&self, pct: f64) -> Limits {
        let mut l = self.clone();
        if l.max_loss.is_none() && l.max_p99.is_none() && l.max_p999.is_none() {
            l.max_loss = Some(pct);
        }
        l
    }

    /// The limits in words: `loss <= 1%, p99 <= 2000 us`.
    pub(crate) fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(x) = self.max_loss {
            v.push(format!("loss <= {x}%"));
        }
        if let Some(x) = self.max_p99 {
            v.push(format!("p99 <= {:.0} us", x.as_secs_f64() * 1e6));
        }
        if let Some(x) = self.max_p999 {
            v.push(format!("p99.9 <= {:.0} us", x.as_secs_f64() * 1e6));
        }
        if let Some(x) = self.max_unexpected {
            v.push(format!("unexpected <= {x}%"));
        }
        v.join(", ")
    }
}
