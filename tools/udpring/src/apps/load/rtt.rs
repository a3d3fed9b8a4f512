//! Round-trip times in a report: percentiles in microseconds ([`RttUs`])
//! and the whole histogram, exactly, for merging ([`HistogramData`]), with
//! the bound on what a merge may hold.

use hdrhistogram::Histogram;

use crate::apps::histogram::new_histogram;

/// Percentiles of RTT in microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RttUs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
}

impl RttUs {
    /// From a histogram in nanoseconds; `None` when it is empty (no
    /// figure rather than a 0.0 that reads as a measurement).
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Some(RttUs {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max() as f64 / 1000.0,
            min: h.min() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        })
    }
}

/// A histogram as JSON: every recorded bucket as `[value_ns, count]`.
/// Recording each value `count` times rebuilds the same histogram, so
/// results from many processes merge exactly.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistogramData {
    /// Always "ns".
    pub unit: String,
    /// Significant digits of the buckets.
    pub sigfig: u8,
    /// `[value, count]` per non-empty bucket.
    pub counts: Vec<(u64, u64)>,
}

impl HistogramData {
    /// Encodes `h`.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        HistogramData {
            unit: "ns".into(),
            sigfig: 3,
            counts: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }
    /// Decodes into a histogram.
    pub fn to_histogram(&self) -> Result<Histogram<u64>, String> {
        if self.unit != "ns" || self.sigfig != 3 {
            return Err(format!(
                "histogram in {} with {} digits: expected ns, 3",
                self.unit, self.sigfig
            ));
        }
        let total = self
            .counts
            .iter()
            .try_fold(0u64, |a, &(_, c)| a.checked_add(c));
        if total.is_none_or(|t| t > MAX_HIST_TOTAL) {
            return Err(too_many());
        }
        let mut h = new_histogram();
        for &(v, c) in &self.counts {
            h.record_n(v, c)
                .map_err(|e| format!("histogram value {v}: {e:?}"))?;
        }
        Ok(h)
    }
}

/// Most round trips one histogram may hold, alone or merged: 2^62, far
/// above any run (146 years at a billion a second) and low enough that
/// no sum of counts overflows (HdrHistogram adds counts unchecked when it
/// reads a percentile: a forged log or result made `report` panic).
pub const MAX_HIST_TOTAL: u64 = 1 << 62;

fn too_many() -> String {
    format!("a histogram would hold more than {MAX_HIST_TOTAL} round trips: not a run's")
}

/// `h`'s total count, refused above [`MAX_HIST_TOTAL`].
pub fn checked_total(h: &Histogram<u64>) -> Result<u64, String> {
    h.iter_recorded()
        .try_fold(0u64, |a, v| a.checked_add(v.count_at_value()))
        .filter(|&n| n <= MAX_HIST_TOTAL)
        .ok_or_else(too_many)
}

/// Adds `h` into `into`, refused when together they would hold more than
/// [`MAX_HIST_TOTAL`].
pub fn add_checked(into: &mut Histogram<u64>, h: &Histogram<u64>) -> Result<(), String> {
    let n = checked_total(h)?;
    if into.len().checked_add(n).is_none_or(|t| t > MAX_HIST_TOTAL) {
        return Err(too_many());
    }
    into.add(h).map_err(|e| format!("{e:?}"))
}
