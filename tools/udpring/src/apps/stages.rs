//! Where the time goes, from kernel timestamps: a histogram per stage of
//! a datagram's way (`load --kernel-timestamps`, `echo
//! --kernel-timestamps`), and their percentiles.
//!
//! Every time is `CLOCK_REALTIME` on one host: the kernel's software
//! stamps (`SO_TIMESTAMPNS` on receive, `SO_TIMESTAMPING` on send) and the
//! application's `SystemTime::now()`, so stages subtract without any
//! clock offset. A stage that comes out negative (a clock step between two
//! readings) is recorded as 0 ns and counted in `clock_steps`.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::histogram::new_histogram;

/// `CLOCK_REALTIME` now, nanoseconds since the epoch (the kernel's stamps'
/// clock).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Nanoseconds since the epoch of a kernel stamp.
pub fn ns_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One histogram per named stage.
#[derive(Clone, Debug)]
pub struct Stages {
    names: &'static [&'static str],
    hists: Vec<Histogram<u64>>,
    /// Datagrams whose stages could not all be read (a stamp that never
    /// came, or came for a request already replaced).
    pub missing: u64,
    /// Stages that came out negative (recorded as 0).
    pub clock_steps: u64,
}

impl Stages {
    /// Empty histograms for `names`.
    pub fn new(names: &'static [&'static str]) -> Self {
        Stages {
            names,
            hists: names.iter().map(|_| new_histogram()).collect(),
            missing: 0,
            clock_steps: 0,
        }
    }

    /// Records one datagram's way through the stages: `marks` are the
    /// times (ns) at each stage boundary, one more than there are stages.
    pub fn record(&mut self, marks: &[u64]) {
        debug_assert_eq!(marks.len(), self.names.len() + 1);
        for (h, w) in self.hists.iter_mut().zip(marks.windows(2)) {
            let d = match w[1].checked_sub(w[0]) {
                Some(d) => d,
                None => {
                    self.clock_steps += 1;
                    0
                }
            };
            // The histogram starts at 1 ns.
            h.saturating_record(d.max(1));
        }
    }

    /// Adds another worker's stages (same names).
    pub fn merge(&mut self, o: &Stages) {
        for (a, b) in self.hists.iter_mut().zip(&o.hists) {
            let _ = a.add(b);
        }
        self.missing += o.missing;
        self.clock_steps += o.clock_steps;
    }

    /// Datagrams recorded.
    pub fn samples(&self) -> u64 {
        self.hists.first().map_or(0, |h| h.len())
    }

    /// The percentiles of each stage.
    pub fn report(&self) -> KernelStages {
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        KernelStages {
            samples: self.samples(),
            missing: self.missing,
            clock_steps: self.clock_steps,
            stages: self
                .names
                .iter()
                .zip(&self.hists)
                .map(|(n, h)| StageUs {
                    stage: (*n).to_string(),
                    p50: us(h, 0.5),
                    p90: us(h, 0.9),
                    p99: us(h, 0.99),
                    p999: us(h, 0.999),
                    max: h.max() as f64 / 1000.0,
                    mean: h.mean() / 1000.0,
                })
                .collect(),
        }
    }
}

/// Where the time went, stage by stage (JSON `kernel_timestamps`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelStages {
    /// Datagrams with every stage known (each is in every stage).
    pub samples: u64,
    /// Datagrams measured without every stamp (not in the stages).
    pub missing: u64,
    /// Stages that came out negative (a clock step), recorded as 0.
    pub clock_steps: u64,
    /// The stages in the datagram's order.
    pub stages: Vec<StageUs>,
}

/// One stage's percentiles, microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageUs {
    /// Its name.
    pub stage: String,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl KernelStages {
    /// One line per stage, for people.
    pub fn text(&self) -> String {
        let mut s = format!(
            "kernel timestamps: {} datagrams ({} without every stamp)\n",
            self.samples, self.missing
        );
        for st in &self.stages {
            s.push_str(&format!(
                "  {:<16} p50 {:>8.1} us  p90 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1}  max {:>9.1}\n",
                st.stage, st.p50, st.p90, st.p99, st.p999, st.max
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_subtract_in_order_and_count_steps_back() {
        let mut s = Stages::new(&["a", "b"]);
        s.record(&[1_000, 3_000, 10_000]);
        s.record(&[1_000, 5_000, 4_000]);
        let r = s.report();
        assert_eq!(r.samples, 2);
        assert_eq!(r.clock_steps, 1);
        assert_eq!(r.stages[0].stage, "a");
        assert!((r.stages[0].max - 4.0).abs() < 0.01, "{:?}", r.stages[0]);
        assert!((r.stages[1].max - 7.0).abs() < 0.01, "{:?}", r.stages[1]);
        let mut t = Stages::new(&["a", "b"]);
        t.missing = 3;
        t.merge(&s);
        assert_eq!((t.samples(), t.missing), (2, 3));
    }
}
