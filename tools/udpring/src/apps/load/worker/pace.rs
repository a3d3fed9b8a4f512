//! The paced run's schedule (`--rate`, `--burst`, a capture's own
//! timing): when each datagram is due, sending what is, and where a run
//! that cannot keep up stops.

use super::*;

/// How long past its end a paced run that fell behind goes on sending what
/// was due before the end. A host that keeps the rate is never that late;
/// one asked for more than it can send stops here, with the rest counted
/// (`unsent`), rather than taking as much longer than `--duration` as it is
/// slower than the rate (a 0.3 s run at 100M/s took minutes).
pub const LATE_LIMIT: Duration = Duration::from_secs(1);

impl Worker {
    /// When the paced run's datagram `i` (of this worker) is due: evenly
    /// spaced, in bursts, or at Poisson arrivals.
    pub(super) fn due_at(&mut self, i: u64) -> u64 {
        let start = self.rate_start;
        if let Some(p) = &mut self.poisson {
            return start + p.due(i);
        }
        if let (Some(speed), Some(p)) = (self.opts.replay_speed, &self.opts.payloads)
            && let Some((times, cycle)) = p.times()
        {
            // The capture's own schedule, pass after pass.
            let n = times.len() as u64;
            let t = (i / n) as f64 * cycle as f64 + times[(i % n) as usize] as f64;
            return self.rate_start + (t / speed) as u64;
        }
        match i.checked_div(self.burst) {
            Some(b) => self.rate_start + (b as f64 * self.burst_every_ns) as u64,
            None => self.rate_start + (i as f64 * self.rate_interval_ns) as u64,
        }
    }

    /// Sends what is due; the time until the next send is due, or `None`
    /// when the run's sending is over.
    pub(super) fn rate(&mut self, tx: &mut Transport<'_>) -> Option<Duration> {
        let now = self.now_ns();
        self.cut_if_late(now);
        let mut due = [0u64; 64];
        loop {
            let n = self.batch_len();
            // The train leaves when its last datagram is due.
            let last = self.due_at(self.rate_sent + n as u64 - 1);
            let first = self.due_at(self.rate_sent);
            self.advance(first.min(now));
            if !self.sending(first) {
                return None;
            }
            if last > now {
                return Some(Duration::from_nanos(last - now));
            }
            for (k, d) in due[..n].iter_mut().enumerate() {
                *d = self.due_at(self.rate_sent + k as u64);
            }
            if self.phase == Phase::Measure {
                self.max_lag_ns = self.max_lag_ns.max(now.saturating_sub(first));
            }
            let fi = self.next_flow;
            if !self.send(tx, fi, n, &due[..n], now) {
                // No send slot: try again shortly; the stamps keep the lag.
                return Some(Duration::from_micros(50));
            }
            self.rate_sent += n as u64;
            self.next_flow = (self.next_flow + 1) % self.flows.len();
        }
    }

    /// Past [`LATE_LIMIT`] after the end, stops a paced run's sending and
    /// counts what was due in the measured span and has not gone.
    pub(super) fn cut_if_late(&mut self, now: u64) {
        if self.rate_cut || !matches!(self.opts.mode, Mode::Rate(_)) {
            return;
        }
        let Some(end) = self.stop_at else { return };
        if now < end.saturating_add(LATE_LIMIT.as_nanos() as u64) {
            return;
        }
        let first = self.rate_sent.max(self.due_before(self.measure_at));
        let mut unsent = self.due_before(end).saturating_sub(first);
        if let Some(q) = self.count_quota {
            unsent = unsent.min(q);
        }
        self.counts.unsent = self.counts.unsent.saturating_add(unsent);
        self.rate_cut = true;
    }

    /// How many of this worker's datagrams are due before `t` (the
    /// schedule only grows: a doubling search, then a binary one).
    fn due_before(&mut self, t: u64) -> u64 {
        let mut hi = 1u64;
        while self.due_at(hi - 1) < t {
            if hi >= 1 << 62 {
                return hi;
            }
            hi *= 2;
        }
        // due_at(hi - 1) >= t: the answer is in 0..hi.
        let mut lo = 0u64;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.due_at(mid) < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}
