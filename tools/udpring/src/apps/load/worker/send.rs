//! Building and queueing requests: udpring's header stamped in place, or
//! a payload of the user's with its ID written in.

use super::*;

/// The upper bits of a send slot's tag when it holds the load template
/// (see `put_header`); below them, the segment size and the count.
const TEMPLATE: u64 = 0x5a5a_u64 << 48;
/// The upper bits of a send slot's tag when it holds payload number
/// (lower bits) - 1 of the run's list, its ID aside.
const PAYLOAD: u64 = 0x9a9a_u64 << 48;

impl Worker {
    /// Stamps `n` datagrams of udpring's header for `flow` and queues them
    /// as one send, built in the send slot itself. A slot keeps what it
    /// was built with, and its tag says what that is: this run's template
    /// for this flow (the 0x5a payload, the headers' magic, flow and
    /// token, sockperf's flags and length) for `size`-byte segments, so
    /// that a slot used again writes only each datagram's sequence and
    /// time: 16 bytes (24 with sockperf's header) per datagram.
    fn put_header(
        &mut self,
        tx: &mut Transport<'_>,
        fi: usize,
        n: usize,
        due: &[u64],
    ) -> Result<(), SendError> {
        let size = self.opts.size;
        let off = self.opts.header_offset();
        let seq0 = self.flows[fi].next_seq;
        let flow_id = self.flows[fi].id;
        let (token, sockperf) = (self.token, self.opts.sockperf);
        // Tag bits: count (11), segment size (16), flow (20), then the
        // mark; a flow beyond 20 bits gets no template.
        let template =
            (flow_id < 1 << 20).then(|| TEMPLATE | u64::from(flow_id) << 27 | (size as u64) << 11);
        let len = n * size;
        let build = |b: &mut udpring::SendBuf<'_>| {
            let t = b.tag();
            let ready = template.is_some_and(|m| t & !0x7ff == m && (t & 0x7ff) as usize >= n);
            if !ready {
                b.fill(0x5a);
                b.set_tag(template.map_or(0, |m| m | n as u64));
            }
            if ready && !sockperf {
                // The hot path: 16 bytes per datagram.
                crate::apps::header::stamp_train(b, size, off, seq0, due);
                return len;
            }
            for (k, (seg, &at)) in b.chunks_mut(size).zip(due).enumerate() {
                let seq = seq0 + k as u64;
                if ready {
                    seg[..8].copy_from_slice(&seq.to_be_bytes());
                    Header::new_unchecked(&mut seg[off..]).fill_seq_time(seq, at);
                } else {
                    if sockperf {
                        sockperf::fill(seg, seq, size);
                    }
                    Header::new_unchecked(&mut seg[off..]).fill(token, flow_id, seq, at);
                }
            }
            len
        };
        let sock = self.flows[fi].sock;
        let gso = self.opts.gso;
        let r = if n == 1 {
            tx.send_with_via(sock, size, self.opts.target, build)
        } else if gso > 1 && n > gso {
            let train = gso * size;
            tx.send_trains_with(sock, size as u16, train, len, self.opts.target, build)
        } else if gso > 1 {
            tx.send_segments_with(sock, size as u16, len, self.opts.target, build)
        } else {
            tx.send_each_with(sock, size as u16, len, self.opts.target, build)
        };
        r.map(drop)
    }

    /// Sends the next payload: with ID matching a copy with the flow's ID
    /// written in, otherwise the payload as laid out. `None`: the ID's slot is still held
    /// by an unanswered request younger than the timeout.
    fn put_payload(
        &mut self,
        tx: &mut Transport<'_>,
        fi: usize,
        at: u64,
    ) -> Option<(Result<(), SendError>, usize)> {
        let now = self.now_ns();
        let timeout = self.opts.timeout().as_nanos() as u64;
        let p = self.opts.payloads.as_ref()?;
        let f = &mut self.flows[fi];
        let seq = f.next_seq;
        let data = p.get(self.payload_next);
        let len = data.len();
        let mut written_off = false;
        let mut early = false;
        let paced = matches!(self.opts.mode, Mode::Rate(_));
        // The request's ID, when replies are matched by one.
        let id = match (self.opts.matching, &mut f.ids) {
            (Match::Id { offset, len }, Some(ring)) => {
                written_off = match ring.may_send(seq, now, timeout) {
                    Some(w) => w,
                    // A paced run keeps its schedule: the unanswered
                    // request holding this ID is written off now, before
                    // its timeout (counted), rather than the flow waiting.
                    None if paced && !ring.holds() => {
                        early = ring.evict(seq);
                        early
                    }
                    None => return None,
                };
                Some((offset, len, ring.id_of(seq)))
            }
            _ => None,
        };
        // The payload is built in the send slot (copied once, unless the
        // slot still holds this payload: its tag says which), then the ID,
        // if any, is written over it.
        let tag = PAYLOAD | (self.payload_next % p.len() as u64 + 1);
        let r = tx
            .send_with_via(f.sock, len, self.opts.target, |b| {
                if b.tag() != tag {
                    b.copy_from_slice(data);
                    b.set_tag(tag);
                }
                if let Some((offset, id_len, id)) = id {
                    write_id(b, offset, id_len, id);
                }
                len
            })
            .map(drop);
        if written_off {
            // Its request is given up on: it leaves the window too.
            self.in_flight.answered(1);
            if self.phase == Phase::Measure {
                self.counts.timeouts += 1;
                self.counts.ids_reused_early += u64::from(early);
            }
        }
        if r.is_ok() {
            self.payload_next += 1;
            if let Some(ring) = &mut self.flows[fi].ids {
                ring.sent(seq, at);
            }
        }
        Some((r, len))
    }

    /// Queues `n` datagrams for flow `fi`, due at `due`, at `now` (the
    /// caller's reading of the clock).
    pub(super) fn send(
        &mut self,
        tx: &mut Transport<'_>,
        fi: usize,
        n: usize,
        due: &[u64],
        now: u64,
    ) -> bool {
        let seq0 = self.flows[fi].next_seq;
        let (r, bytes) = if self.opts.payloads.is_some() {
            match self.put_payload(tx, fi, due[0]) {
                Some(x) => x,
                // The ID's slot is still held: this flow waits.
                None => return false,
            }
        } else {
            (self.put_header(tx, fi, n, due), n * self.opts.size)
        };
        match r {
            Ok(()) => {
                let f = &mut self.flows[fi];
                f.next_seq += n as u64;
                // Measured: due after the warm-up (a paced run that fell
                // behind may send warm-up datagrams after it ended; those
                // stay warm-up).
                if self.phase == Phase::Measure && due[0] >= self.measure_at {
                    if f.first_measured == u64::MAX {
                        f.first_measured = seq0;
                    }
                    // When it really left (a paced run that fell behind
                    // sends after its due time): the measured span is
                    // what it took, not what was asked.
                    self.last_measured_ns = now.max(due[n - 1]);
                    self.counts.sent += n as u64;
                    self.counts.bytes_sent += bytes as u64;
                    if let Some(q) = &mut self.count_quota {
                        *q = q.saturating_sub(n as u64);
                    }
                }
                self.in_flight.sent(n as u64);
                true
            }
            Err(SendError::Exhausted) => {
                self.counts.send_exhausted += 1;
                false
            }
            Err(_) => false,
        }
    }

    pub(super) fn batch_len(&self) -> usize {
        self.within_quota(self.opts.gso.max(1))
    }

    /// Datagrams a flood queues per call: with GSO up to
    /// [`FLOOD_TRAINS_EACH`] trains built in one slot (as many as fit:
    /// 16 of 64 x 64 B, one of 46 x 1400 B), without it [`FLOOD_EACH`]
    /// datagrams of the header (as many as fit in 4 KiB). One train or
    /// one datagram at a time with payloads of the user's, and once a
    /// window's room or the count left is less than a call for every
    /// flow: the flows then take turns train by train or datagram by
    /// datagram, and share the tail of a run as evenly as they did the
    /// rest.
    pub(super) fn flood_len(&self) -> usize {
        let gso = self.opts.gso;
        let n = if gso > 1 {
            let slot = udpring::GRO_SLOT_SIZE - udpring::HEADROOM;
            let trains = (slot / (gso * self.opts.size).max(1)).min(FLOOD_TRAINS_EACH);
            trains * gso
        } else if self.opts.payloads.is_some() {
            return 1;
        } else {
            FLOOD_EACH.min(
                (udpring::DEFAULT_SLOT_SIZE - udpring::HEADROOM).min(self.send_cap)
                    / self.opts.size.max(1),
            )
        };
        let one = self.within_quota(gso.max(1));
        let all = (n * self.flows.len()) as u64;
        let room = self
            .opts
            .window
            .map_or(u64::MAX, |w| w.saturating_sub(self.in_flight.outstanding()));
        let left = match self.count_quota {
            Some(q) if self.phase == Phase::Measure => q,
            _ => u64::MAX,
        };
        if room < all || left < all {
            one
        } else {
            n.max(one)
        }
    }

    fn within_quota(&self, n: usize) -> usize {
        match self.count_quota {
            Some(q) if self.phase == Phase::Measure => n.min(q as usize).max(1),
            _ => n,
        }
    }
}
