//! Threads and CPUs: pinning a worker, and which CPUs the process may use.

use std::io;

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// The calling thread's involuntary context switches so far (`getrusage`
/// `RUSAGE_THREAD`, `ru_nivcsw`): times the scheduler took its CPU while it
/// was running, for another task that wanted it. 0 if the call fails.
fn involuntary_switches() -> u64 {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    match syscall!(getrusage(libc::RUSAGE_THREAD, &mut r)) {
        Ok(_) => u64::try_from(r.ru_nivcsw).unwrap_or(0),
        Err(_) => 0,
    }
}

/// What the scheduler did to the calling thread so far: its involuntary
/// context switches ([`involuntary_switches`]) and the time it spent
/// runnable but waiting for a CPU (`run_delay`, the second field of
/// /proc/thread-self/schedstat; 0 where the kernel keeps no schedstat).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sched {
    /// Involuntary context switches.
    pub preempted: u64,
    /// Nanoseconds runnable on a run queue, not running.
    pub waited_ns: u64,
}

/// The calling thread's [`Sched`] now.
pub fn sched() -> Sched {
    let waited_ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    Sched {
        preempted: involuntary_switches(),
        waited_ns,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// Two busy threads on one CPU for 100 ms: each waits for it about
    /// half the time, and says so.
    #[test]
    fn a_thread_kept_off_its_cpu_reads_its_wait() {
        if std::fs::metadata("/proc/thread-self/schedstat").is_err() {
            eprintln!("skipped: this kernel keeps no schedstat");
            return;
        }
        let cpu = allowed_cpus()[0];
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let other = std::thread::spawn(move || {
            let _ = pin_to_cpu(cpu);
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let me = std::thread::spawn(move || {
            pin_to_cpu(cpu).ok()?;
            let before = sched();
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(100) {
                std::hint::spin_loop();
            }
            Some(sched().waited_ns - before.waited_ns)
        });
        let waited = me.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        other.join().unwrap();
        let Some(waited) = waited else {
            eprintln!("skipped: cannot pin to CPU {cpu}");
            return;
        };
        assert!(
            waited > 10_000_000,
            "waited {waited} ns of 100 ms beside a busy thread"
        );
    }
}
