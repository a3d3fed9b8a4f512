//! `--kernel-timestamps` (ping mode): each round trip split where the
//! kernel stamped it: the request's software TX stamp and the reply's RX
//! stamp. Stages, in order:
//!
//! - `send_path`: the application queued the request -> the kernel handed
//!   it to the device (the engine's submit and the kernel's UDP/IP send);
//! - `wire_and_server`: -> the kernel received the reply (the network
//!   both ways and the whole server);
//! - `receive_queue`: -> the handler read it (socket queue, completion,
//!   wake-up).

use super::*;
use crate::apps::stages::{Stages, ns_of, realtime_ns};

/// The stages' names, in the round trip's order.
pub(super) const STAGES: &[&str] = &["send_path", "wire_and_server", "receive_queue"];
/// Low bits of the TX stamp's ID that carry the request's sequence; the
/// rest is the flow's index.
const SEQ_BITS: u32 = 12;
/// Flows a run with kernel timestamps may have (the options check it).
pub const MAX_FLOWS: usize = super::super::opts::KSTAMP_MAX_FLOWS;
const _: () = assert!(
    MAX_FLOWS == 1 << (32 - SEQ_BITS),
    "the flow bits and the bound agree"
);

/// One request's stamps as they come in.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    app_send: u64,
    tx: Option<u64>,
    /// Kernel RX and handler times of its reply, and whether it is
    /// measured (after the warm-up).
    reply: Option<(u64, u64, bool)>,
}

/// What a worker keeps for `--kernel-timestamps`.
pub(super) struct KStamps {
    /// Per flow, the request in flight and the one before it (whose TX
    /// stamp may come after its reply), by sequence parity.
    pending: Vec<[Option<Pending>; 2]>,
    pub stages: Stages,
    /// The datagram being handled: kernel RX and handler times.
    pub reply: Option<(u64, u64)>,
}

fn id(fi: usize, seq: u64) -> u32 {
    ((fi as u32) << SEQ_BITS) | (seq as u32 & ((1 << SEQ_BITS) - 1))
}

impl KStamps {
    pub fn new(flows: usize) -> Self {
        KStamps {
            pending: vec![[None; 2]; flows],
            stages: Stages::new(STAGES),
            reply: None,
        }
    }

    /// Asks for the TX stamp of the request about to be queued; returns
    /// the application's send time.
    pub fn before_send(&self, tx: &mut Transport<'_>, fi: usize, seq: u64) -> u64 {
        tx.timestamp_next(id(fi, seq));
        realtime_ns()
    }

    /// The request `seq` of flow `fi` was queued at `app_send`.
    pub fn sent(&mut self, fi: usize, seq: u64, app_send: u64) {
        let slot = &mut self.pending[fi][(seq & 1) as usize];
        if let Some(old) = slot.take()
            && old.reply.is_some_and(|r| r.2)
        {
            // Answered and measured, but its TX stamp never came.
            self.stages.missing += 1;
        }
        *slot = Some(Pending {
            seq,
            app_send,
            tx: None,
            reply: None,
        });
    }

    /// The kernel's TX stamp for the request that asked under `tid`.
    pub fn tx_stamp(&mut self, tid: u32, ns: u64) {
        let fi = (tid >> SEQ_BITS) as usize;
        let low = u64::from(tid & ((1 << SEQ_BITS) - 1));
        let Some(pair) = self.pending.get_mut(fi) else {
            return;
        };
        let k = pair.iter().position(|p| {
            p.is_some_and(|p| p.seq & ((1 << SEQ_BITS) - 1) == low && p.tx.is_none())
        });
        if let Some(k) = k {
            if let Some(p) = &mut pair[k] {
                p.tx = Some(ns);
            }
            self.try_done(fi, k);
        }
    }

    /// Request `seq` of flow `fi` was answered by the datagram being
    /// handled.
    pub fn replied(&mut self, fi: usize, seq: u64, measured: bool) {
        let k = (seq & 1) as usize;
        match (self.reply, &mut self.pending[fi][k]) {
            (Some((rx, app)), Some(p)) if p.seq == seq => {
                p.reply = Some((rx, app, measured));
                self.try_done(fi, k);
            }
            _ if measured => self.stages.missing += 1,
            _ => {}
        }
    }

    fn try_done(&mut self, fi: usize, k: usize) {
        if let Some(Pending {
            app_send,
            tx: Some(tx),
            reply: Some((rx, app, measured)),
            ..
        }) = self.pending[fi][k]
        {
            if measured {
                self.stages.record(&[app_send, tx, rx, app]);
            }
            self.pending[fi][k] = None;
        }
    }

    /// At the end: answered, measured requests still without a TX stamp.
    pub fn finish(&mut self) -> Stages {
        for pair in &mut self.pending {
            for p in pair.iter_mut().filter_map(Option::take) {
                if p.reply.is_some_and(|r| r.2) {
                    self.stages.missing += 1;
                }
            }
        }
        self.stages.clone()
    }
}

/// The handler's side: the reply's stamps, taken as it arrives.
pub(super) fn reply_times(d: &Datagram<'_>) -> Option<(u64, u64)> {
    let app = realtime_ns();
    d.rx_timestamp().map(|t| (ns_of(t), app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_is_split_whichever_stamp_comes_last() {
        let mut k = KStamps::new(3);
        // TX stamp before the reply.
        k.sent(2, 7, 1_000);
        k.tx_stamp(id(2, 7), 1_500);
        k.reply = Some((4_000, 4_200));
        k.replied(2, 7, true);
        // Reply before the TX stamp, the next request already sent.
        k.sent(2, 8, 5_000);
        k.reply = Some((9_000, 9_900));
        k.replied(2, 8, true);
        k.sent(2, 9, 10_000);
        k.tx_stamp(id(2, 8), 5_300);
        let s = k.finish();
        let r = s.report();
        assert_eq!((r.samples, r.missing), (2, 0));
        assert!((r.stages[0].max - 0.5).abs() < 0.01, "{r:?}");
        assert!((r.stages[1].max - 3.7).abs() < 0.01, "{r:?}");
        assert!((r.stages[2].max - 0.9).abs() < 0.01, "{r:?}");
        // A reply whose stamp never comes is missing; a warm-up one is not
        // counted at all.
        let mut k = KStamps::new(1);
        k.sent(0, 1, 1);
        k.reply = Some((5, 6));
        k.replied(0, 1, true);
        k.sent(0, 2, 7);
        k.reply = Some((9, 10));
        k.replied(0, 2, false);
        k.sent(0, 3, 11);
        assert_eq!(k.finish().missing, 1);
    }
}
