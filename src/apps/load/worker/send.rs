//! Building and queueing requests: udpring's header stamped in place, or
//! a payload of the user's with its ID written in.

use super::*;

impl Worker {
    /// Stamps `n` datagrams of udpring's header for `flow` and queues them
    /// as one send.
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
        let chunks = self.scratch[..n * size].chunks_mut(size);
        for (k, (seg, &at)) in chunks.zip(due).enumerate() {
            let seq = seq0 + k as u64;
            if self.opts.sockperf {
                sockperf::fill(seg, seq, size);
            }
            Header::new_unchecked(&mut seg[off..]).fill(self.token, flow_id, seq, at);
        }
        let sock = self.flows[fi].sock;
        if n > 1 {
            tx.send_segments_via(
                sock,
                &self.scratch[..n * size],
                size as u16,
                self.opts.target,
            )
        } else {
            tx.send_to_via(sock, &self.scratch[..size], self.opts.target)
        }
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
        let timeout = self.opts.ping_timeout.as_nanos() as u64;
        let p = self.opts.payloads.as_ref()?;
        let f = &mut self.flows[fi];
        let seq = f.next_seq;
        let data = p.get(self.payload_next);
        let len = data.len();
        let mut written_off = false;
        let r = if let (
            Match::Id {
                offset,
                len: id_len,
            },
            Some(ring),
        ) = (self.opts.matching, &mut f.ids)
        {
            // The ID goes into a copy; the payload itself stays as laid out.
            written_off = ring.may_send(seq, now, timeout)?;
            self.scratch[..len].copy_from_slice(data);
            write_id(&mut self.scratch[..len], offset, id_len, ring.id_of(seq));
            tx.send_to_via(f.sock, &self.scratch[..len], self.opts.target)
        } else {
            // Nothing to write: sent from where it lies (one copy, into
            // the send slot, not two).
            tx.send_to_via(f.sock, data, self.opts.target)
        };
        if written_off {
            // Its request is given up on: it leaves the window too.
            self.in_flight.answered(1);
            if self.phase == Phase::Measure {
                self.counts.timeouts += 1;
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

    pub(super) fn send(
        &mut self,
        tx: &mut Transport<'_>,
        fi: usize,
        n: usize,
        due: &[u64],
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
                    self.last_measured_ns = self.now_ns().max(due[n - 1]);
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
        let n = self.opts.gso.max(1);
        match self.count_quota {
            Some(q) if self.phase == Phase::Measure => n.min(q as usize).max(1),
            _ => n,
        }
    }
}
