//! The one histogram every latency figure of the command is kept in.

use hdrhistogram::Histogram;

/// A new RTT histogram: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}
