//! `io_uring_enter` through a registered ring fd, and kept out of iowait.
//!
//! Every wait of a worker is an `io_uring_enter` (one per request in a
//! closed loop). Given the ring's fd, the kernel looks the file up and
//! takes a reference on each call, an atomic increment and decrement on a
//! line other threads share as soon as the process has more than one.
//! `IORING_REGISTER_RING_FDS` (Linux 5.18) puts the ring in the calling
//! thread's own table; an enter that names its index with
//! `IORING_ENTER_REGISTERED_RING` skips the lookup. The io-uring crate's
//! `Submitter` forgets the index between calls, and passes no flag of the
//! caller's, hence this module.
//!
//! A thread waiting in the ring while requests are in flight (a multishot
//! receive always is) is accounted as waiting for I/O: an idle worker's CPU
//! reads 100% `iowait` in `top` and `/proc/stat`, as if a disk held it up,
//! and each sleep and wake-up updates the run queue's iowait count.
//! `IORING_ENTER_NO_IOWAIT` (Linux 6.15, `IORING_FEAT_NO_IOWAIT`) sleeps
//! as a blocking `recvfrom` does; every enter carries it where the kernel
//! has it.
//!
//! The registration belongs to the thread that made it: the ring must be
//! entered from that thread (the worker's, as `SINGLE_ISSUER` asks
//! already) and unregistered from it (`Ring`'s drop), or the thread's
//! table keeps the ring, and the sockets registered with it, open until the
//! thread exits.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::time::Duration;

/// `IORING_REGISTER_RING_FDS`, `IORING_UNREGISTER_RING_FDS`.
const REGISTER_RING_FDS: libc::c_uint = 20;
const UNREGISTER_RING_FDS: libc::c_uint = 21;
/// `IORING_ENTER_*`.
const GETEVENTS: libc::c_uint = 1;
const EXT_ARG: libc::c_uint = 8;
pub(super) const REGISTERED_RING: libc::c_uint = 16;
pub(super) const NO_IOWAIT: libc::c_uint = 128;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GetEventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// A ring registered in the calling thread's ring table. Not `Send`: on
/// another thread the index names that thread's ring, or none.
pub(super) struct RegisteredRing {
    index: u32,
    _thread: PhantomData<*const ()>,
}

impl RegisteredRing {
    /// Registers ring `fd` for the calling thread; `None` when the kernel
    /// will not (older than 5.18, or the thread's table is full): the
    /// caller enters by fd then.
    pub(super) fn new(fd: RawFd) -> Option<RegisteredRing> {
        let mut up = RsrcUpdate {
            offset: u32::MAX, // any free slot
            resv: 0,
            data: u64::try_from(fd).ok()?,
        };
        // SAFETY: `up` is a valid io_uring_rsrc_update, and the count says
        // one; the kernel writes the slot it chose into `up.offset`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                REGISTER_RING_FDS,
                &mut up as *mut RsrcUpdate,
                1 as libc::c_uint,
            )
        };
        (r == 1).then_some(RegisteredRing {
            index: up.offset,
            _thread: PhantomData,
        })
    }

    /// The index to enter by, with [`REGISTERED_RING`].
    pub(super) fn index(&self) -> u32 {
        self.index
    }

    /// Takes the ring, `fd`, out of the calling thread's table.
    pub(super) fn unregister(self, fd: RawFd) {
        let up = RsrcUpdate {
            offset: self.index,
            resv: 0,
            data: 0,
        };
        // SAFETY: as in `new`; the kernel only reads `up`.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                UNREGISTER_RING_FDS,
                &up as *const RsrcUpdate,
                1 as libc::c_uint,
            )
        };
    }
}

/// Enters ring `ring` (its fd, or with [`REGISTERED_RING`] in `flags`
/// the index this thread registered it at): submits `to_submit` entries
/// and, with `get_events`, runs deferred completions and waits for `want`
/// of them or the timeout `ts`.
pub(super) fn enter(
    ring: u32,
    flags: libc::c_uint,
    to_submit: u32,
    want: u32,
    get_events: bool,
    ts: Option<Duration>,
) -> io::Result<usize> {
    let mut flags = flags;
    if get_events {
        flags |= GETEVENTS;
    }
    let ts = ts.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 10^9: fits.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let arg = GetEventsArg {
        sigmask: 0,
        sigmask_sz: 0,
        min_wait_usec: 0,
        ts: ts.as_ref().map_or(0, |t| t as *const libc::timespec as u64),
    };
    let (argp, argsz) = match ts {
        Some(_) => {
            flags |= EXT_ARG;
            (
                &arg as *const GetEventsArg,
                std::mem::size_of::<GetEventsArg>(),
            )
        }
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `ring` is a ring's fd, or with REGISTERED_RING the index
    // of one this thread registered (the kernel checks both and fails
    // with EBADF otherwise: no memory of ours is named by them); `argp`
    // is null or points at `arg`, whose `ts` is null or points at
    // `ts`, both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring,
            to_submit,
            want,
            flags,
            argp,
            argsz,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use crate::bufring::Pool;
    use crate::sys::uring::{Op, Ring, RingOpts};

    /// A ring on `sock` receives one datagram through `wait`.
    fn one_datagram_completes(r: &mut Ring, sock: &UdpSocket, round: usize) {
        r.arm_recv(0).unwrap();
        r.submit().unwrap();
        sock.send_to(&[round as u8], sock.local_addr().unwrap())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = false;
        while !got && Instant::now() < deadline {
            r.wait(1, Some(Duration::from_millis(100))).unwrap();
            let n = r.reap();
            got = (0..n).any(|k| {
                let c = r.completion(k);
                c.op == Some(Op::Recv(0)) && c.res > 0
            });
        }
        assert!(got, "ring {round}: the datagram never completed");
        r.release_files();
    }

    const OPTS: RingOpts = RingOpts {
        sq_entries: 8,
        defer_taskrun: true,
    };

    /// A send the socket cannot take ends, after many wake-ups that find
    /// no room, in an io-wq thread blocked in sendmsg: on a congested link
    /// one echo worker had 805 of them. A ring allows one per socket.
    #[test]
    fn a_rings_blocked_sends_get_at_most_one_kernel_thread_per_socket() {
        let socks: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let fds: Vec<_> = socks.iter().map(|s| s.as_raw_fd()).collect();
        let pool = Pool::new(256, 4, 0, true).unwrap();
        // SAFETY: the pool outlives the ring (both locals; the ring goes first).
        let r = unsafe { Ring::new(&fds, &pool, 0, &OPTS) }.unwrap();
        // Zeros change nothing and read the limits back.
        let mut now = [0, 0];
        if r.ring
            .submitter()
            .register_iowq_max_workers(&mut now)
            .is_err()
        {
            eprintln!("skipped: this kernel does not bound io-wq threads (5.15+)");
            return;
        }
        assert_eq!(now[1], 3, "io-wq threads for socket I/O");
    }

    /// The kernel's table holds 16 rings per thread: rings that did not
    /// take themselves out when dropped would fill it by the 17th.
    #[test]
    fn a_dropped_ring_leaves_its_thread_table_and_waits_go_by_index() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let pool = Pool::new(256, 4, 0, true).unwrap();
        for round in 0..40 {
            // SAFETY: the pool outlives the ring (dropped at the end of
            // each round, the pool after the loop).
            let mut r = unsafe { Ring::new(&[sock.as_raw_fd()], &pool, 0, &OPTS) }.unwrap();
            if r.registered.is_none() {
                assert!(round == 0, "ring {round} found the thread's table full");
                eprintln!("skipped: this kernel does not register ring fds (5.18+)");
                return;
            }
            one_datagram_completes(&mut r, &sock, round);
        }
    }

    /// With the thread's table full (another library's rings), a ring is
    /// entered by its fd, and works the same.
    #[test]
    fn with_the_thread_table_full_waits_go_by_fd() {
        let others: Vec<io_uring::IoUring> = (0..16)
            .map(|_| io_uring::IoUring::new(2).unwrap())
            .collect();
        let taken: Vec<_> = others
            .iter()
            .map_while(|o| super::RegisteredRing::new(o.as_raw_fd()))
            .collect();
        if taken.len() < others.len() {
            eprintln!("skipped: this kernel does not register ring fds (5.18+)");
            return;
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let pool = Pool::new(256, 4, 0, true).unwrap();
        // SAFETY: the pool outlives the ring (both locals; the ring goes first).
        let mut r = unsafe { Ring::new(&[sock.as_raw_fd()], &pool, 0, &OPTS) }.unwrap();
        assert!(r.registered.is_none(), "a 17th ring found room");
        one_datagram_completes(&mut r, &sock, 0);
        drop(r);
        for (t, o) in taken.into_iter().zip(&others) {
            t.unregister(o.as_raw_fd());
        }
    }
}
