//! `mcast ping`'s side: [`McastPing`] pings a group and keeps, per
//! responder, the replies, duplicates and an RTT histogram, with udpring's
//! header or, for programs udpring did not write, the user's payloads and
//! the round rules of [`PingPayload::Given`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::apps::header::{HEADER_LEN, Header};
use crate::apps::load::RttUs;
use udpring::{Datagram, Handler, Transport};

use super::{Peer, PeerTable, peer_entry};

/// What a [`McastPing`] sends, and how it tells which ping a reply
/// answers.
#[derive(Clone, Debug, PartialEq)]
pub enum PingPayload {
    /// udpring's header in datagrams of `size` bytes: a reply carries the
    /// ping's sequence and send time back (`mcast pong`, any echo).
    Header {
        /// Datagram size (at least the header's 32 bytes).
        size: usize,
    },
    /// The user's payloads, in turn, for programs udpring did not write.
    /// A reply belongs to the round it arrives in (one ping per interval),
    /// if it arrives within `timeout` of that round's ping (later ones are
    /// counted `late`); its RTT is measured from that ping.
    Given {
        /// Sent in turn, one per round.
        payloads: Vec<Vec<u8>>,
        /// Only replies starting with these bytes count (the rest are
        /// `invalid`).
        expect: Option<Vec<u8>>,
        /// How long after its ping a reply still belongs to the round (at
        /// most the interval between pings).
        timeout: Duration,
    },
}

/// A ping's own payloads and its round rules.
struct Given {
    payloads: Vec<Vec<u8>>,
    expect: Option<Vec<u8>>,
    timeout_ns: u64,
}

/// Pings a group and accounts for every responder.
pub struct McastPing {
    to: SocketAddr,
    interval: Duration,
    count: u64,
    sent: u64,
    start: Option<Instant>,
    epoch: Instant,
    token: u64,
    /// The header ping's datagram (`PingPayload::Header`).
    buf: Vec<u8>,
    given: Option<Given>,
    /// When the last round's ping left, ns since `epoch`.
    round_at: u64,
    peers: HashMap<SocketAddr, Peer>,
    /// Replies that were not ours (other token, malformed, unexpected).
    invalid: u64,
    /// Replies after their round's timeout.
    late: u64,
    /// Replies from responders beyond [`super::MAX_PEERS`] (counted, not kept).
    untracked: u64,
    table: PeerTable,
}

impl McastPing {
    /// `count` pings of `payload` to `to`, `rate` per second.
    pub fn new(
        to: SocketAddr,
        rate: f64,
        payload: PingPayload,
        count: u64,
        table: PeerTable,
    ) -> Self {
        let epoch = Instant::now();
        let (buf, given) = match payload {
            PingPayload::Header { size } => (vec![0x50; size.max(HEADER_LEN)], None),
            PingPayload::Given {
                payloads,
                expect,
                timeout,
            } => (
                Vec::new(),
                Some(Given {
                    payloads,
                    expect,
                    timeout_ns: timeout.as_nanos() as u64,
                }),
            ),
        };
        McastPing {
            to,
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            count,
            sent: 0,
            start: None,
            epoch,
            token: udpring::random_u64(),
            buf,
            given,
            round_at: 0,
            peers: HashMap::new(),
            invalid: 0,
            late: 0,
            untracked: 0,
            table,
        }
    }

    fn publish(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.untracked = self.untracked;
        t.invalid = self.invalid;
        t.late = self.late;
        t.peers.clear();
        for (a, p) in &self.peers {
            let mut c = p.counts.clone();
            c.lost = self.sent.saturating_sub(c.received);
            c.rtt_us = p.hist.as_ref().and_then(RttUs::from_histogram);
            t.peers.push((*a, c));
        }
        t.peers.sort_by_key(|(a, _)| *a);
    }

    /// The ping a reply answers and when that ping left: from the header,
    /// or with a given payload, the current round.
    fn answers(&mut self, payload: &[u8], now: u64) -> Option<(u64, u64)> {
        let Some(given) = &self.given else {
            let Ok(h) = Header::new_checked(payload) else {
                self.invalid += 1;
                return None;
            };
            if h.token() != self.token || h.seq() >= self.sent {
                self.invalid += 1;
                return None;
            }
            return Some((h.seq(), h.sent_ns()));
        };
        if given
            .expect
            .as_ref()
            .is_some_and(|e| !payload.starts_with(e))
            || self.sent == 0
        {
            self.invalid += 1;
            return None;
        }
        if now.saturating_sub(self.round_at) > given.timeout_ns {
            self.late += 1;
            return None;
        }
        Some((self.sent - 1, self.round_at))
    }
}

impl Handler for McastPing {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.start = Some(Instant::now());
        tx.call_later(Duration::ZERO, 0);
        tx.call_later(Duration::from_millis(50), 1);
    }
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let Some((seq, sent_ns)) = self.answers(d.payload(), now) else {
            return;
        };
        let Some(peer) = peer_entry(&mut self.peers, d.source(), || Peer::new(true, true)) else {
            self.untracked += 1;
            return;
        };
        if peer.see(seq)
            && let Some(hist) = &mut peer.hist
        {
            hist.saturating_record(now.saturating_sub(sent_ns).max(1));
        }
    }
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        if token == 1 {
            self.publish();
            tx.call_later(Duration::from_millis(50), 1);
            return;
        }
        let start = self.start.unwrap_or_else(Instant::now);
        let due = ((start.elapsed().as_secs_f64() / self.interval.as_secs_f64()) as u64 + 1)
            .min(self.count);
        while self.sent < due {
            let now = self.epoch.elapsed().as_nanos() as u64;
            let r = match &self.given {
                None => {
                    Header::new_unchecked(&mut self.buf[..]).fill(self.token, 0, self.sent, now);
                    tx.send_to(&self.buf, self.to)
                }
                Some(given) => {
                    let i = (self.sent as usize).checked_rem(given.payloads.len());
                    let Some(p) = i.and_then(|i| given.payloads.get(i)) else {
                        break;
                    };
                    tx.send_to(p, self.to)
                }
            };
            match r {
                Ok(()) => {
                    self.sent += 1;
                    self.round_at = now;
                }
                Err(_) => break,
            }
        }
        if self.sent < self.count {
            let next = start + self.interval.mul_f64(self.sent as f64);
            tx.call_later(next.saturating_duration_since(Instant::now()), 0);
        }
    }
    fn on_stop(&mut self) {
        self.publish();
    }
}
