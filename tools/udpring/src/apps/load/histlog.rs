//! Reading HdrHistogram interval logs (`load --hist-log`, or any tool's),
//! and merging several by time: generators on many hosts, one timeline.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use super::report::new_histogram;

/// One interval of a log: when it began (Unix seconds, from the log's
/// BaseTime or StartTime), how long it lasted, and its histogram as
/// checked V2 bytes ([`checked_v2`]): decoded only when merged, so what a
/// log holds in memory is bounded by its size.
#[derive(Debug)]
pub struct Interval {
    /// Start, Unix seconds.
    pub start_unix_s: f64,
    /// Length, seconds.
    pub length_s: f64,
    /// The histogram, V2-encoded.
    encoded: Vec<u8>,
}

/// One slot of a merged timeline: its start, its length, and what the
/// intervals that began in it recorded.
#[derive(Debug)]
pub struct Slot {
    /// Start, Unix seconds.
    pub start_unix_s: f64,
    /// Length, seconds.
    pub length_s: f64,
    /// Values recorded.
    pub received: u64,
    /// Their percentiles, µs (`None`: none recorded).
    pub rtt_us: Option<super::report::RttUs>,
}

/// Decodes a checked encoding into the load histograms' bounds.
fn decode(d: &mut Deserializer, encoded: &[u8]) -> Result<Histogram<u64>, String> {
    let h: Histogram<u64> = d
        .deserialize(&mut &encoded[..])
        .map_err(|e| format!("{e:?}"))?;
    let mut mine = new_histogram();
    super::report::add_checked(&mut mine, &h)?;
    Ok(mine)
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

/// The V2 encodings' cookies (HdrHistogram's, with the word size 8).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// A V2 header: cookie, payload length, normalizing offset, digits,
/// lowest, highest, integer-to-double ratio.
const V2_HEADER: usize = 40;
/// Most bytes a compressed histogram may inflate to. A histogram of the
/// widest bounds at 3 significant digits encodes in about 500 KB of counts
/// at most; a zlib bomb stops here.
pub const MAX_INFLATED: usize = 1 << 20;
/// Most counts a histogram may need for its bounds (16 MiB of u64): a
/// header asking for more is refused before anything is allocated.
pub const MAX_COUNTS: u64 = 1 << 21;

/// The counts array HdrHistogram allocates for these bounds (its own
/// arithmetic), or `None` when the bounds are not valid at all.
fn counts_len(low: u64, high: u64, digits: u32) -> Option<u64> {
    if low == 0 || digits > 5 || high < low.checked_mul(2)? {
        return None;
    }
    let largest = 2 * 10u64.pow(digits);
    let sub_mag = 64 - (largest - 1).leading_zeros(); // ceil(log2(largest))
    let sub_count = 1u64 << sub_mag;
    let unit_mag = 63 - low.leading_zeros();
    if unit_mag + sub_mag > 63 {
        return None;
    }
    let mut smallest_untrackable = sub_count << unit_mag;
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    Some((buckets + 1) * (sub_count / 2))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// An encoded histogram checked before the decoder sees it, so that what
/// it allocates is bounded by what the bytes hold: a V2 header whose
/// payload fits in the bytes left and whose bounds need at most
/// [`MAX_COUNTS`] counts; a compressed one inflated here to at most
/// [`MAX_INFLATED`] bytes and checked the same way. Returns the V2
/// (uncompressed) encoding.
pub fn checked_v2(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < 8 {
        return Err("an encoded histogram of under 8 bytes".into());
    }
    match be32(bytes, 0) {
        V2_COOKIE => {
            if bytes.len() < V2_HEADER {
                return Err(format!("a V2 header of {} bytes (needs 40)", bytes.len()));
            }
            let payload = be32(bytes, 4) as usize;
            let left = bytes.len() - V2_HEADER;
            if payload > left {
                return Err(format!(
                    "the header says {payload} bytes of counts; {left} follow"
                ));
            }
            let (digits, low, high) = (be32(bytes, 12), be64(bytes, 16), be64(bytes, 24));
            match counts_len(low, high, digits) {
                None => Err(format!(
                    "bounds {low}..{high} at {digits} digits are not a histogram's"
                )),
                Some(n) if n > MAX_COUNTS => Err(format!(
                    "bounds {low}..{high} at {digits} digits need {n} counts; at most \
                     {MAX_COUNTS} are read"
                )),
                Some(_) => Ok(bytes[..V2_HEADER + payload].to_vec()),
            }
        }
        V2_COMPRESSED_COOKIE => {
            use std::io::Read;
            let len = be32(bytes, 4) as usize;
            let zipped = bytes.get(8..8 + len).ok_or_else(|| {
                format!(
                    "{len} compressed bytes announced, {} follow",
                    bytes.len() - 8
                )
            })?;
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(zipped)
                .take(MAX_INFLATED as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| format!("not zlib: {e}"))?;
            if inflated.len() > MAX_INFLATED {
                return Err(format!("inflates past {MAX_INFLATED} bytes"));
            }
            if inflated.get(..4).map(|c| be32(c, 0)) != Some(V2_COOKIE) {
                return Err("the compressed histogram is not a V2 encoding".into());
            }
            checked_v2(&inflated)
        }
        c => Err(format!("cookie {c:#x}: not a V2 histogram encoding")),
    }
}

/// Every interval of a log. Values must fit the load histograms (1 ns to
/// 60 s); a log without a BaseTime or StartTime counts from 0. What it
/// allocates is bounded by the log's size ([`checked_v2`]).
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
                    .and_then(|b| checked_v2(&b))
                    .map_err(|e| format!("interval {}: {e}", out.len() + 1))?;
                // Decoded once here to say what is wrong where, then dropped.
                decode(&mut d, &bytes).map_err(|e| format!("interval {}: {e}", out.len() + 1))?;
                out.push(Interval {
                    start_unix_s: base.or(start).unwrap_or(0.0) + i.start_timestamp().as_secs_f64(),
                    length_s: i.duration().as_secs_f64(),
                    encoded: bytes,
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
/// The slots are filled in time order, one at a time, so that memory holds
/// two histograms whatever the logs' length: the slot being filled and
/// the total, which comes back beside the slots' summaries.
pub fn merge_by_time(
    logs: Vec<Vec<Interval>>,
    step: f64,
) -> Result<(Vec<Slot>, Histogram<u64>), String> {
    let mut all: Vec<Interval> = logs.into_iter().flatten().collect();
    all.sort_by(|a, b| a.start_unix_s.total_cmp(&b.start_unix_s));
    let t0 = all.first().map_or(0.0, |i| i.start_unix_s);
    let step = if step > 0.0 { step } else { 1.0 };
    let mut d = Deserializer::new();
    let mut total = new_histogram();
    let mut slots = Vec::new();
    let mut cur: Option<(u64, Histogram<u64>)> = None;
    let close = |k: u64, h: &Histogram<u64>, slots: &mut Vec<Slot>| {
        slots.push(Slot {
            start_unix_s: t0 + k as f64 * step,
            length_s: step,
            received: h.len(),
            rtt_us: super::report::RttUs::from_histogram(h),
        });
    };
    for i in all {
        let k = ((i.start_unix_s - t0) / step).floor().max(0.0) as u64;
        let h = decode(&mut d, &i.encoded)?;
        // A slot holds at most what the total does: the total's check
        // bounds both.
        super::report::add_checked(&mut total, &h)?;
        match &mut cur {
            Some((ck, ch)) if *ck == k => {
                let _ = ch.add(&h);
            }
            _ => {
                if let Some((ck, ch)) = cur.take() {
                    close(ck, &ch, &mut slots);
                }
                cur = Some((k, h.clone()));
            }
        }
    }
    if let Some((ck, ch)) = cur {
        close(ck, &ch, &mut slots);
    }
    Ok((slots, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};

    fn v2(h: &Histogram<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        V2Serializer::new().serialize(h, &mut out).unwrap();
        out
    }

    #[test]
    fn a_real_histogram_passes_both_encodings() {
        let mut h = new_histogram();
        for v in [1u64, 900, 1_000_000, 59_000_000_000] {
            h.record(v).unwrap();
        }
        let plain = v2(&h);
        assert_eq!(checked_v2(&plain).unwrap(), plain);
        let mut zipped = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&h, &mut zipped)
            .unwrap();
        assert_eq!(checked_v2(&zipped).unwrap(), plain);
    }

    #[test]
    fn a_header_cannot_ask_for_more_than_the_bytes_hold() {
        let mut h = new_histogram();
        h.record(5).unwrap();
        let mut b = v2(&h);
        b[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(checked_v2(&b).unwrap_err().contains("follow"));
        // Bounds that would need hundreds of MB of counts.
        let mut wide = v2(&h);
        wide[12..16].copy_from_slice(&5u32.to_be_bytes());
        wide[24..32].copy_from_slice(&(u64::MAX / 2).to_be_bytes());
        assert!(
            checked_v2(&wide).unwrap_err().contains("counts"),
            "{:?}",
            checked_v2(&wide)
        );
    }

    #[test]
    fn counts_no_run_could_hold_are_refused_not_summed_into_a_panic() {
        // Found by the fuzzer: intervals whose counts sum past 2^64 made
        // HdrHistogram's percentile scan overflow (a panic; in a release
        // build a wrapped sum). Anything above 2^62 in all is refused:
        // here two intervals of 3 * 2^60 each.
        use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
        use std::time::Duration;
        let mut h = new_histogram();
        h.record_n(1000, 3 << 60).unwrap();
        let mut log = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .begin_log_with(&mut log, &mut ser)
                .unwrap();
            for t in 0..2 {
                w.write_histogram(&h, Duration::from_secs(t), Duration::from_secs(1), None)
                    .unwrap();
            }
        }
        let intervals = read(&log).unwrap();
        let e = merge_by_time(vec![intervals], 1.0).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // Under the bound, the same log merges.
        let mut ok = new_histogram();
        ok.record_n(1000, 1 << 40).unwrap();
        let mut log = Vec::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .begin_log_with(&mut log, &mut ser)
                .unwrap();
            for t in 0..2 {
                w.write_histogram(&ok, Duration::from_secs(t), Duration::from_secs(1), None)
                    .unwrap();
            }
        }
        let (slots, total) = merge_by_time(vec![read(&log).unwrap()], 1.0).unwrap();
        assert_eq!((slots.len(), total.len()), (2, 2 << 40));
        assert!(super::super::report::RttUs::from_histogram(&total).is_some());
    }

    #[test]
    fn a_zlib_bomb_stops_at_the_cap() {
        use std::io::Write;
        // A V2 cookie, then 64 MiB of zeros: a few KB compressed.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&V2_COOKIE.to_be_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
        let body = z.finish().unwrap();
        let mut b = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        b.extend_from_slice(&(body.len() as u32).to_be_bytes());
        b.extend_from_slice(&body);
        assert!(checked_v2(&b).unwrap_err().contains("inflates past"));
    }

    #[test]
    fn counts_follow_hdrhistograms_own_arithmetic() {
        for (low, high, d) in [
            (1, 60_000_000_000, 3),
            (1, 2, 0),
            (1000, 3_600_000_000, 2),
            (1, u64::MAX, 3),
        ] {
            let h = Histogram::<u64>::new_with_bounds(low, high, d as u8).unwrap();
            assert_eq!(
                counts_len(low, high, d),
                Some(h.distinct_values() as u64),
                "{low} {high} {d}"
            );
        }
    }
}
