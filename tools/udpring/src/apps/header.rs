//! The load generator's payload header, read and written in place.
//!
//! ```text
//!  0       4       8               16              24              32
//!  +-------+-------+---------------+---------------+---------------+
//!  | magic | flow  |     token     |   sequence    |  send time ns |
//!  +-------+-------+---------------+---------------+---------------+
//! ```
//!
//! All fields big-endian. `token` is 64 random bits per run (from the
//! kernel), so replies to another run, another tool's datagrams that happen
//! to start with the magic, and datagrams a stranger forges without seeing
//! the run's traffic are told apart. The send time is the *intended* send time on the sender's
//! monotonic clock, in nanoseconds since the run's start.

use std::fmt;

/// "UDPR".
pub const MAGIC: u32 = 0x5544_5052;
/// Header length in bytes: the smallest payload the load generator sends.
pub const HEADER_LEN: usize = 32;

/// Why a buffer is not a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than [`HEADER_LEN`].
    Truncated,
    /// The magic number is wrong: not ours.
    BadMagic,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated => write!(f, "shorter than the {HEADER_LEN}-byte header"),
            HeaderError::BadMagic => f.write_str("not a udpring load datagram (bad magic)"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// A zero-copy view of a header at the start of `buf`.
#[derive(Clone, Copy, Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buf: T,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buf` without checking it; getters panic on a short buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Header { buf }
    }

    /// Wraps `buf` after checking its length and magic.
    pub fn new_checked(buf: T) -> Result<Self, HeaderError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        if be32(b, 0) != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        Ok(Header { buf })
    }

    /// The flow (source socket) id.
    pub fn flow(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    /// The run token.
    pub fn token(&self) -> u64 {
        be64(self.buf.as_ref(), 8)
    }
    /// The sequence number within the flow.
    pub fn seq(&self) -> u64 {
        be64(self.buf.as_ref(), 16)
    }
    /// Intended send time, ns since the run's start.
    pub fn sent_ns(&self) -> u64 {
        be64(self.buf.as_ref(), 24)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Writes a whole header.
    pub fn fill(&mut self, token: u64, flow: u32, seq: u64, sent_ns: u64) {
        let b = self.buf.as_mut();
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&flow.to_be_bytes());
        b[8..16].copy_from_slice(&token.to_be_bytes());
        b[16..24].copy_from_slice(&seq.to_be_bytes());
        b[24..32].copy_from_slice(&sent_ns.to_be_bytes());
    }

    /// Writes only the sequence and the time, over a header whose magic,
    /// flow and token are already in place.
    pub fn fill_seq_time(&mut self, seq: u64, sent_ns: u64) {
        let b = self.buf.as_mut();
        b[16..24].copy_from_slice(&seq.to_be_bytes());
        b[24..32].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// Writes sequence `seq0 + k` and time `due[k]` into the header at `off`
/// of segment `k` of `train` (`size`-byte segments), over headers whose
/// magic, flow and token are in place: the per-datagram work of a
/// templated load train, 16 bytes each. A segment too short for a header
/// (a train's odd last one) is left as it is.
pub fn stamp_train(train: &mut [u8], size: usize, off: usize, seq0: u64, due: &[u64]) {
    let at = off + 16;
    if size == 0 || size < at + 16 {
        return;
    }
    let mut seq = seq0;
    for (seg, &t) in train.chunks_mut(size).zip(due) {
        if let Some(h) = seg.get_mut(at..at + 16) {
            let (s, t_) = h.split_at_mut(8);
            s.copy_from_slice(&seq.to_be_bytes());
            t_.copy_from_slice(&t.to_be_bytes());
        }
        seq = seq.wrapping_add(1);
    }
}

/// sockperf's message header: u64 sequence, u16 flags, u32 length.
pub mod sockperf {
    /// Its length.
    pub const LEN: usize = 14;
    /// Flag: sent by a client.
    pub const CLIENT: u16 = 1;
    /// Flag: the client wants a reply.
    pub const PONG_REQUEST: u16 = 2;

    /// Writes a client ping header (client + pong-request flags).
    pub fn fill(buf: &mut [u8], seq: u64, total_len: usize) {
        buf[0..8].copy_from_slice(&seq.to_be_bytes());
        buf[8..10].copy_from_slice(&(CLIENT | PONG_REQUEST).to_be_bytes());
        buf[10..14].copy_from_slice(&(total_len as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let mut b = [0u8; 40];
        Header::new_unchecked(&mut b[..]).fill(7, 3, 1 << 40, 12345);
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(
            (h.token(), h.flow(), h.seq(), h.sent_ns()),
            (7, 3, 1 << 40, 12345)
        );
        assert_eq!(
            Header::new_checked(&b[..31]).unwrap_err(),
            HeaderError::Truncated
        );
        b[0] ^= 1;
        assert_eq!(
            Header::new_checked(&b[..]).unwrap_err(),
            HeaderError::BadMagic
        );
        assert_eq!(
            Header::new_checked(&[][..]).unwrap_err(),
            HeaderError::Truncated
        );
    }

    /// A templated train: each whole segment gets its own sequence and
    /// time and nothing else changes; a last segment too short for a
    /// header, or a segment size too small for one, is left alone.
    #[test]
    fn stamp_train_writes_each_segment_and_nothing_else() {
        let (size, off) = (50, 8);
        let mut train = vec![0u8; 3 * size + 20];
        for seg in train.chunks_mut(size) {
            if seg.len() >= off + HEADER_LEN {
                Header::new_unchecked(&mut seg[off..]).fill(9, 4, 0, 0);
            }
        }
        let before = train.clone();
        stamp_train(&mut train, size, off, 100, &[7, 8, 9, 10]);
        for (k, seg) in train.chunks(size).enumerate() {
            if k < 3 {
                let h = Header::new_checked(&seg[off..]).unwrap();
                let got = (h.token(), h.flow(), h.seq(), h.sent_ns());
                assert_eq!(got, (9, 4, 100 + k as u64, 7 + k as u64));
                assert_eq!(seg[..off + 16], before[k * size..k * size + off + 16]);
                assert_eq!(seg[off + 32..], before[k * size + off + 32..(k + 1) * size]);
            } else {
                assert_eq!(seg, &before[k * size..], "the short last segment");
            }
        }
        // An odd last segment long enough for a header gets one.
        let mut t4 = vec![0u8; 2 * size + off + HEADER_LEN + 5];
        let copy = t4.clone();
        stamp_train(&mut t4, size, off, 40, &[1, 2, 3]);
        let last = Header::new_unchecked(&mut t4[2 * size + off..]);
        assert_eq!((last.seq(), last.sent_ns()), (42, 3));
        let mut t5 = copy.clone();
        stamp_train(&mut t5, size, off, 40, &[1, 2]);
        assert_eq!(
            t5[2 * size..],
            copy[2 * size..],
            "no time for it: left alone"
        );
        // Fewer times than segments: only that many are stamped.
        let mut t2 = before.clone();
        stamp_train(&mut t2, size, off, 5, &[1]);
        assert_eq!(Header::new_checked(&t2[off..]).unwrap().seq(), 5);
        assert_eq!(t2[size..], before[size..]);
        // A segment size with no room for a header: untouched.
        let mut t3 = before.clone();
        stamp_train(&mut t3, off + 31, off, 5, &[1, 2, 3]);
        assert_eq!(t3, before);
        stamp_train(&mut t3, 0, 0, 5, &[1]);
        assert_eq!(t3, before);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes: a checked view either refuses them with the right
            /// reason or reads all four fields without panicking.
            #[test]
            fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..80)) {
                match Header::new_checked(&buf[..]) {
                    Ok(h) => {
                        prop_assert!(buf.len() >= HEADER_LEN);
                        let _ = (h.token(), h.flow(), h.seq(), h.sent_ns());
                    }
                    Err(HeaderError::Truncated) => prop_assert!(buf.len() < HEADER_LEN),
                    Err(HeaderError::BadMagic) => prop_assert!(buf[..4] != MAGIC.to_be_bytes()),
                }
            }

            /// What is written reads back, whatever follows the header.
            #[test]
            fn written_headers_read_back(
                token in any::<u64>(), flow in any::<u32>(), seq in any::<u64>(), t in any::<u64>(),
                tail in proptest::collection::vec(any::<u8>(), 0..40),
            ) {
                let mut b = vec![0u8; HEADER_LEN];
                b.extend_from_slice(&tail);
                Header::new_unchecked(&mut b[..]).fill(token, flow, seq, t);
                let h = Header::new_checked(&b[..]).unwrap();
                prop_assert_eq!((h.token(), h.flow(), h.seq(), h.sent_ns()), (token, flow, seq, t));
                prop_assert_eq!(&b[HEADER_LEN..], &tail[..]);
            }

            /// The stride loop writes what a segment-by-segment stamp
            /// would, and nothing else, for any train, segment size,
            /// header offset and number of times (odd last segments, too
            /// short ones, segments without room for a header).
            #[test]
            fn stamp_train_is_a_stamp_per_segment(
                train in proptest::collection::vec(any::<u8>(), 0..700),
                size in 0usize..120, off in 0usize..40, seq0 in any::<u64>(),
                due in proptest::collection::vec(any::<u64>(), 0..20),
            ) {
                let mut want = train.clone();
                if size > 0 {
                    for (k, (seg, &t)) in want.chunks_mut(size).zip(&due).enumerate() {
                        if let Some(h) = seg.get_mut(off + 16..off + 32) {
                            h[..8].copy_from_slice(&seq0.wrapping_add(k as u64).to_be_bytes());
                            h[8..].copy_from_slice(&t.to_be_bytes());
                        }
                    }
                }
                let mut got = train.clone();
                stamp_train(&mut got, size, off, seq0, &due);
                prop_assert_eq!(got, want);
            }
        }
    }
}
