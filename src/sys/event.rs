//! Waking and waiting: the worker's eventfd, and `ppoll`.

use std::io;
use std::os::fd::RawFd;

/// A non-blocking eventfd used to wake a worker from another thread.
pub struct EventFd(RawFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        Ok(EventFd(fd))
    }
    /// The descriptor, for poll or io_uring.
    pub fn fd(&self) -> RawFd {
        self.0
    }
    /// Adds one to the counter, waking any poller.
    pub fn notify(&self) {
        let one: u64 = 1;
        // An EAGAIN here means the counter is saturated: a wake is pending anyway.
        let _ = syscall!(write(self.0, (&one as *const u64).cast(), 8));
    }
    /// Resets the counter; returns whether it was non-zero.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        syscall!(read(self.0, (&mut v as *mut u64).cast(), 8)).is_ok()
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// Waits for readiness (`ppoll`, nanosecond timeout; `None` waits for ever).
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    match syscall!(ppoll(
        fds.as_mut_ptr(),
        fds.len() as libc::nfds_t,
        tsp,
        std::ptr::null()
    )) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}
