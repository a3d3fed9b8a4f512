//! Clean stops for command-line programs: SIGINT, SIGTERM and SIGHUP set a
//! flag instead of killing the process, and write a byte into a pipe, so a
//! thread can sleep until a stop comes instead of polling the flag.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

static STOP_SIGNALLED: AtomicBool = AtomicBool::new(false);
/// The pipe's write end, for the handler (-1 until the pipe exists).
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The pipe: (read end, write end), both non-blocking, never closed.
static WAKE: OnceLock<Option<(RawFd, RawFd)>> = OnceLock::new();

/// The stop pipe, made on first use (`None` if the system refused one).
fn wake_pipe() -> Option<(RawFd, RawFd)> {
    *WAKE.get_or_init(|| {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if r != 0 {
            return None;
        }
        WAKE_WRITE.store(fds[1], Ordering::SeqCst);
        Some((fds[0], fds[1]))
    })
}

/// Sets the flag and makes the pipe readable. Async-signal-safe: an
/// atomic store, an atomic load and `write(2)`, with `errno` kept for the
/// code the signal interrupted.
fn raise() {
    STOP_SIGNALLED.store(true, Ordering::SeqCst);
    let fd = WAKE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: errno is thread-local; the location is valid for this
        // thread. One byte from a live local; a full pipe (EAGAIN) already
        // says what this byte would.
        unsafe {
            let errno = *libc::__errno_location();
            let _ = libc::write(fd, [1u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    raise();
}

/// Makes SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so a
/// command can stop its engine cleanly and print totals.
pub fn install_stop_signals() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    wake_pipe().ok_or_else(io::Error::last_os_error)?;
    let act = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches atomics and calls write(2),
        // which are async-signal-safe (see `raise`).
        unsafe { sigaction(sig, &act) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Asks for the same clean stop a signal asks for (a command whose output
/// went away stops as if interrupted).
pub fn request_stop() {
    wake_pipe();
    raise();
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived since [`install_stop_signals`]
/// (or [`request_stop`] was called).
pub fn stop_signalled() -> bool {
    STOP_SIGNALLED.load(Ordering::SeqCst)
}

/// A descriptor that becomes readable (`POLLIN`) once a stop is requested
/// and stays so: poll it beside your own to sleep until then. `None` if
/// the system refused a pipe.
pub fn stop_fd() -> Option<BorrowedFd<'static>> {
    let (read, _) = wake_pipe()?;
    // SAFETY: the pipe is never closed: the descriptor lives as long as
    // the process.
    Some(unsafe { BorrowedFd::borrow_raw(read) })
}

/// Sleeps until a stop is requested or `timeout` passes (`None`: until a
/// stop); returns [`stop_signalled`]. Without a pipe, it sleeps in steps
/// of 50 ms, looking at the flag.
pub fn wait_stop(timeout: Option<Duration>) -> bool {
    let end = timeout.map(|t| Instant::now() + t);
    while !stop_signalled() {
        let left = end.map(|e| e.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            break;
        }
        let Some((read, _)) = wake_pipe() else {
            std::thread::sleep(left.unwrap_or(Duration::MAX).min(Duration::from_millis(50)));
            continue;
        };
        let mut p = libc::pollfd {
            fd: read,
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up, so a wait never ends before its time and spins.
        let ms = left.map_or(-1, |l| {
            i32::try_from(l.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        // SAFETY: one valid pollfd, for the duration of the call. EINTR
        // (a signal) just goes round the loop.
        unsafe { libc::poll(&mut p, 1, ms) };
    }
    stop_signalled()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The only test in this binary that asks for a stop: the flag is the
    /// process's, and sticky.
    #[test]
    fn a_stop_wakes_a_waiter_at_once_and_stays_requested() {
        assert!(!wait_stop(Some(Duration::from_millis(20))), "no stop yet");
        let t = Instant::now();
        let asker = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            request_stop();
        });
        // A waiter that polled the flag only at its timeout would sleep
        // the whole minute.
        assert!(wait_stop(Some(Duration::from_secs(60))));
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        asker.join().unwrap();
        assert!(wait_stop(None), "a later wait returns at once");
        let mut p = libc::pollfd {
            fd: stop_fd().unwrap().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut p, 1, 0) };
        assert_eq!(ready, 1, "the fd stays readable");
    }
}
