//! Everything that talks to the kernel directly.
//!
//! The rest of the crate is safe code over the few types defined here and in
//! [`crate::bufring`]. Each libc call goes through `syscall!`, which turns
//! the C convention (`-1` and `errno`) into `io::Result`. Nothing here knows
//! the engine above it: no worker, handler or engine type is imported; the
//! records the two sides exchange ([`RecvMeta`], [`Transmit`]) are defined
//! here.
//!
//! | file | what |
//! |---|---|
//! | `addr.rs` | [`RawAddr`]: a socket address in kernel form, inline, so a send can point the kernel at it while in flight |
//! | `cmsg.rs` | control messages: one reader ([`CmsgIter`](cmsg::CmsgIter)), one writer, what a received datagram's say (`RecvCmsg`) |
//! | `socket.rs` | socket options and calls socket2 and nix do not cover |
//! | `errqueue.rs` | the socket error queue ([`QueuedError`]) |
//! | `event.rs` | the worker's eventfd and `ppoll` |
//! | `cpu.rs` | pinning threads, the CPUs the process may use |
//! | `clock.rs` | the coarse monotonic clock the loops pace their checks by |
//! | `signal.rs` | SIGINT/SIGTERM/SIGHUP as a flag |
//! | `random.rs` | `getrandom(2)`: run tokens strangers cannot guess |
//! | `meta.rs` | [`RecvMeta`] and [`Transmit`] |
//! | `mcast.rs` | multicast and broadcast options |
//! | `mmsg.rs` | header arrays for `recvmmsg`/`sendmmsg` |
//! | `uring/` | the io_uring ring: setup, registration, entries (`mod.rs`); what each request is for and its completions (`op.rs`) |
//! | `uring_probe.rs` | whether this kernel can run the `uring` backend |
//! | `txstamp.rs` | TX timestamps by io_uring command, where the kernel has it |
//! | `xdp/` | AF_XDP: the XDP program (`bpf(2)`), the socket and its rings, netlink lookups, the worker's port over its pool |

/// Calls a libc function and turns `-1` into the thread's `errno`.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: every call site passes pointers to live, correctly sized
        // memory owned by the caller for the duration of the call; see the
        // comment at each call site for what the kernel keeps afterwards.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Makes a system call by number (`libc::syscall`), turning `-1` into the
/// thread's `errno`: for the parked worker's `recvmsg` and `sendto`, whose
/// libc wrappers are cancellation points (two calls into libc's thread
/// code around each system call; a thread of this crate is never
/// cancelled). Each argument is passed as a `c_long`, as the kernel takes
/// it, in the system call's order.
macro_rules! direct {
    ($nr: ident ( $($arg: expr),* $(,)* ) ) => {
        syscall!(syscall(libc::$nr, $($arg as libc::c_long, )*))
    };
}

pub(crate) mod addr;
pub(crate) mod clock;
pub(crate) mod cmsg;
pub(crate) mod cpu;
pub(crate) mod errqueue;
pub(crate) mod event;
pub mod mcast;
pub(crate) mod meta;
pub(crate) mod mmsg;
pub(crate) mod random;
pub(crate) mod signal;
pub(crate) mod socket;
pub(crate) mod txstamp;
pub(crate) mod uring;
pub(crate) mod uring_probe;
pub(crate) mod xdp;

pub(crate) use addr::{
    RawAddr, SrcIp, canonical, canonical_ip, fixed_destination, unspecified_like,
};
pub(crate) use errqueue::{Queued, QueuedError, read_errqueue, take_socket_error};
pub(crate) use event::{EventFd, poll};
pub(crate) use meta::{RecvMeta, Transmit};
