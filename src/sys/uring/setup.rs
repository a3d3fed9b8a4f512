//! Setting a ring up: the flags tried, best first, and what a refusal
//! means. A ring's memory (its SQEs and CQEs) is locked memory: unless the
//! process has `CAP_IPC_LOCK`, it counts against `RLIMIT_MEMLOCK`, and
//! where that is the old default of 64 KiB one ring of the default size
//! does not fit; the kernel then says only `ENOMEM`.

use std::io;

use io_uring::IoUring;

/// Options of the ring.
#[derive(Clone, Copy, Debug)]
pub struct RingOpts {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Try `SINGLE_ISSUER | DEFER_TASKRUN`.
    pub defer_taskrun: bool,
}

/// `e` from setting up a ring: `ENOMEM` under a locked-memory limit said
/// as that limit (a ring's memory counts against `RLIMIT_MEMLOCK` unless
/// the process has `CAP_IPC_LOCK`: 64 KiB, the old default, is less than
/// one ring of the default size), any other error as it is.
pub(super) fn explain_memlock(e: io::Error, sq_entries: u32) -> io::Error {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    if e.raw_os_error() != Some(libc::ENOMEM) {
        return e;
    }
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
        return e;
    };
    // Root (CAP_IPC_LOCK) is not held to it: its ENOMEM is memory itself.
    if soft == RLIM_INFINITY || nix::unistd::geteuid().is_root() {
        return e;
    }
    // SQEs, the SQ's index array and CQEs (eight per SQE).
    let ring_kib = (u64::from(sq_entries) * (64 + 4 + 8 * 16)).div_ceil(1024);
    io::Error::new(
        e.kind(),
        format!(
            "{e}: an io_uring ring is locked memory, and this process may lock {} KiB \
             (`ulimit -l`; not limited with CAP_IPC_LOCK); a ring of {sq_entries} entries takes \
             about {ring_kib} KiB: raise the limit (systemd's default is 8 MiB), or use the \
             mmsg backend, or fewer sq_entries",
            soft / 1024
        ),
    )
}

/// A ring for `opts`: `SINGLE_ISSUER | DEFER_TASKRUN` with the task-run
/// flag where asked and the kernel has them, else plain; both with eight
/// CQEs per SQE and `SUBMIT_ALL`.
pub(super) fn build(opts: &RingOpts) -> io::Result<IoUring> {
    let cq = opts.sq_entries * 8;
    if opts.defer_taskrun
        && let Ok(r) = IoUring::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            // The kernel flags pending deferred work, so a non-blocking
            // submit knows to run it (see `Ring::wait`).
            .setup_taskrun_flag()
            .setup_submit_all()
            .build(opts.sq_entries)
    {
        return Ok(r);
    }
    IoUring::builder()
        .setup_cqsize(cq)
        .setup_submit_all()
        .build(opts.sq_entries)
}
