//! Poisson arrivals for a paced run (`--arrivals poisson`): sends spaced
//! as requests from many independent clients arrive, with independent
//! exponential gaps of mean 1/rate, instead of one every 1/rate.
//!
//! A worker's schedule is cut into spans of [`SPAN`] sends, each exactly
//! `SPAN` / rate long; inside a span the sends fall where a Poisson
//! process puts `SPAN` arrivals given that it puts that many there: at
//! `SPAN` uniform points, sorted, made from `SPAN + 1` exponential gaps
//! scaled to the span (their partial sums over their total). So the gaps
//! are exponential (up to the span's edges), the rate holds to the send
//! at every span's end, and the schedule is a function of the send's
//! index: any send's due time can be asked (the late-run cut counts what
//! was due before a time), a span drawn from a seed and its number.

/// Sends per span.
pub const SPAN: u64 = 1024;

/// One worker's Poisson schedule.
pub struct Poisson {
    /// The mean gap, ns.
    interval_ns: f64,
    seed: u64,
    /// The span whose offsets are in `at`.
    span: Option<u64>,
    /// Each send of that span: ns after the span's start.
    at: Vec<u64>,
    /// The span's gaps summed so far, as it is drawn.
    sums: Vec<f64>,
}

impl Poisson {
    /// A schedule of mean gap `interval_ns`, drawn from `seed`.
    pub fn new(interval_ns: f64, seed: u64) -> Self {
        Poisson {
            interval_ns,
            seed,
            span: None,
            at: Vec::with_capacity(SPAN as usize),
            sums: Vec::with_capacity(SPAN as usize + 1),
        }
    }

    /// When send `i` is due: ns after the schedule's start. Never earlier
    /// than send `i - 1`.
    pub fn due(&mut self, i: u64) -> u64 {
        let span = i / SPAN;
        if self.span != Some(span) {
            self.draw(span);
        }
        let start = (span as f64 * SPAN as f64 * self.interval_ns) as u64;
        start + self.at[(i % SPAN) as usize]
    }

    fn draw(&mut self, span: u64) {
        let len = SPAN as f64 * self.interval_ns;
        let key = self.seed ^ span.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let gap = |k: u64| {
            // A uniform in (0, 1] from 53 bits, then -ln: an exponential.
            let u = ((splitmix(key.wrapping_add(k)) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            -u.ln()
        };
        self.sums.clear();
        let mut sum = 0.0;
        for k in 0..=SPAN {
            sum += gap(k);
            self.sums.push(sum);
        }
        // Below `len`: the last gap (k = SPAN) is in the total alone.
        let at = self.sums[..SPAN as usize]
            .iter()
            .map(|s| (s / sum * len) as u64);
        self.at.clear();
        self.at.extend(at);
        self.span = Some(span);
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaps of a long schedule at 10k/s: never negative, exactly SPAN
    /// per span, mean 1/rate, and spread as an exponential's (standard
    /// deviation equal to the mean, a tenth of the gaps longer than
    /// ln(10) means), not evenly.
    #[test]
    fn gaps_are_exponential_and_the_rate_holds() {
        let interval = 100_000.0; // ns: 10,000/s
        let mut p = Poisson::new(interval, 7);
        let n = 50 * SPAN;
        let due: Vec<u64> = (0..n).map(|i| p.due(i)).collect();
        assert!(due.windows(2).all(|w| w[0] <= w[1]), "never earlier");
        for s in 1..50 {
            let end = (s as f64 * SPAN as f64 * interval) as u64;
            let first_of_next = due[(s * SPAN) as usize];
            let last = due[(s * SPAN - 1) as usize];
            assert!(last < end && end <= first_of_next, "span {s}");
        }
        let gaps: Vec<f64> = due.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((mean / interval - 1.0).abs() < 0.01, "mean {mean}");
        assert!((sd / mean - 1.0).abs() < 0.05, "sd {sd}, mean {mean}");
        let long = gaps.iter().filter(|&&g| g > mean * 10f64.ln()).count();
        let share = long as f64 / gaps.len() as f64;
        assert!((share - 0.1).abs() < 0.01, "{share}");
    }

    /// A send's due time does not depend on which were asked before (the
    /// late-run cut asks out of order); another seed is another schedule.
    #[test]
    fn a_due_time_is_a_function_of_the_index() {
        let mut a = Poisson::new(1000.0, 1);
        let mut b = Poisson::new(1000.0, 1);
        let forward: Vec<u64> = (0..3 * SPAN).map(|i| a.due(i)).collect();
        for i in (0..3 * SPAN).rev().step_by(97) {
            assert_eq!(b.due(i), forward[i as usize]);
        }
        let mut c = Poisson::new(1000.0, 2);
        assert_ne!(c.due(5), forward[5]);
    }
}
