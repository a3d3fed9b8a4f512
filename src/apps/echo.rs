//! The echo service: every datagram goes back to its sender from its own
//! buffer. With `sockperf` on, the client flag of sockperf's header is
//! cleared first, so `sockperf ping-pong` accepts the replies.

use crate::{Datagram, Handler, Transport};

/// Length of sockperf's message header: u64 sequence, u16 flags, u32 length.
pub const SOCKPERF_HEADER: usize = 14;

/// Echo handler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo {
    /// Clear sockperf's client flag (byte 9, bit 0) in each datagram.
    pub sockperf: bool,
    /// Datagrams too short for a sockperf header (echoed unchanged).
    pub short: u64,
    /// Reply to nothing (a sink): received datagrams are only counted.
    pub discard: bool,
}

impl Echo {
    /// A plain echo.
    pub fn new() -> Self {
        Echo::default()
    }
    /// An echo that speaks sockperf's header.
    pub fn sockperf() -> Self {
        Echo {
            sockperf: true,
            ..Echo::default()
        }
    }
}

/// Clears sockperf's client flag in every segment of `buf` (segments of
/// `segment` bytes; 0 for one datagram). Returns false if a segment is too
/// short to carry the header.
pub fn clear_sockperf_client_flag(buf: &mut [u8], segment: usize) -> bool {
    let seg = if segment == 0 {
        buf.len().max(1)
    } else {
        segment
    };
    let mut ok = true;
    for chunk in buf.chunks_mut(seg) {
        if chunk.len() < SOCKPERF_HEADER {
            ok = false;
            continue;
        }
        chunk[9] &= !1;
    }
    ok
}

impl Handler for Echo {
    fn on_datagram(&mut self, mut dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        if self.discard {
            return;
        }
        if self.sockperf {
            let seg = dgram.segment_size().unwrap_or(0) as usize;
            if !clear_sockperf_client_flag(dgram.payload_mut(), seg) {
                self.short += 1;
            }
        }
        // A full send queue is counted (send_exhausted).
        let _ = tx.reply(dgram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_flag_in_each_segment_only() {
        let mut b = [0xffu8; 30];
        assert!(clear_sockperf_client_flag(&mut b, 15));
        assert_eq!(b[9], 0xfe);
        assert_eq!(b[24], 0xfe);
        assert_eq!(b[8], 0xff);
        let mut short = [0xffu8; 10];
        assert!(!clear_sockperf_client_flag(&mut short, 0));
        assert_eq!(short, [0xff; 10]);
    }
}
