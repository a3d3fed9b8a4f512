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
pub fn involuntary_switches() -> u64 {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    match syscall!(getrusage(libc::RUSAGE_THREAD, &mut r)) {
        Ok(_) => u64::try_from(r.ru_nivcsw).unwrap_or(0),
        Err(_) => 0,
    }
}
