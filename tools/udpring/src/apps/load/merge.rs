//! Merging results of runs made at the same time (many processes or
//! hosts), and the rules that refuse a merge that would mislead.

use super::report::{HistogramData, LoadReport, RttUs};

impl LoadReport {
    /// How its sends were spaced (`arrivals`), `none` where not paced at
    /// a rate.
    pub fn spacing(&self) -> &str {
        self.arrivals.as_deref().unwrap_or("none")
    }

    /// What its answers were checked for (`expect`, joined by "and"),
    /// `none` where nothing.
    pub fn checks(&self) -> String {
        match self.expect.is_empty() {
            true => "none".into(),
            false => self.expect.join(" and "),
        }
    }

    /// Merges runs made at the same time (rates add up; the histogram is
    /// the exact union).
    pub fn merge(reports: &[LoadReport]) -> Result<LoadReport, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut out = first.clone();
        out.command = "report".into();
        // Stage percentiles do not add up without their histograms.
        if reports.len() > 1 {
            out.kernel_timestamps = None;
        }
        let mut hist = first.histogram.to_histogram()?;
        for r in &reports[1..] {
            out.run_tokens.extend(r.run_tokens.iter().cloned());
            for w in &r.warnings {
                if !out.warnings.contains(w) {
                    out.warnings.push(w.clone());
                }
            }
            out.saturated |= r.saturated;
            // Generators of one load: their rates add up.
            out.rate = match (out.rate, r.rate) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            out.schedule_lag_max_us = match (out.schedule_lag_max_us, r.schedule_lag_max_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            super::report::add_checked(&mut hist, &r.histogram.to_histogram()?)?;
            // Counts that do not fit are refused, not clamped: a merged
            // `sent` of 2^64-1 would read as a real count.
            out.runs = out
                .runs
                .checked_add(r.runs)
                .ok_or("runs: too many to count")?;
            for (name, field, add) in [
                ("sent", out.counts.sent, r.counts.sent),
                ("received", out.counts.received, r.counts.received),
                ("lost", out.lost, r.lost),
                ("reordered", out.counts.reordered, r.counts.reordered),
                ("duplicated", out.counts.duplicated, r.counts.duplicated),
                ("invalid", out.counts.invalid, r.counts.invalid),
                ("foreign", out.counts.foreign, r.counts.foreign),
                ("kernel_drops", out.kernel.drops, r.kernel.drops),
            ] {
                field.checked_add(add).ok_or_else(|| {
                    format!(
                        "{name}: the results add up past {}, which no run counts",
                        u64::MAX
                    )
                })?;
            }
            out.lost += r.lost;
            out.host_udp.add(&r.host_udp);
            out.kernel.add(&r.kernel);
            out.counts.add(&r.counts);
            for (k, v) in &r.send_errors {
                let e = out.send_errors.entry(k.clone()).or_default();
                *e = e.saturating_add(*v);
            }
            out.pps_sent += r.pps_sent;
            out.pps_received += r.pps_received;
            out.gbps_received += r.gbps_received;
            out.gbps_sent += r.gbps_sent;
            out.flows = out.flows.saturating_add(r.flows);
            out.workers = out.workers.saturating_add(r.workers);
            out.duration_s = out.duration_s.max(r.duration_s);
            // Mixed (--allow-mixed): each name once, comma-separated.
            let join = |field: &mut String, other: &str| {
                if !field.split(',').any(|x| x == other) {
                    field.push(',');
                    field.push_str(other);
                }
            };
            join(&mut out.target, &r.target);
            join(&mut out.mode, &r.mode);
            join(&mut out.backend, &r.backend);
            if out.arrivals != r.arrivals {
                let mut spacing = out.spacing().to_string();
                join(&mut spacing, r.spacing());
                out.arrivals = Some(spacing);
            }
            if out.size != r.size {
                out.size = out.size.max(r.size);
            }
            // Mixed: every check once (`unexpected` adds up what each run
            // counted against its own).
            for e in &r.expect {
                if !out.expect.contains(e) {
                    out.expect.push(e.clone());
                }
            }
            for rr in &r.responders {
                match out.responders.iter_mut().find(|x| x.addr == rr.addr) {
                    Some(x) => {
                        let mut h = x.histogram.to_histogram()?;
                        h.add(rr.histogram.to_histogram()?)
                            .map_err(|e| format!("{e:?}"))?;
                        x.received = x.received.saturating_add(rr.received);
                        x.lost = x.lost.saturating_add(rr.lost);
                        x.duplicated = x.duplicated.saturating_add(rr.duplicated);
                        x.reordered = x.reordered.saturating_add(rr.reordered);
                        x.rtt_us = RttUs::from_histogram(&h);
                        x.histogram = HistogramData::from_histogram(&h);
                    }
                    None => out.responders.push(rr.clone()),
                }
            }
        }
        out.rtt_us = RttUs::from_histogram(&hist);
        out.histogram = HistogramData::from_histogram(&hist);
        let behind: Vec<String> = reports
            .iter()
            .enumerate()
            .filter(|(_, r)| r.saturated)
            .map(|(i, r)| {
                format!(
                    "result {} ({:.0}/s of {:.0}/s asked)",
                    i + 1,
                    r.pps_sent,
                    r.rate.unwrap_or(0.0)
                )
            })
            .collect();
        out.valid = behind.is_empty() && reports.iter().all(|r| r.valid);
        if !out.valid {
            out.invalid_because = Some(if behind.is_empty() {
                "a merged result was itself not valid".into()
            } else {
                format!(
                    "a generator could not keep its schedule: {}; the sum measures the \
                     generators, not the target",
                    behind.join(", ")
                )
            });
        }
        Ok(out)
    }
}

/// Why two results should not be merged: the same run twice, or two
/// different experiments (mode, spacing, size or target) whose RTTs would become one
/// distribution. `names` label the results in the message (file names).
/// `allow_duplicates` and `allow_mixed` waive each rule.
pub fn merge_conflict(
    reports: &[(&str, &LoadReport)],
    allow_duplicates: bool,
    allow_mixed: bool,
) -> Option<String> {
    for (i, (na, a)) in reports.iter().enumerate() {
        for (nb, b) in &reports[..i] {
            if !allow_duplicates
                && a.generator == b.generator
                && let Some(t) = a.run_tokens.iter().find(|t| b.run_tokens.contains(t))
            {
                return Some(format!(
                    "{na} and {nb} hold the same run (token {t}): merged, it would count \
                     twice (--allow-duplicates to merge anyway)"
                ));
            }
            if allow_mixed {
                continue;
            }
            for (what, x, y) in [
                ("mode", a.mode.as_str(), b.mode.as_str()),
                ("arrivals", a.spacing(), b.spacing()),
                ("expect", &a.checks(), &b.checks()),
                ("target", a.target.as_str(), b.target.as_str()),
                ("size", &a.size.to_string(), &b.size.to_string()),
            ] {
                if x != y {
                    return Some(format!(
                        "{na} has {what} {x} and {nb} {what} {y}: two experiments would \
                         make one RTT distribution (--allow-mixed to merge anyway)"
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs spaced evenly and at Poisson arrivals are two experiments:
    /// not merged unless asked, and then the merge names both.
    #[test]
    fn even_and_poisson_runs_are_not_merged_unless_mixed_is_allowed() {
        let run = |how: &str, token: &str| LoadReport {
            mode: "rate".into(),
            arrivals: Some(how.into()),
            run_tokens: vec![token.into()],
            ..LoadReport::default()
        };
        let (a, b) = (run("even", "1"), run("poisson", "2"));
        let why = merge_conflict(&[("a.json", &a), ("b.json", &b)], false, false).unwrap();
        assert!(
            why.contains("arrivals poisson and a.json arrivals even"),
            "{why}"
        );
        assert_eq!(
            merge_conflict(&[("a.json", &a), ("b.json", &b)], false, true),
            None
        );
        assert_eq!(
            merge_conflict(
                &[("a.json", &a), ("c.json", &run("even", "3"))],
                false,
                false
            ),
            None
        );
    }

    /// Runs that checked their answers for different bytes counted
    /// `unexpected` against different things: not merged unless asked,
    /// and then the merge lists every check once.
    #[test]
    fn runs_with_other_answer_checks_are_not_merged_unless_mixed_is_allowed() {
        let run = |expect: &[&str], token: &str| LoadReport {
            expect: expect.iter().map(|e| e.to_string()).collect(),
            run_tokens: vec![token.into()],
            counts: super::super::report::Counts {
                received: 10,
                unexpected: 2,
                ..Default::default()
            },
            histogram: HistogramData::from_histogram(&crate::apps::histogram::new_histogram()),
            ..LoadReport::default()
        };
        let (a, b) = (run(&["0:4f4b"], "1"), run(&[], "2"));
        let why = merge_conflict(&[("a.json", &a), ("b.json", &b)], false, false).unwrap();
        assert!(
            why.contains("expect none and a.json expect 0:4f4b"),
            "{why}"
        );
        let same = run(&["0:4f4b"], "3");
        assert_eq!(
            merge_conflict(&[("a.json", &a), ("c.json", &same)], false, false),
            None
        );
        let c = run(&["0:4f4b", "2:00"], "4");
        assert_eq!(
            merge_conflict(&[("a.json", &a), ("c.json", &c)], false, true),
            None
        );
        let m = LoadReport::merge(&[a, b, c]).unwrap();
        assert_eq!(m.expect, ["0:4f4b", "2:00"]);
        assert_eq!((m.counts.received, m.counts.unexpected), (30, 6));
    }
}
