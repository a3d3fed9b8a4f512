//! TX timestamps through io_uring (`SOCKET_URING_OP_TX_TIMESTAMP`, Linux
//! 6.15): an `IORING_OP_URING_CMD` that stays armed on a socket (the
//! kernel polls it for `EPOLLERR`) and, each time TX timestamps land on the
//! socket's error queue, takes them all and posts one 32-byte completion
//! each, in task work: no system call per timestamp, where
//! `recvmsg(MSG_ERRQUEUE)` costs one each (and one more to find the queue
//! empty).
//!
//! The command needs a ring with 32-byte completions (`IORING_SETUP_CQE32`:
//! the time travels in the second half); the engine's rings have 16-byte
//! ones, so a worker that asks for TX timestamps keeps this small ring
//! beside its own and reads its completion queue (memory, no system call)
//! on every loop. Each completion with `IORING_CQE_F_MORE` is one
//! timestamp: `res` is the ID (`ee_data`, the send's `SCM_TS_OPT_ID`),
//! `flags >> IORING_TIMESTAMP_TYPE_SHIFT` its type (`SCM_TSTAMP_SND` = 0
//! for the software TX stamp), `IORING_CQE_F_TSTAMP_HW` marks a hardware
//! one, and the extra 16 bytes are a `struct io_timespec { u64 tv_sec; u64
//! tv_nsec; }`. A completion without `F_MORE` ends the command: at once
//! with `-EINVAL`/`-EOPNOTSUPP` on a kernel without it (the setup then
//! fails and the worker reads the error queue itself); later on a
//! cancellation or a full completion queue (re-armed). Other entries
//! (ICMP errors) stay on the queue for `recvmsg`.
//!
//! Linux 6.18 (seen on 6.18.44): when a 32-byte completion is due in the
//! last slot of the queue, the kernel's wrap padding meant for
//! `IORING_SETUP_CQE_MIXED` rings advances the tail past that slot
//! without writing it (its dummy lands elsewhere), so the slot still holds
//! the completion of one lap before: the same stamp would be delivered
//! twice. Each slot's last completion is remembered, and one read again
//! unchanged is skipped (counted in [`TxStampRing::stale`]); a real stamp
//! never repeats one a lap old (same ID, same nanosecond).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

/// `SOCKET_URING_OP_TX_TIMESTAMP` (`enum io_uring_socket_op`).
const SOCKET_URING_OP_TX_TIMESTAMP: u32 = 4;
/// `IORING_CQE_F_TSTAMP_HW`: `1 << IORING_CQE_BUFFER_SHIFT`.
const CQE_F_TSTAMP_HW: u32 = 1 << 16;
/// `IORING_TIMESTAMP_TYPE_SHIFT`: `IORING_CQE_BUFFER_SHIFT + 1`.
const TIMESTAMP_TYPE_SHIFT: u32 = 17;
/// `IORING_CQE_F_SKIP`: a padding completion (`CQE_MIXED` rings).
const CQE_F_SKIP: u32 = 1 << 5;
/// `SCM_TSTAMP_SND`: the stamp taken as the device gets the datagram.
const SCM_TSTAMP_SND: u32 = 0;
/// Completion queue size: timestamps waiting beyond it stay on the error
/// queue until the command is re-armed.
const CQ_ENTRIES: u32 = 1024;
/// User data of the cancellations.
const CANCEL: u64 = u64::MAX;

/// A small ring with 32-byte completions holding one armed timestamp
/// command per socket.
pub struct TxStampRing {
    ring: IoUring<squeue::Entry, cqueue::Entry32>,
    fds: Vec<RawFd>,
    armed: Vec<bool>,
    /// Stamps posted while the commands were armed (already waiting on
    /// the queue then), kept for the first [`TxStampRing::take`].
    early: Vec<(usize, u32, u64)>,
    /// Completions read so far (the queue's head, unmasked).
    head: usize,
    /// Per slot of the completion queue, what was last read there.
    shadow: Vec<(i32, u32, [u64; 2])>,
    /// Completions skipped as stale (see the module doc).
    pub stale: u64,
}

impl TxStampRing {
    /// Sets up the ring and arms the command on each of `fds`; `Err` when
    /// the kernel has no such command (or no 32-byte completions).
    pub fn new(fds: &[RawFd]) -> io::Result<Self> {
        Self::with_cq(fds, CQ_ENTRIES)
    }

    /// [`TxStampRing::new`] with `cq` completion slots.
    fn with_cq(fds: &[RawFd], cq: u32) -> io::Result<Self> {
        let mut ring = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
            .setup_cqsize(cq)
            .build(fds.len().next_power_of_two().max(4) as u32)?;
        let slots = ring.completion().capacity();
        let mut r = TxStampRing {
            ring,
            fds: fds.to_vec(),
            armed: vec![false; fds.len()],
            early: Vec::new(),
            head: 0,
            shadow: vec![(0, 0, [0; 2]); slots],
            stale: 0,
        };
        for i in 0..fds.len() {
            r.arm(i)?;
        }
        r.ring.submit()?;
        // An unknown command fails at issue, inside the submit; stamps
        // already queued are posted there too.
        let mut early = Vec::new();
        let mut failed = None;
        r.read(
            |i, id, ns| early.push((i, id, ns)),
            |_, res| {
                if res < 0 {
                    failed = Some(res);
                }
            },
        );
        if let Some(res) = failed {
            return Err(io::Error::from_raw_os_error(-res));
        }
        r.early = early;
        Ok(r)
    }

    fn arm(&mut self, i: usize) -> io::Result<()> {
        let e = opcode::UringCmd16::new(Fd(self.fds[i]), SOCKET_URING_OP_TX_TIMESTAMP)
            .build()
            .user_data(i as u64);
        // SAFETY: the command points at no memory of ours (its results
        // come back in the completions).
        unsafe { self.ring.submission().push(&e) }
            .map_err(|_| io::Error::other("timestamp ring full"))?;
        self.armed[i] = true;
        Ok(())
    }

    /// Hands every timestamp posted so far to `each(socket index, id, ns
    /// since the epoch)` without a system call (unless a command ended and
    /// is re-armed). `flush`: enter the ring first, so that timestamps
    /// whose task work is pending are posted. Returns how many.
    pub fn take(&mut self, flush: bool, mut each: impl FnMut(usize, u32, u64)) -> usize {
        let mut n = 0;
        for (i, id, ns) in self.early.drain(..) {
            each(i, id, ns);
            n += 1;
        }
        if flush {
            let _ = self.ring.submit();
        }
        let mut ended = Vec::new();
        n += self.read(&mut each, |i, _| ended.push(i));
        for i in ended {
            self.armed[i] = false;
            if self.arm(i).is_ok() {
                let _ = self.ring.submit();
            }
        }
        n
    }

    /// Reads the completion queue: each software stamp to `each`, each
    /// ended command (socket index, result) to `ended`.
    fn read(
        &mut self,
        mut each: impl FnMut(usize, u32, u64),
        mut ended: impl FnMut(usize, i32),
    ) -> usize {
        let mut n = 0;
        let slots = self.shadow.len();
        for c in self.ring.completion() {
            let key = (c.result(), c.flags(), *c.big_cqe());
            let seen = std::mem::replace(&mut self.shadow[self.head % slots], key);
            self.head = self.head.wrapping_add(1);
            if key == seen || c.flags() & CQE_F_SKIP != 0 {
                self.stale += 1;
                continue;
            }
            let Some(i) = usize::try_from(c.user_data())
                .ok()
                .filter(|&i| i < self.fds.len())
            else {
                continue;
            };
            if !cqueue::more(c.flags()) {
                ended(i, c.result());
                continue;
            }
            let ty = c.flags() >> TIMESTAMP_TYPE_SHIFT;
            let [sec, nsec] = *c.big_cqe();
            let hw = c.flags() & CQE_F_TSTAMP_HW != 0;
            if ty == SCM_TSTAMP_SND && !hw && nsec < 1_000_000_000 && sec > 0 {
                each(
                    i,
                    c.result() as u32,
                    sec.saturating_mul(1_000_000_000) + nsec,
                );
                n += 1;
            }
        }
        n
    }
}

impl Drop for TxStampRing {
    /// Cancels the commands and waits (bounded) for them to end: an armed
    /// command holds its socket open, and a ring torn down later would keep
    /// the port bound after the engine has stopped.
    fn drop(&mut self) {
        let e = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        // SAFETY: a cancel points at no memory of ours.
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.armed.iter().any(|&a| a) && std::time::Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(20));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for c in self.ring.completion() {
                if let Some(a) = usize::try_from(c.user_data())
                    .ok()
                    .and_then(|i| self.armed.get_mut(i))
                    && !cqueue::more(c.flags())
                {
                    *a = false;
                }
            }
        }
    }
}

/// Whether this kernel has the io_uring TX-timestamp command: a datagram
/// to a socket of our own on loopback, stamped, then harvested.
pub fn probe() -> Result<(), String> {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    let run = || -> io::Result<usize> {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        tx.connect(rx.local_addr()?)?;
        let fd = tx.as_raw_fd();
        super::socket::set_tx_timestamps(fd)?;
        super::socket::send_stamped(fd, b"probe", 7)?;
        let mut ring = TxStampRing::new(&[fd])?;
        // The loopback stamp is taken inside the send; allow for a slow
        // machine anyway.
        for _ in 0..50 {
            let mut got = 0;
            ring.take(true, |_, id, _| got += usize::from(id == 7));
            if got > 0 {
                return Ok(got);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(0)
    };
    match run() {
        Ok(0) => Err("the command returned no timestamp".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("SOCKET_URING_OP_TX_TIMESTAMP: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Many laps of a small completion queue: every stamp exactly once,
    /// in order (the stale slot of the module doc is skipped).
    #[test]
    fn every_stamp_once_across_many_laps() {
        if probe().is_err() {
            return; // said by the test below
        }
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let fd = tx.as_raw_fd();
        crate::sys::socket::set_tx_timestamps(fd).unwrap();
        let mut ring = TxStampRing::with_cq(&[fd], 8).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for batch in 0..60u32 {
            for k in 0..3 {
                crate::sys::socket::send_stamped(fd, b"x", batch * 3 + k).unwrap();
                rx.recv(&mut buf).unwrap();
            }
            for _ in 0..100 {
                ring.take(true, |_, id, _| got.push(id));
                if got.len() as u32 >= batch * 3 + 3 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(
            got,
            (0..180).collect::<Vec<u32>>(),
            "stale skipped: {}",
            ring.stale
        );
    }

    /// Three stamped sends and one plain one: exactly the three IDs come
    /// back, and a second harvest finds nothing.
    #[test]
    fn harvests_the_stamps_asked_for() {
        if let Err(why) = probe() {
            // The command is in Linux 6.15: on a kernel that has it, a
            // failing probe is a bug, not a reason to skip.
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let mut v = release
                .split(['.', '-'])
                .map(|p| p.parse::<u32>().unwrap_or(0));
            let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
            assert!(
                (major, minor) < (6, 15),
                "Linux {release} has SOCKET_URING_OP_TX_TIMESTAMP, yet: {why}"
            );
            eprintln!("skipping: io_uring TX timestamps not available: {why}");
            return;
        }
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let fd = tx.as_raw_fd();
        crate::sys::socket::set_tx_timestamps(fd).unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        // One waits on the queue before the command is armed.
        crate::sys::socket::send_stamped(fd, b"x", 5).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut ring = TxStampRing::new(&[fd]).unwrap();
        let mut got = Vec::new();
        for round in 0..2 {
            for id in [11, 12, 13] {
                crate::sys::socket::send_stamped(fd, b"x", id + round * 10).unwrap();
            }
            tx.send(b"plain").unwrap();
            for _ in 0..50 {
                ring.take(true, |_, id, ns| got.push((id, ns)));
                if got.len() > 3 * (round as usize + 1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![5, 11, 12, 13, 21, 22, 23],
            "the command stays armed across batches"
        );
        assert!(got.iter().all(|g| g.1 >= before));
        assert_eq!(ring.take(true, |_, _, _| {}), 0);
    }
}
