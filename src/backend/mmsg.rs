//! The `mmsg` and `simple` backends: batched `recvmmsg`/`sendmmsg` (or one
//! `recvmsg`/`sendmsg` per datagram) on a non-blocking socket, waiting in
//! `poll` on the socket and the worker's eventfd.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::handler::{ErrorEvent, Handler};
use crate::sys::mmsg::MmsgBufs;
use crate::sys::{self, canonical};
use crate::worker::Core;

/// Receive calls per loop iteration before timers and the inbox get a turn.
const RECV_BUDGET: usize = 16;
/// How long a send may wait for socket buffer space before it is dropped
/// (and counted under its errno).
const SEND_RETRIES: usize = 50;

fn is_icmp_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EMSGSIZE
            | libc::EHOSTDOWN
    )
}

/// Sends everything queued, in batches.
fn flush<H: Handler>(fd: RawFd, core: &mut Core, h: &mut H, tx: &mut MmsgBufs, single: bool) {
    let mut waits = 0;
    while !core.queue.is_empty() {
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
                    let _ = sys::poll(&mut p, 1);
                    continue;
                }
                let t = core.queue.remove(0);
                if t.segment > 0 && matches!(errno, libc::EIO | libc::EINVAL) && core.gso {
                    core.gso_failed(&t);
                } else {
                    core.count_send_error(errno);
                    if is_icmp_errno(errno) {
                        let peer = t.dst.to_socket_addr().map(canonical);
                        core.error_event(h, ErrorEvent::from_errno(errno, peer));
                    }
                }
                core.pool.unref(t.slot);
                waits = 0;
            }
        }
    }
}

/// Runs a worker until the stop flag is set.
pub(crate) fn run<H: Handler>(
    socket: &socket2::Socket,
    core: &mut Core,
    h: &mut H,
    batch: usize,
    single: bool,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    if let Err(e) = socket.set_nonblocking(true) {
        let msg = e.to_string();
        ready(Err(e));
        return Err(io::Error::other(msg));
    }
    let batch = if single { 1 } else { batch };
    let mut rx = MmsgBufs::new(batch);
    let mut tx = MmsgBufs::new(batch);
    let wake = core.inbox.wake.fd();
    core.stats.recv_arms += 1;
    ready(Ok(()));
    core.start(h);
    flush(fd, core, h, &mut tx, single);
    let result = loop {
        if core.stopping() {
            break Ok(());
        }
        let mut idle = true;
        let mut fatal = None;
        for _ in 0..RECV_BUDGET {
            match rx.recv(fd, &mut core.pool, single) {
                Ok(0) => break,
                Ok(n) => {
                    idle = false;
                    for i in 0..n {
                        match rx.take(i, &mut core.pool) {
                            Some((lent, src, truncated, cmsg)) => {
                                core.dispatch(h, lent, src, truncated, cmsg)
                            }
                            None => core.stats.invalid_completions += 1,
                        }
                    }
                    flush(fd, core, h, &mut tx, single);
                    if n < rx.batch() {
                        break;
                    }
                }
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => {}
                        Some(libc::EINTR) => continue,
                        Some(errno) if is_icmp_errno(errno) || errno == libc::ECONNRESET => {
                            idle = false;
                            if core.drain_errors(h, fd) == 0 {
                                core.error_event(h, ErrorEvent::from_errno(errno, None));
                            }
                            continue;
                        }
                        _ => fatal = Some(e),
                    }
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
        flush(fd, core, h, &mut tx, single);
        core.publish();
        if idle {
            let timeout = core
                .next_timer()
                .map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
            let mut p = [
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            sys::poll(&mut p, timeout)?;
            if p[0].revents & libc::POLLERR != 0 {
                core.drain_errors(h, fd);
            }
        }
    };
    h.on_stop();
    flush(fd, core, h, &mut tx, single);
    core.publish();
    result
}
