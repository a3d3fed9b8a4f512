//! The io_uring probe: can this kernel and process run the `uring`
//! backend (ring setup, the opcodes used, a registered buffer ring, and a
//! multishot receive that really delivers a datagram)?

use std::io;
use std::time::Duration;

use io_uring::{IoUring, opcode};

use super::uring::{Completion, Op, Ring, RingOpts};
use crate::bufring::Pool;

/// Why io_uring_setup said `e`, where that is known (see [`refused_why`]).
fn setup_refused(e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|v| v.trim().parse::<u8>().ok());
    refused_why(e.raw_os_error(), disabled)
}

/// `EPERM` from the `kernel.io_uring_disabled` sysctl (2: for everyone;
/// 1: but for root and the group in `kernel.io_uring_group`) or, where
/// that is 0, from a seccomp filter (a container runtime's default profile
/// refuses io_uring); `ENOSYS` from a kernel built without it.
fn refused_why(errno: Option<i32>, disabled: Option<u8>) -> String {
    match (errno, disabled) {
        (Some(libc::EPERM), Some(2)) => {
            ": sysctl kernel.io_uring_disabled is 2, off for every process".into()
        }
        (Some(libc::EPERM), Some(1)) => {
            ": sysctl kernel.io_uring_disabled is 1, on only for root and the group \
             kernel.io_uring_group"
                .into()
        }
        (Some(libc::EPERM), _) => {
            ": refused by a seccomp filter (as a container runtime's default profile)".into()
        }
        (Some(libc::ENOSYS), _) => ": this kernel is built without io_uring".into(),
        _ => String::new(),
    }
}

/// Checks that this kernel and process can run the uring backend: ring
/// setup, the opcodes used, a registered buffer ring, and a multishot
/// `RecvMsgMulti` that really delivers a datagram on loopback.
pub fn probe() -> Result<(), String> {
    use std::time::Instant;
    let ring =
        IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}{}", setup_refused(&e)))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::Send::CODE, "SEND"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("io_uring opcode {name} not supported"));
        }
    }
    drop(ring);
    // A real round trip through a multishot receive on a buffer ring.
    let sock =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let pool = Pool::new(256, 2, 0, true).map_err(|e| format!("probe pool: {e}"))?;
    let opts = RingOpts {
        sq_entries: 8,
        defer_taskrun: false,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: the pool outlives the ring: both are locals, the ring is
    // dropped (or leaked together with the pool) below.
    let mut r = unsafe { Ring::new(&[sock.as_raw_fd()], &pool, 0, &opts) }
        .map_err(|e| format!("buffer ring registration failed: {e}"))?;
    r.arm_recv(0).map_err(|e| e.to_string())?;
    r.submit().map_err(|e| e.to_string())?;
    sock.send_to(b"p", addr)
        .map_err(|e| format!("probe send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = None;
    // The multishot stays armed until a completion without F_MORE.
    let mut armed = true;
    while seen.is_none() && Instant::now() < deadline {
        if let Err(e) = r.wait(1, Some(Duration::from_millis(100))) {
            seen = Some(Completion {
                op: None,
                res: -e.raw_os_error().unwrap_or(libc::EIO),
                flags: 0,
            });
            break;
        }
        let n = r.reap();
        seen = (0..n)
            .map(|k| r.completion(k))
            .find(|c| c.op == Some(Op::Recv(0)));
        armed &= seen.is_none_or(|c| c.more());
    }
    let result = match seen {
        Some(c) if c.res > 0 && c.more() && c.buffer().is_some() => Ok(()),
        Some(c) if c.res < 0 => Err(format!(
            "multishot RecvMsg failed: {}",
            io::Error::from_raw_os_error(-c.res)
        )),
        Some(_) => Err("multishot RecvMsg not supported (no F_MORE)".into()),
        None => Err("multishot RecvMsg delivered nothing".into()),
    };
    // Cancel and reap so the kernel holds nothing when pool and ring go.
    if armed {
        let _ = r.cancel(Op::Recv(0));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while armed && Instant::now() < deadline {
        let _ = r.wait(1, Some(Duration::from_millis(50)));
        let n = r.reap();
        if (0..n).any(|k| {
            let c = r.completion(k);
            c.op == Some(Op::Recv(0)) && !c.more()
        }) {
            armed = false;
        }
    }
    if armed {
        std::mem::forget(r);
        std::mem::forget(pool);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_setup_says_which_switch_refused_it() {
        let why = |errno, sysctl| refused_why(Some(errno), sysctl);
        assert!(why(libc::EPERM, Some(2)).contains("io_uring_disabled is 2"));
        assert!(why(libc::EPERM, Some(1)).contains("io_uring_group"));
        assert!(why(libc::EPERM, Some(0)).contains("seccomp"));
        assert!(why(libc::ENOSYS, None).contains("without io_uring"));
        assert_eq!(why(libc::ENOMEM, Some(2)), "", "not a refusal");
    }
}
