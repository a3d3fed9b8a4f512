//! A worker's timers: one-shot and periodic, each with an id that cancels
//! it. A min-heap of (due time, id) with lazy deletion: a cancelled timer
//! stays in the heap until it comes due and is skipped then. Nothing is
//! allocated once the heap and the table have grown to the number of
//! timers a handler keeps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Names a timer, to cancel it ([`crate::Transport::cancel_timer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

struct Timer {
    token: u64,
    /// Periodic: fires again this long after it was due.
    every: Option<Duration>,
}

/// Hashes the ids, which this table hands out itself (1, 2, 3, ...; no
/// stranger picks them), with one multiply: SipHash's resistance to
/// chosen keys buys nothing here, and the loop looks an id up on every
/// iteration (PERF.md, the kv bench).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the table's index bits and its tag bits (the
        // top seven) both change with every id.
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Timers set by the handler, fired by the worker loop.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Timer, BuildHasherDefault<IdHasher>>,
    next_id: u64,
    /// The heap's top is live (or the heap is empty): known since the
    /// last look, so the loop's look per iteration does not repeat the
    /// lookup. Only a cancel or a pop can make it false.
    top_live: bool,
    /// How late the handler lets its timers fire
    /// ([`crate::Transport::set_timer_slack`]).
    slack: Duration,
}

impl Timers {
    pub fn new() -> Self {
        Timers {
            heap: BinaryHeap::with_capacity(64),
            live: HashMap::with_capacity_and_hasher(64, BuildHasherDefault::default()),
            next_id: 1,
            top_live: true,
            slack: Duration::ZERO,
        }
    }

    /// How late a timer may fire, at most, after it is due.
    pub fn slack(&self) -> Duration {
        self.slack
    }

    pub fn set_slack(&mut self, slack: Duration) {
        self.slack = slack;
    }

    fn insert(&mut self, at: Instant, token: u64, every: Option<Duration>) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.live.insert(id, Timer { token, every });
        self.heap.push(Reverse((at, id)));
        TimerId(id)
    }

    /// Fires `token` once, after `delay`.
    pub fn add(&mut self, delay: Duration, token: u64) -> TimerId {
        self.insert(after(delay), token, None)
    }

    /// Fires `token` every `period` (at least 1 µs), the first time after
    /// one period.
    pub fn every(&mut self, period: Duration, token: u64) -> TimerId {
        let period = period.max(Duration::from_micros(1));
        self.insert(after(period), token, Some(period))
    }

    /// Cancels a timer; false if it already fired (one-shot) or was
    /// cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let was = self.live.remove(&id.0).is_some();
        self.top_live &= !was;
        was
    }

    /// Time until the next live timer, if any.
    pub fn next(&mut self) -> Option<Duration> {
        self.next_at()
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// When the next live timer is due, if any (no clock read).
    pub fn next_at(&mut self) -> Option<Instant> {
        if !self.top_live {
            self.skip_dead();
        }
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    fn skip_dead(&mut self) {
        while let Some(Reverse((_, id))) = self.heap.peek() {
            if self.live.contains_key(id) {
                break;
            }
            self.heap.pop();
        }
        self.top_live = true;
    }

    /// Takes the next timer due at or before `now`: its token. A periodic
    /// timer is set again for its next period (skipping periods missed
    /// while the worker was busy, rather than firing them all at once).
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        loop {
            let Reverse((at, id)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            self.top_live = false;
            let Some(t) = self.live.get(&id) else {
                continue; // cancelled
            };
            let token = t.token;
            match t.every {
                Some(p) => {
                    let mut next = at + p;
                    if next <= now {
                        next = now + p;
                    }
                    self.heap.push(Reverse((next, id)));
                }
                None => {
                    self.live.remove(&id);
                }
            }
            return Some(token);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// `now + delay`, or a time no timer reaches when that overflows.
fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86400))
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

    #[test]
    fn a_thousand_timers_fire_in_order_but_the_cancelled_ones() {
        let mut t = Timers::new();
        // Seconds apart: timers a millisecond apart were reordered when the
        // test thread stalled for 2 ms between two of them (a busy CI box).
        let ids: Vec<TimerId> = (0..1000u64)
            .map(|k| t.add(Duration::from_secs(1000 - k), k))
            .collect();
        for (k, id) in ids.iter().enumerate() {
            if k % 2 == 1 {
                assert!(t.cancel(*id));
            }
        }
        // The earliest live one is token 998, due in 2 s.
        let first = t.next_at().unwrap();
        assert!(first <= Instant::now() + Duration::from_secs(2));
        assert!(first > Instant::now() + Duration::from_secs(1));
        let later = Instant::now() + Duration::from_secs(1001);
        let fired: Vec<u64> = std::iter::from_fn(|| t.pop_due(later)).collect();
        let want: Vec<u64> = (0..1000u64).rev().filter(|k| k % 2 == 0).collect();
        assert_eq!(fired, want);
        assert!(t.is_empty());
        assert_eq!(t.next_at(), None);
    }

    #[test]
    fn the_next_due_time_skips_timers_cancelled_after_it_was_asked() {
        let mut t = Timers::new();
        // Far enough apart that a stalled test thread does not reorder them.
        let a = t.add(Duration::from_secs(1), 1);
        let b = t.add(Duration::from_secs(10), 2);
        t.add(Duration::from_secs(60), 3);
        let first = t.next_at().unwrap();
        // The top cancelled after it was looked at.
        assert!(t.cancel(a));
        let second = t.next_at().unwrap();
        assert!(second > first, "{second:?} after {first:?}");
        // The next one cancelled under the top, then the top fired.
        let c = t.add(Duration::ZERO, 4);
        assert!(t.cancel(b));
        assert!(t.next_at().unwrap() < second);
        assert_eq!(t.pop_due(Instant::now()), Some(4));
        let last = t.next_at().unwrap();
        assert!(
            last > Instant::now() + Duration::from_secs(30),
            "timer 3 is next"
        );
        assert!(!t.cancel(c), "fired");
    }

    #[test]
    fn cancelled_timers_never_fire_and_periodic_ones_repeat() {
        let mut t = Timers::new();
        let a = t.add(Duration::ZERO, 1);
        let b = t.every(Duration::from_millis(10), 2);
        assert!(t.cancel(a));
        assert!(!t.cancel(a), "twice");
        let now = Instant::now() + Duration::from_millis(11);
        assert_eq!(t.pop_due(now), Some(2));
        assert_eq!(t.pop_due(now), None, "the cancelled one is skipped");
        assert_eq!(t.pop_due(now + Duration::from_millis(10)), Some(2), "again");
        // Missed periods are skipped, not fired in a burst.
        let much_later = now + Duration::from_secs(5);
        assert_eq!(t.pop_due(much_later), Some(2));
        assert_eq!(t.pop_due(much_later), None);
        assert!(t.cancel(b));
        assert!(t.is_empty());
        assert_eq!(t.next(), None);
    }
}
