//! What each request on a worker's ring is for ([`Op`], carried in the
//! SQE's user data) and its completions as the loop reads them.

use io_uring::cqueue;

/// What a request (and so each of its completions) is for, carried in the
/// SQE's user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The multishot receive on socket `n` (index in the worker).
    Recv(u32),
    /// The send using send header `n`.
    Send(u32),
    /// The multishot poll on the wake-up eventfd.
    Wake,
    /// An `AsyncCancel` (its own completion carries nothing we need).
    Cancel,
    /// The multishot poll for the error queue of socket `n` (armed when
    /// TX timestamps are on: they do not fail a receive as errors do).
    Errors(u32),
    /// The worker's timer: a pure timeout (`IORING_OP_TIMEOUT`) that
    /// completes with `-ETIME` when the handler's next timer is due, so
    /// that waiting for completions needs no timeout of its own.
    Timer,
}

impl Op {
    const TAG_SHIFT: u32 = 56;

    pub(super) fn encode(self) -> u64 {
        let (tag, n) = match self {
            Op::Recv(n) => (1u64, n),
            Op::Send(n) => (2, n),
            Op::Wake => (3, 0),
            Op::Cancel => (4, 0),
            Op::Errors(n) => (5, n),
            Op::Timer => (6, 0),
        };
        tag << Self::TAG_SHIFT | u64::from(n)
    }

    pub(super) fn decode(ud: u64) -> Option<Op> {
        let n = u32::try_from(ud & ((1 << Self::TAG_SHIFT) - 1)).ok()?;
        match ud >> Self::TAG_SHIFT {
            1 => Some(Op::Recv(n)),
            2 => Some(Op::Send(n)),
            3 if n == 0 => Some(Op::Wake),
            4 if n == 0 => Some(Op::Cancel),
            5 => Some(Op::Errors(n)),
            6 if n == 0 => Some(Op::Timer),
            _ => None,
        }
    }
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// What it is for; `None` for user data this ring never set (counted by
    /// the caller as invalid).
    pub op: Option<Op>,
    /// The result: bytes, or a negated errno.
    pub res: i32,
    /// `IORING_CQE_F_*`.
    pub flags: u32,
}

impl Completion {
    /// Whether more completions will follow for this (multishot) request.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
    /// The provided buffer the kernel filled, if any.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_rejects_strangers() {
        for op in [
            Op::Recv(0),
            Op::Recv(1023),
            Op::Send(u32::MAX),
            Op::Wake,
            Op::Cancel,
            Op::Errors(3),
            Op::Timer,
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
        assert_eq!(Op::decode(u64::MAX), None);
        assert_eq!(Op::decode(3 << 56 | 5), None, "a wake carries no index");
    }
}
