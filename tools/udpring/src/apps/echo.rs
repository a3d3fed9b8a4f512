//! The echo service: every datagram goes back to its sender from its own
//! buffer. With `sockperf` on, the client flag of sockperf's header is
//! cleared first, so `sockperf ping-pong` accepts the replies.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::apps::stages::{Stages, ns_of, realtime_ns};
use udpring::{Datagram, Handler, Transport};

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

/// The server's stages with `--kernel-timestamps`, in order.
pub const SERVER_STAGES: &[&str] = &["receive_queue", "reply_path"];
/// Replies remembered while their TX stamp is on its way.
const STAMP_RING: usize = 4096;

/// An echo that splits its own time at the kernel's stamps (needs
/// `Config::rx_timestamps` and `Config::tx_timestamps`):
/// `receive_queue` (the kernel received the request -> the handler ran)
/// and `reply_path` (the handler queued the reply -> the kernel handed it
/// to the device). Each worker adds its stages into `out` when it stops.
pub struct TimedEcho {
    /// What to echo, and how.
    pub echo: Echo,
    stages: Stages,
    /// By ID modulo the ring: (ID, kernel RX, handler) of a reply whose
    /// TX stamp is awaited.
    ring: Vec<Option<(u32, u64, u64)>>,
    next_id: u32,
    out: Arc<Mutex<Option<Stages>>>,
}

impl TimedEcho {
    /// An echo whose stages go into `out` at stop.
    pub fn new(echo: Echo, out: Arc<Mutex<Option<Stages>>>) -> Self {
        TimedEcho {
            echo,
            stages: Stages::new(SERVER_STAGES),
            ring: vec![None; STAMP_RING],
            next_id: 0,
            out,
        }
    }
}

impl Handler for TimedEcho {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let now = realtime_ns();
        let rx = dgram.rx_timestamp().map(ns_of);
        if !self.echo.discard
            && let Some(rx) = rx
            && tx.timestamp_next(self.next_id)
        {
            let slot = &mut self.ring[self.next_id as usize % STAMP_RING];
            if slot.is_some() {
                // Its stamp never came: the kernel did not stamp it (the
                // reply was refused) or it is that late.
                self.stages.missing += 1;
            }
            *slot = Some((self.next_id, rx, now));
            self.next_id = self.next_id.wrapping_add(1);
        } else {
            self.stages.missing += 1;
        }
        self.echo.on_datagram(dgram, tx);
    }

    fn on_tx_timestamp(&mut self, id: u32, at: SystemTime, _tx: &mut Transport<'_>) {
        let slot = &mut self.ring[id as usize % STAMP_RING];
        if let Some((sid, rx, handler)) = *slot
            && sid == id
        {
            self.stages.record(&[rx, handler, ns_of(at)]);
            *slot = None;
        }
    }

    fn on_stop(&mut self) {
        self.stages.missing += self.ring.iter().filter(|s| s.is_some()).count() as u64;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *out {
            Some(all) => all.merge(&self.stages),
            None => *out = Some(self.stages.clone()),
        }
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
