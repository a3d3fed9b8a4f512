//! Matching a reply to its request (udpring's header, an ID, the flow)
//! and accounting for it, and for the kernel's errors about requests.

use super::*;

impl Worker {
    /// Counts `n` of something that is not an answer (invalid, foreign,
    /// stale, truncated) in `field`, or, while warming up, among the
    /// warm-up's datagrams: the warm-up is kept out of every count but
    /// its own.
    pub(super) fn tally(&mut self, field: Field, n: u64) {
        let c = if self.phase == Phase::Warmup {
            &mut self.counts.warmup_replies
        } else {
            field(&mut self.counts)
        };
        *c = c.saturating_add(n);
    }

    /// Counts an error the kernel reported about a request (ICMP port or
    /// host unreachable, message too long) in `errors`, by kind, and sends
    /// the engine gave up in `send_blocked`. Failed sends are the engine's
    /// (`send_errors`); errors during the warm-up are left out, as its
    /// datagrams are (the phase as for replies).
    pub(super) fn count_error(&mut self, event: ErrorEvent) {
        if self.phase == Phase::Warmup || matches!(event, ErrorEvent::SendFailed { .. }) {
            return;
        }
        if let ErrorEvent::SendGivenUp { datagrams, .. } = event {
            self.counts.send_blocked = self.counts.send_blocked.saturating_add(datagrams);
            return;
        }
        // A flood into a closed port reports an error per datagram: count
        // known kinds without building a key each time.
        let known = match event {
            ErrorEvent::ConnectionRefused { .. } => Some("ECONNREFUSED"),
            ErrorEvent::MessageTooLong { .. } | ErrorEvent::PacketTooBig { .. } => Some("EMSGSIZE"),
            _ => None,
        };
        if let Some(k) = known
            && let Some(v) = self.counts.errors.get_mut(k)
        {
            *v += 1;
            return;
        }
        let kind = match event {
            ErrorEvent::Unreachable { errno, .. } | ErrorEvent::Other { errno, .. } => {
                udpring::errno_name(errno)
            }
            _ => known.unwrap_or("EIO").to_string(),
        };
        *self.counts.errors.entry(kind).or_default() += 1;
    }

    /// Closed loop: an ICMP error about a flow's request (nothing listens
    /// on the port, no route to the host, too big for the path) is its
    /// answer, as in `udpring ping`: the request ends now, lost, instead
    /// of waiting out --timeout (a service restarting under a closed-loop
    /// run stalled every flow for a second per request). The flow sends
    /// its next request at the next housekeeping pass (within 20 ms), not
    /// at once: a port nothing listens on answers at once, and a closed
    /// loop would then send as fast as the ICMP comes back (250k/s on
    /// loopback, where the kernel does not rate-limit ICMP). The socket
    /// says which flow.
    pub(super) fn refused_ping(&mut self, event: ErrorEvent, tx: &mut Transport<'_>) {
        if self.opts.mode != Mode::Ping
            || !matches!(
                event,
                ErrorEvent::ConnectionRefused { .. }
                    | ErrorEvent::Unreachable { .. }
                    | ErrorEvent::MessageTooLong { .. }
                    | ErrorEvent::PacketTooBig { .. }
            )
        {
            return;
        }
        let Some(fi) = tx
            .error_socket()
            .and_then(|s| self.by_sock.get(s.index()).copied().flatten())
        else {
            return;
        };
        self.flows[fi].in_flight = None;
    }

    /// The request a reply of udpring's header answers, or the count the
    /// reply goes to instead.
    fn by_header(&self, seg: &[u8], fi: usize) -> Result<(u64, u64), Field> {
        let Ok(h) = Header::new_checked(&seg[self.opts.header_offset().min(seg.len())..]) else {
            return Err(|c| &mut c.invalid);
        };
        let f = &self.flows[fi];
        if h.token() != self.token || h.flow() != f.id {
            return Err(|c| &mut c.invalid);
        }
        if h.seq() >= f.next_seq {
            // Ours, but never sent: forged, or from a corrupted path.
            return Err(|c| &mut c.stale);
        }
        if seg.len() < self.opts.size {
            // Ours, but cut on the way (a server's buffer smaller than the
            // datagram): not an answer to what was sent.
            return Err(|c| &mut c.truncated);
        }
        if seg.len() > self.opts.size {
            return Err(|c| &mut c.invalid);
        }
        Ok((h.seq(), h.sent_ns()))
    }

    pub(super) fn on_reply(
        &mut self,
        seg: &[u8],
        from: SocketAddr,
        sock: usize,
        now: u64,
        tx: &mut Transport<'_>,
    ) {
        let Some(fi) = self.by_sock.get(sock).copied().flatten() else {
            return self.tally(|c| &mut c.invalid, 1);
        };
        // Whether this is the request's first reply (a group's later
        // responders answer a request already out of the window).
        let mut first_reply = true;
        let (seq, sent) = match self.opts.matching {
            Match::Header => match self.by_header(seg, fi) {
                Ok(x) => x,
                Err(field) => return self.tally(field, 1),
            },
            Match::Id { offset, len } => {
                if self.opts.dns && crate::apps::load::dns::answer(seg).is_none() {
                    // A query echoed back (QR clear) or a few bytes: not an
                    // answer, whatever its ID says.
                    if self.phase != Phase::Warmup {
                        self.counts.dns_not_response += 1;
                    }
                    return self.tally(|c| &mut c.invalid, 1);
                }
                let Some(id) = read_id(seg, offset, len) else {
                    return self.tally(|c| &mut c.unmatched, 1);
                };
                let next = self.flows[fi].next_seq;
                let group = self.opts.target.ip().is_multicast();
                match self.flows[fi].ids.as_mut().map(|r| r.find(id, next)) {
                    Some(Found::Answer { seq, sent_ns }) => (seq, sent_ns),
                    // A group: another responder's answer to the same
                    // request (each responder's repeats are caught by its
                    // own window below).
                    Some(Found::Duplicate { seq, sent_ns })
                        if group && seq >= self.flows[fi].first_measured =>
                    {
                        first_reply = false;
                        (seq, sent_ns)
                    }
                    Some(Found::Duplicate { seq, .. }) => {
                        // A repeat of a warm-up request is the warm-up's.
                        return if seq < self.flows[fi].first_measured {
                            self.counts.warmup_replies += 1;
                        } else {
                            self.tally(|c| &mut c.duplicated, 1)
                        };
                    }
                    Some(Found::Stale) | None => return self.tally(|c| &mut c.unmatched, 1),
                }
            }
            Match::Flow => match self.flows[fi].in_flight {
                Some(x) => x,
                None => return self.tally(|c| &mut c.unmatched, 1),
            },
            // One-way: whatever comes back answers nothing.
            Match::None => return self.tally(|c| &mut c.unmatched, 1),
        };
        let f = &mut self.flows[fi];
        if first_reply {
            self.in_flight.answered(1);
        }
        let answered_ping = f.in_flight.is_some_and(|(s, _)| s == seq);
        if answered_ping {
            f.in_flight = None;
            let measured = seq >= f.first_measured;
            if let Some(k) = &mut self.ks {
                k.replied(fi, seq, measured);
            }
        }
        if seq < f.first_measured {
            self.counts.warmup_replies += 1;
        } else {
            let seen = if self.opts.target.ip().is_multicast() {
                let flows = self.flows.len();
                let rtt = now.saturating_sub(sent).max(1);
                let seen = self.responders.mark(from, flows, fi, seq, rtt);
                if seen.is_none() {
                    self.counts.untracked_responders += 1;
                }
                seen
            } else {
                Some(self.flows[fi].window.mark(seq))
            };
            match seen {
                None => {}
                Some(Seen::Duplicate) => self.counts.duplicated += 1,
                Some(Seen::Stale) => self.counts.stale += 1,
                Some(first) => {
                    self.counts.received += 1;
                    self.counts.bytes_received += seg.len() as u64;
                    if self.opts.dns {
                        self.count_dns(seg);
                    }
                    if !self.opts.expect.iter().all(|e| e.holds(seg)) {
                        let c = &mut self.counts;
                        c.unexpected += 1;
                        if c.unexpected_sample.is_none() {
                            let n = seg.len().min(crate::apps::load::expect::SAMPLE);
                            c.unexpected_sample = Some(seg[..n].to_vec());
                        }
                    }
                    self.counts.reordered += u64::from(first == Seen::Reordered);
                    let rtt = now.saturating_sub(sent).max(1);
                    self.record_rtt(rtt);
                }
            }
        }
        if answered_ping && self.opts.mode == Mode::Ping {
            self.ping_one(tx, fi);
        }
    }

    /// Records one RTT: equal RTTs in a row (the segments of one train,
    /// sent and received together) go into the histograms as one run.
    fn record_rtt(&mut self, rtt: u64) {
        match &mut self.rtt_run {
            (r, n) if *r == rtt => *n += 1,
            run => {
                let (r, n) = std::mem::replace(run, (rtt, 1));
                if n > 0 {
                    self.hist.saturating_record_n(r, n);
                    self.interval.saturating_record_n(r, n);
                }
            }
        }
    }

    /// Puts the pending run of RTTs into the histograms.
    pub(super) fn flush_rtt(&mut self) {
        let (r, n) = std::mem::take(&mut self.rtt_run);
        if n > 0 {
            self.hist.saturating_record_n(r, n);
            self.interval.saturating_record_n(r, n);
        }
    }

    /// Counts a DNS answer's response code and TC bit.
    fn count_dns(&mut self, seg: &[u8]) {
        let Some((rcode, tc)) = crate::apps::load::dns::answer(seg) else {
            return;
        };
        self.counts.dns_truncated += u64::from(tc);
        let name = crate::apps::load::dns::rcode_name(rcode);
        match self.counts.dns_rcodes.get_mut(name) {
            Some(v) => *v += 1,
            None => {
                self.counts.dns_rcodes.insert(name.to_string(), 1);
            }
        }
    }
}
