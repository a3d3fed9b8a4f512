//! A worker's timers: a min-heap of (due time, token).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Timers set by the handler, fired by the worker loop.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Timers {
    pub fn new() -> Self {
        Timers {
            heap: BinaryHeap::with_capacity(64),
        }
    }

    /// Fires `token` after `delay`.
    pub fn add(&mut self, delay: Duration, token: u64) {
        let at = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        self.heap.push(Reverse((at, token)));
    }

    /// Time until the next timer, if any.
    pub fn next(&self) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()))
    }

    /// Takes the next timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse((_, k))| k),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A time no timer reaches (a delay too long to add to `now`).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_order_and_huge_delays_do_not_panic() {
        let mut t = Timers::new();
        t.add(Duration::from_millis(2), 2);
        t.add(Duration::ZERO, 1);
        t.add(Duration::MAX, 9);
        let later = Instant::now() + Duration::from_millis(5);
        assert_eq!(t.pop_due(later), Some(1));
        assert_eq!(t.pop_due(later), Some(2));
        assert_eq!(t.pop_due(later), None);
        assert!(t.next().unwrap() > Duration::from_secs(86400));
    }
}
