//! A coarse monotonic clock for the loops' once-per-iteration checks.

use std::time::Duration;

/// `CLOCK_MONOTONIC_COARSE`: as fine as the kernel's tick (1-4 ms), and
/// read from the vDSO's data page without the TSC or paravirtual clock
/// arithmetic `Instant::now` does, which a worker paid once per loop
/// iteration for a check that cares about 100 ms (PERF.md, the kv bench).
pub fn coarse() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // The clock exists on every kernel the engine runs on (2.6.32+); were
    // the call to fail, a zero reading only delays the checks it paces.
    match syscall!(clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts)) {
        Ok(_) => Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
        Err(_) => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_coarse_clock_moves_forward() {
        let a = super::coarse();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = super::coarse();
        assert!(a > std::time::Duration::ZERO);
        assert!(
            b >= a + std::time::Duration::from_millis(20),
            "{a:?} -> {b:?}"
        );
    }
}
