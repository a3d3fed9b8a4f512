//! The `mmsg` and `simple` backends: batched `recvmmsg`/`sendmmsg` (or one
//! `recvmsg`/`sendmsg` per datagram) on non-blocking sockets, waiting in
//! `ppoll` on the sockets and the worker's eventfd.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::handler::{ErrorEvent, Handler};
use crate::sys;
use crate::sys::mmsg::MmsgBufs;
use crate::worker::{Core, is_icmp_errno};

/// Receive calls per socket per loop iteration before timers and the inbox
/// get a turn.
const RECV_BUDGET: usize = 16;
/// How many times a send may wait (1 ms each) for socket buffer space before
/// it is dropped (and counted under its errno).
const SEND_RETRIES: usize = 50;

/// Sends everything queued, in batches of one socket each.
fn flush<H: Handler>(fds: &[RawFd], core: &mut Core, h: &mut H, tx: &mut MmsgBufs, single: bool) {
    let mut waits = 0;
    while let Some(first) = core.queue.first() {
        let fd = fds[first.sock as usize];
        match tx.send(fd, &core.pool, &core.queue, single) {
            Ok(k) => {
                for j in 0..k {
                    let t = core.queue[j];
                    core.count_sent(&t);
                    core.pool.unref(t.slot);
                }
                core.queue.drain(..k);
                waits = 0;
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                if errno == libc::EINTR {
                    continue;
                }
                if matches!(errno, libc::EAGAIN | libc::ENOBUFS) && waits < SEND_RETRIES {
                    waits += 1;
                    let mut p = [libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    }];
                    let _ = sys::poll(&mut p, Some(std::time::Duration::from_millis(1)));
                    continue;
                }
                let t = core.queue.remove(0);
                if t.segment > 0 && matches!(errno, libc::EIO | libc::EINVAL) && core.gso {
                    core.gso_failed(&t);
                } else {
                    core.send_failed(h, &t, errno);
                }
                core.pool.unref(t.slot);
                waits = 0;
            }
        }
    }
}

/// Receives what socket `i` has queued (up to the budget) and dispatches it.
/// Returns whether anything arrived, or a fatal error.
#[allow(clippy::too_many_arguments)]
fn drain_socket<H: Handler>(
    i: usize,
    fds: &[RawFd],
    core: &mut Core,
    h: &mut H,
    rx: &mut MmsgBufs,
    tx: &mut MmsgBufs,
    single: bool,
) -> io::Result<bool> {
    let fd = fds[i];
    let mut got = false;
    for _ in 0..RECV_BUDGET {
        match rx.recv(fd, &mut core.pool, single) {
            Ok(0) => break,
            Ok(n) => {
                got = true;
                for k in 0..n {
                    match rx.take(k, &mut core.pool) {
                        Some((lent, src, truncated, cmsg)) => {
                            core.dispatch(h, i as u16, lent, src, truncated, cmsg)
                        }
                        None => core.stats.invalid_completions += 1,
                    }
                }
                flush(fds, core, h, tx, single);
                if n < rx.batch() {
                    break;
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                Some(errno) if is_icmp_errno(errno) || errno == libc::ECONNRESET => {
                    got = true;
                    if core.drain_errors(h, fd) == 0 {
                        core.error_event(h, ErrorEvent::from_errno(errno, None));
                    }
                }
                _ => return Err(e),
            },
        }
    }
    Ok(got)
}

/// Runs a worker until the stop flag is set.
pub(crate) fn run<H: Handler>(
    sockets: &[socket2::Socket],
    core: &mut Core,
    h: &mut H,
    batch: usize,
    single: bool,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    if let Err(e) = sockets.iter().try_for_each(|s| s.set_nonblocking(true)) {
        let msg = e.to_string();
        ready(Err(e));
        return Err(io::Error::other(msg));
    }
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let batch = if single { 1 } else { batch };
    let mut rx = MmsgBufs::new(batch);
    let mut tx = MmsgBufs::new(batch);
    let wake = core.inbox.wake.fd();
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .chain(std::iter::once(&wake))
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    core.stats.recv_arms += fds.len() as u64;
    ready(Ok(()));
    core.start(h);
    flush(&fds, core, h, &mut tx, single);
    let result = loop {
        if core.stopping() {
            break Ok(());
        }
        let mut idle = true;
        let mut fatal = None;
        for i in 0..fds.len() {
            match drain_socket(i, &fds, core, h, &mut rx, &mut tx, single) {
                Ok(got) => idle &= !got,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = fatal {
            break Err(e);
        }
        if core.inbox.wake.drain() {
            core.drain_inbox();
        }
        core.fire_timers(h);
        flush(&fds, core, h, &mut tx, single);
        core.publish();
        // The stop flag is set before the eventfd is written: if the drain
        // above swallowed a stop's wake-up, the flag says so now. Check it
        // before sleeping, or that wake-up would be lost.
        if idle && !core.stopping() {
            for p in pollfds.iter_mut() {
                p.revents = 0;
            }
            // Busy polling checks and goes on: it never sleeps.
            let timeout = if core.busy_poll {
                Some(std::time::Duration::ZERO)
            } else {
                core.next_timer()
            };
            sys::poll(&mut pollfds, timeout)?;
            for (i, p) in pollfds[..fds.len()].iter().enumerate() {
                if p.revents & libc::POLLERR != 0 {
                    core.drain_errors(h, fds[i]);
                }
            }
        }
    };
    h.on_stop();
    flush(&fds, core, h, &mut tx, single);
    core.publish();
    result
}
