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

/// The kernel's tick (`CLOCK_MONOTONIC_COARSE`'s resolution, one jiffy:
/// 1 ms at `HZ=1000`, 4 ms at 250, 10 ms at 100): how late a timeout
/// that counts in ticks (`SO_RCVTIMEO`) may end. 10 ms if the kernel
/// does not say.
pub fn tick() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match syscall!(clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts)) {
        Ok(_) if ts.tv_sec > 0 || ts.tv_nsec > 0 => {
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        }
        _ => Duration::from_millis(10),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tick_is_a_jiffy() {
        // HZ is 100 to 1000 on every kernel built since 2.6.
        let t = super::tick();
        assert!(
            t >= std::time::Duration::from_millis(1) && t <= std::time::Duration::from_millis(10),
            "{t:?}"
        );
    }

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
