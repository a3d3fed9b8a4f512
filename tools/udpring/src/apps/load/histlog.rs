//! Reading HdrHistogram interval logs (`load --hist-log`, or any tool's),
//! and merging several by time: generators on many hosts, one timeline.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use super::report::new_histogram;

/// One interval of a log: when it began (Unix seconds, from the log's
/// BaseTime or StartTime), how long it lasted, and its histogram.
#[derive(Debug)]
pub struct Interval {
    /// Start, Unix seconds.
    pub start_unix_s: f64,
    /// Length, seconds.
    pub length_s: f64,
    /// The values recorded in it.
    pub histogram: Histogram<u64>,
}

fn base64(s: &str) -> Result<Vec<u8>, String> {
    let val = |c: u8| -> Result<u32, String> {
        Ok(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("'{}' is not base64", c as char)),
        }))
    };
    let digits: Vec<u32> = s
        .bytes()
        .filter(|&c| c != b'=')
        .map(val)
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for c in digits.chunks(4) {
        if c.len() == 1 {
            return Err("base64 cut short".into());
        }
        let n = c.iter().fold(0u32, |a, &x| (a << 6) | x) << (6 * (4 - c.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..c.len()]);
    }
    Ok(out)
}

/// Every interval of a log. Values must fit the load histograms (1 ns to
/// 60 s); a log without a BaseTime or StartTime counts from 0.
pub fn read(log: &[u8]) -> Result<Vec<Interval>, String> {
    let mut base = None;
    let mut start = None;
    let mut out = Vec::new();
    let mut d = Deserializer::new();
    for (n, e) in IntervalLogIterator::new(log).enumerate() {
        match e.map_err(|e| format!("entry {}: {e:?}", n + 1))? {
            LogEntry::BaseTime(t) => base = Some(t.as_secs_f64()),
            LogEntry::StartTime(t) => start = Some(t.as_secs_f64()),
            LogEntry::Interval(i) => {
                let bytes = base64(i.encoded_histogram())
                    .map_err(|e| format!("interval {}: {e}", out.len() + 1))?;
                let h: Histogram<u64> = d
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| format!("interval {}: {e:?}", out.len() + 1))?;
                let mut mine = new_histogram();
                mine.add(&h)
                    .map_err(|e| format!("interval {}: {e:?}", out.len() + 1))?;
                out.push(Interval {
                    start_unix_s: base.or(start).unwrap_or(0.0) + i.start_timestamp().as_secs_f64(),
                    length_s: i.duration().as_secs_f64(),
                    histogram: mine,
                });
            }
        }
    }
    if out.is_empty() {
        return Err("no interval histogram in it".into());
    }
    Ok(out)
}

/// Intervals of many logs on one timeline: each goes into the slot of
/// `step` seconds (counted from the earliest start) its start falls in.
pub fn merge_by_time(logs: Vec<Vec<Interval>>, step: f64) -> Vec<Interval> {
    let t0 = logs
        .iter()
        .flatten()
        .map(|i| i.start_unix_s)
        .fold(f64::MAX, f64::min);
    let step = if step > 0.0 { step } else { 1.0 };
    let mut slots: std::collections::BTreeMap<u64, Interval> = Default::default();
    for i in logs.into_iter().flatten() {
        let k = ((i.start_unix_s - t0) / step).floor().max(0.0) as u64;
        let slot = slots.entry(k).or_insert_with(|| Interval {
            start_unix_s: t0 + k as f64 * step,
            length_s: step,
            histogram: new_histogram(),
        });
        let _ = slot.histogram.add(&i.histogram);
    }
    slots.into_values().collect()
}
