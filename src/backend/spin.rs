//! The adaptive spin before a light-load sleep ([`Config::spin_us`]).
//!
//! A `uring` worker that has answered what came and has nothing to do
//! sleeps in `io_uring_enter` until the next datagram; waking it costs a
//! scheduler round trip (on a VM, often an exit to the host). When the
//! next request comes within a few tens of microseconds (a closed loop: a
//! client that asks again as soon as it has the answer), watching the ring
//! for that long instead answers it sooner. The watch is memory reads of
//! the ring's shared flags (the kernel sets `IORING_SQ_TASKRUN` when a
//! receive is ready to run), no system call, and it adapts, as the
//! kernel's halt polling does:
//!
//! - **bounded**: at most the window per sleep, the window at most
//!   `spin_us`; an idle worker spins once, then sleeps (no CPU while idle);
//! - **shrinks**: a spin that ends with nothing halves the window, and
//!   under an eighth of `spin_us` the worker stops spinning (parked);
//! - **grows**: a spin that ends with work doubles the window (up to
//!   `spin_us`); a parked worker whose sleep ended within `spin_us` spins
//!   again, at half;
//! - **yields**: a worker whose CPU another task wants stops spinning for
//!   [`YIELD`], so it does not spin on a CPU it shares. Two signs, each
//!   over at least [`SAMPLE`]: the scheduler keeps preempting it
//!   (involuntary context switches, more than one per [`CONTENDED`] on
//!   average), as a worker that seldom sleeps sees; or, as one that
//!   sleeps between requests sees, it waits for its CPU when it wakes
//!   (runnable but not running, more than [`WAITED`] of the time: a busy
//!   program on its CPU made it wait a quarter of the time, against 0.07%
//!   alone). An odd kernel thread passing by is neither.
//!
//! Counted per worker: `spin_hits` (work came while spinning: a sleep
//! saved), `spin_misses` (the window passed, then the worker slept),
//! `spin_yields` (spinning stopped for a preempted worker). What it costs
//! is CPU while requests flow: up to the window per request in a closed
//! loop (PERF.md has the figures).
//!
//! [`Config::spin_us`]: crate::Config::spin_us

use std::io;
use std::time::{Duration, Instant};

use crate::sys;
use crate::sys::cpu::Sched;
use crate::sys::uring::Ring;
use crate::worker::core::Core;

/// Checks of the ring between two clock reads while spinning.
const SPIN_CHECKS: u32 = 32;

/// How long a preempted worker does not spin.
pub(crate) const YIELD: Duration = Duration::from_secs(1);
/// Preempted more often than once per this, on average, a worker's CPU is
/// taken to be shared.
pub(crate) const CONTENDED: Duration = Duration::from_millis(10);
/// The shortest stretch that average is taken over.
pub(crate) const SAMPLE: Duration = Duration::from_millis(100);
/// Runnable but not running for more than this share of a sample (1 in
/// this many), a worker's CPU is taken to be shared.
pub(crate) const WAITED: u32 = 16;

/// The spin's state (one per worker).
#[derive(Debug)]
pub(crate) struct Spin {
    max: Duration,
    window: Duration,
    /// No spinning before this (a preempted worker).
    off_until: Option<Instant>,
    /// What the scheduler had done to the thread when the sample began,
    /// and when.
    sample: (Sched, Instant),
}

impl Spin {
    /// A spin of at most `max_us` µs (None for 0: no spin), the thread's
    /// [`Sched`] being `sched` at `now`.
    pub(crate) fn new(max_us: u32, sched: Sched, now: Instant) -> Option<Spin> {
        let max = Duration::from_micros(u64::from(max_us));
        (!max.is_zero()).then_some(Spin {
            max,
            window: max,
            off_until: None,
            sample: (sched, now),
        })
    }

    /// How long to spin before this sleep, or None (parked, or yielding
    /// until a time `now` tells; the clock is read only then).
    pub(crate) fn window(&mut self, now: impl FnOnce() -> Instant) -> Option<Duration> {
        if let Some(t) = self.off_until {
            if now() < t {
                return None;
            }
            self.off_until = None;
        }
        (!self.window.is_zero()).then_some(self.window)
    }

    /// Parked: not spinning until a sleep ends within `max`.
    pub(crate) fn parked(&self) -> bool {
        self.window.is_zero() && self.off_until.is_none()
    }

    /// Work came while spinning.
    pub(crate) fn hit(&mut self) {
        self.window = (self.window * 2).min(self.max);
    }

    /// The window passed with nothing; `sched` reads the thread's
    /// [`Sched`] (only when a sample of at least [`SAMPLE`] has passed; a
    /// shorter one goes on). True when, over the sample, the worker was
    /// preempted more than once per [`CONTENDED`] or waited for its CPU
    /// more than [`WAITED`] of the time: it then yields for [`YIELD`].
    pub(crate) fn miss(&mut self, now: Instant, sched: impl FnOnce() -> Sched) -> bool {
        let (before, then) = self.sample;
        let over = now.saturating_duration_since(then);
        let mut contended = false;
        if over >= SAMPLE {
            let s = sched();
            self.sample = (s, now);
            let preempted = s.preempted.saturating_sub(before.preempted);
            let waited = s.waited_ns.saturating_sub(before.waited_ns);
            contended = u128::from(preempted) * CONTENDED.as_nanos() > over.as_nanos()
                || u128::from(waited) * u128::from(WAITED) > over.as_nanos();
        }
        if contended {
            self.window = Duration::ZERO;
            self.off_until = Some(now + YIELD);
            return true;
        }
        self.window /= 2;
        if self.window < self.max / 8 {
            self.window = Duration::ZERO;
        }
        false
    }

    /// A light-load wait of `ring` with the spin: submits what is queued,
    /// watches the ring for up to the window (memory reads), then enters
    /// to take what came without sleeping, or, when nothing came, sleeps
    /// as [`Ring::wait`] for `want` completions. A parked spin times the
    /// sleep instead, to learn when requests come close again.
    pub(crate) fn then_wait(
        &mut self,
        ring: &mut Ring,
        core: &mut Core,
        want: usize,
    ) -> io::Result<()> {
        let Some(window) = self.window(Instant::now) else {
            if !self.parked() {
                return ring.wait(want, None);
            }
            let slept = Instant::now();
            ring.wait(want, None)?;
            self.slept(slept.elapsed());
            return Ok(());
        };
        ring.submit()?;
        let seen = ring.ready();
        let end = Instant::now() + window;
        loop {
            // A few checks between clock reads: a check is a load or two.
            for _ in 0..SPIN_CHECKS {
                if ring.work_pending(seen) {
                    self.hit();
                    core.stats.c.spin_hits.add(1);
                    // Runs the deferred receive; sleeps for nothing.
                    return ring.wait(want, Some(Duration::ZERO));
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= end {
                break;
            }
        }
        core.stats.c.spin_misses.add(1);
        if self.miss(Instant::now(), sys::cpu::sched) {
            core.stats.c.spin_yields.add(1);
        }
        // About to sleep, maybe for long: what is published per turn (the
        // gauges, the drop counters when due) goes out first.
        core.publish();
        ring.wait(want, None)
    }

    /// A parked worker slept for `slept` before work came: short enough,
    /// and it spins again, at half the longest window.
    pub(crate) fn slept(&mut self, slept: Duration) {
        if self.parked() && slept < self.max {
            self.window = self.max / 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A thread preempted `n` times so far, never kept waiting.
    fn switches(n: u64) -> Sched {
        Sched {
            preempted: n,
            waited_ns: 0,
        }
    }

    #[test]
    fn zero_means_no_spin() {
        assert!(Spin::new(0, switches(0), Instant::now()).is_none());
    }

    #[test]
    fn empty_spins_halve_the_window_then_park_and_a_short_sleep_unparks() {
        let now = Instant::now();
        let mut s = Spin::new(80, switches(5), now).unwrap();
        assert_eq!(s.window(|| now), Some(us(80)));
        let mut windows = vec![];
        while let Some(w) = s.window(|| now) {
            windows.push(w);
            assert!(!s.miss(now, || switches(5)), "not preempted");
        }
        // 80, 40, 20, then 10 is the eighth: kept; 5 is under it: parked.
        assert_eq!(windows, [us(80), us(40), us(20), us(10)]);
        assert!(s.parked());
        // A long sleep keeps it parked; a short one spins again at half.
        s.slept(us(500));
        assert_eq!(s.window(|| now), None);
        s.slept(us(30));
        assert_eq!(s.window(|| now), Some(us(40)));
        // Work while spinning doubles the window, up to the most.
        s.hit();
        assert_eq!(s.window(|| now), Some(us(80)));
        s.hit();
        assert_eq!(s.window(|| now), Some(us(80)));
    }

    #[test]
    fn a_worker_preempted_often_yields_for_a_while_then_waits_for_a_short_sleep() {
        let start = Instant::now();
        let mut s = Spin::new(50, switches(2), start).unwrap();
        // Preempted at once: too short a sample to tell.
        let now = start + Duration::from_millis(2);
        assert!(
            !s.miss(now, || switches(3)),
            "one switch in 2 ms is no sample"
        );
        assert_eq!(s.window(|| now), Some(us(25)));
        // Five in 200 ms: a kernel thread passing, not a shared CPU.
        let now = start + Duration::from_millis(200);
        assert!(
            !s.miss(now, || switches(7)),
            "5 switches in 200 ms do not yield"
        );
        // Twelve in the next 100 ms: more than one per 10 ms. It yields.
        let now = now + Duration::from_millis(100);
        assert!(s.miss(now, || switches(19)), "switched often: yields");
        assert_eq!(s.window(|| now), None);
        assert!(
            !s.parked(),
            "yielding, not parked: a sleep does not undo it"
        );
        s.slept(us(1));
        assert_eq!(s.window(|| now + YIELD / 2), None);
        // After the yield it is parked until a sleep says requests are near.
        assert_eq!(s.window(|| now + YIELD), None);
        assert!(s.parked());
        s.slept(us(10));
        assert_eq!(s.window(|| now + YIELD), Some(us(25)));
        // Not preempted since: a miss only halves.
        assert!(!s.miss(now + YIELD, || switches(19)));
        assert_eq!(
            s.window(|| now + YIELD),
            Some(us(12) + Duration::from_nanos(500))
        );
    }

    #[test]
    fn a_worker_kept_waiting_for_its_cpu_yields_though_never_preempted() {
        let start = Instant::now();
        let waited = |ms: u64| Sched {
            preempted: 0,
            waited_ns: ms * 1_000_000,
        };
        let mut s = Spin::new(50, waited(0), start).unwrap();
        // 2 ms of 200 waiting for its CPU: a neighbour passing by.
        let now = start + Duration::from_millis(200);
        assert!(!s.miss(now, || waited(2)), "1% of the time waiting");
        // 25 ms of the next 100 (a busy program on its CPU): it yields.
        let now = now + Duration::from_millis(100);
        assert!(s.miss(now, || waited(27)), "a quarter of the time waiting");
        assert_eq!(s.window(|| now), None);
    }

    #[test]
    fn the_scheduler_is_read_only_once_a_sample_has_passed() {
        let start = Instant::now();
        let mut s = Spin::new(50, switches(0), start).unwrap();
        let now = start + Duration::from_millis(50);
        assert!(!s.miss(now, || panic!("read before the sample ended")));
        let now = start + Duration::from_millis(150);
        let mut read = false;
        s.miss(now, || {
            read = true;
            switches(0)
        });
        assert!(read, "read once the sample ended");
    }
}
