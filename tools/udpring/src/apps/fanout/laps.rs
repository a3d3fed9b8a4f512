//! Loops through groups: two relays that each send to a group the other
//! listens on (X: G1 -> G2, Y: G2 -> G1) pass one datagram round for ever,
//! and the server mark cannot stop them: it is a unicast TTL, while a
//! group's datagrams leave with the multicast TTL that scopes them (1 by
//! default). Measured on a bridge before this check: one datagram sent to
//! G1 made 291,434 relays each way in 3 s.
//!
//! What a loop looks like from inside one relay: bytes it relayed come
//! back, from another address (the other relay), again and again. So a
//! relay with a group among its destinations remembers what it relayed:
//! for each datagram a digest of its bytes, the address that sent it first
//! and when, in a fixed table ([`SLOTS`] entries, nothing allocated per
//! datagram). The same bytes from another address within [`WINDOW`] are a
//! lap; after [`MAX_LAPS`] laps they are not relayed again (counted in
//! `looped`), so a loop ends within a few laps of each datagram. The same
//! bytes from the same address (a sender repeating itself) always pass.
//!
//! The cost of it, plainly: up to [`MAX_LAPS`] senders may send identical
//! bytes within a second and be relayed; one more is taken for a lap and
//! dropped (counted). The digest reads a datagram's length, its first 64
//! bytes and its last 16, so datagrams that differ only in between also
//! count as the same: streams that carry a sequence number or a timestamp
//! near either end (RTP, most market data and telemetry) never do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Entries of the table (a power of two: a digest picks one).
pub const SLOTS: usize = 4096;
/// How long a relayed datagram is remembered.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Laps a datagram may make (the same bytes from other addresses within
/// [`WINDOW`]) before it is dropped.
pub const MAX_LAPS: u8 = 3;

#[derive(Clone, Copy, Debug)]
struct Slot {
    digest: u64,
    first: SocketAddr,
    at: Instant,
    laps: u8,
}

/// What a relay remembers of what it relayed.
#[derive(Clone)]
pub struct Laps {
    slots: Box<[Option<Slot>]>,
}

impl Default for Laps {
    fn default() -> Self {
        Laps {
            slots: vec![None; SLOTS].into_boxed_slice(),
        }
    }
}

impl std::fmt::Debug for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        write!(f, "Laps {{ {used} of {SLOTS} slots used }}")
    }
}

/// A 64-bit digest of a datagram: its length, first 64 and last 16 bytes.
pub fn digest(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(K).rotate_left(29);
    let mut h = mix(0, bytes.len() as u64);
    let head = &bytes[..bytes.len().min(64)];
    let tail = &bytes[bytes.len().saturating_sub(16)..];
    for part in [head, tail] {
        for c in part.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            h = mix(h, u64::from_le_bytes(w));
        }
    }
    h ^ (h >> 32)
}

impl Laps {
    /// Whether `bytes` from `from`, arriving at `now`, are a lap too many of
    /// a datagram relayed within [`WINDOW`]; remembers them otherwise.
    pub fn looped(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) -> bool {
        let d = digest(bytes);
        let slot = &mut self.slots[(d as usize) & (SLOTS - 1)];
        match slot {
            Some(s) if s.digest == d && now.duration_since(s.at) < WINDOW => {
                if s.first == from {
                    return false;
                }
                if s.laps >= MAX_LAPS {
                    return true;
                }
                s.laps += 1;
                false
            }
            _ => {
                *slot = Some(Slot {
                    digest: d,
                    first: from,
                    at: now,
                    laps: 0,
                });
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_datagram_from_other_addresses_passes_max_laps_times_in_the_window() {
        let mut l = Laps::default();
        let t = Instant::now();
        let bytes = b"one datagram going round";
        assert!(!l.looped(bytes, addr(1), t), "first seen");
        for lap in 0..MAX_LAPS {
            assert!(!l.looped(bytes, addr(2), t), "lap {lap}");
        }
        assert!(l.looped(bytes, addr(2), t), "one lap too many");
        assert!(l.looped(bytes, addr(3), t), "from any other address");
        // The first sender repeating itself always passes.
        assert!(!l.looped(bytes, addr(1), t));
        // After the window the same bytes are new again.
        assert!(!l.looped(bytes, addr(2), t + WINDOW));
        // Other bytes are another datagram.
        assert!(!l.looped(b"another one", addr(2), t));
    }

    #[test]
    fn the_digest_reads_length_head_and_tail() {
        let a = vec![7u8; 200];
        let mut b = a.clone();
        b[100] = 8; // between head and tail: the same digest
        assert_eq!(digest(&a), digest(&b));
        for i in [0, 63, 190, 199] {
            let mut c = a.clone();
            c[i] = 8;
            assert_ne!(digest(&a), digest(&c), "byte {i}");
        }
        assert_ne!(digest(&a), digest(&a[..199]));
        assert_ne!(digest(b""), digest(b"\0"));
    }
}
