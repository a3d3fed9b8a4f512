//! The sends a handler queued, waiting for the backend to submit them.
//!
//! Every queued [`Transmit`] holds one reference on its slot, taken here
//! when it is queued and dropped by the worker when the send's outcome is
//! known. A GSO train is queued as one transmit while the kernel accepts
//! `UDP_SEGMENT`; once it has refused (GSO off), a train is cut here into
//! plain datagrams of the segment size, each holding its own reference.
//! Datagrams or trains built together in one slot
//! (`Transport::send_each_with`, `Transport::send_trains_with`) are always
//! cut here into their own sends, so the backends see only whole
//! datagrams and trains.

use std::num::NonZeroU32;

use crate::bufring::Pool;
use crate::sys::Transmit;

/// Transmits in the order they were asked for, at most `cap` at once.
pub(crate) struct SendQueue {
    /// The transmits; the first `head` are gone (submitted) and are
    /// dropped lazily, so that taking a batch off the front does not move
    /// the rest (a `drain` per `sendmmsg` moved every transmit behind it:
    /// 1.1% of a 64 B flood's samples in memmove).
    q: Vec<Transmit>,
    head: usize,
    gso: bool,
    cap: usize,
}

impl SendQueue {
    /// An empty queue of at most `cap` sends; `gso`: whether trains may go
    /// as one send.
    pub fn new(cap: usize, gso: bool) -> Self {
        SendQueue {
            q: Vec::with_capacity(cap.min(4096)),
            head: 0,
            gso,
            cap,
        }
    }

    /// Entries `t` takes: one, or with GSO off one per segment.
    fn entries(&self, t: &Transmit) -> usize {
        match t.segment {
            Some(s) if !self.gso && t.len > u32::from(s.get()) => {
                t.len.div_ceil(u32::from(s.get())) as usize
            }
            _ => 1,
        }
    }

    /// Whether another send fits.
    pub fn has_room(&self) -> bool {
        self.len() < self.cap
    }

    /// Queues `t` if there is room (false, nothing queued, otherwise).
    pub fn try_push(&mut self, pool: &mut Pool, t: Transmit) -> bool {
        if self.len() + self.entries(&t) > self.cap {
            return false;
        }
        self.push(pool, t);
        true
    }

    /// Queues `t` whatever the room (a send already accepted, queued again
    /// after a refusal), taking a reference on its slot per queued send. A
    /// train no longer than one segment is a plain datagram; with GSO off a
    /// train becomes one datagram per segment.
    pub fn push(&mut self, pool: &mut Pool, t: Transmit) {
        let seg = match t.segment {
            Some(s) if t.len > u32::from(s.get()) => s,
            _ => {
                pool.hold(t.slot);
                self.append(Transmit { segment: None, ..t });
                return;
            }
        };
        if self.gso {
            pool.hold(t.slot);
            self.append(t);
            return;
        }
        self.split(pool, t, u32::from(seg.get()));
    }

    /// Queues `t`'s bytes as pieces of `piece` bytes each (the last may
    /// be shorter), each its own send, if all of them fit (false, nothing
    /// queued, otherwise). A piece is a datagram, or with `t.segment` a
    /// GSO train of its own, cut like any train ([`SendQueue::push`]); a
    /// timestamp ID goes with the first piece only.
    pub fn try_push_pieces(&mut self, pool: &mut Pool, t: Transmit, piece: NonZeroU32) -> bool {
        let piece = piece.get();
        let (full, last) = (t.len / piece, t.len % piece);
        let entries = |len: u32| self.entries(&Transmit { len, ..t });
        let need = full as usize * entries(piece) + if last > 0 { entries(last) } else { 0 };
        if self.len() + need > self.cap {
            return false;
        }
        let mut o = 0;
        while o < t.len {
            let l = piece.min(t.len - o);
            self.push(
                pool,
                Transmit {
                    off: t.off + o,
                    len: l,
                    ts_id: t.ts_id.filter(|_| o == 0),
                    ..t
                },
            );
            o += l;
        }
        true
    }

    /// `t` cut into datagrams of `seg` bytes, each holding a reference on
    /// the slot; a timestamp ID goes with the first only.
    fn split(&mut self, pool: &mut Pool, t: Transmit, seg: u32) {
        let mut o = 0;
        while o < t.len {
            let l = seg.min(t.len - o);
            pool.hold(t.slot);
            self.append(Transmit {
                off: t.off + o,
                len: l,
                segment: None,
                ts_id: t.ts_id.filter(|_| o == 0),
                ..t
            });
            o += l;
        }
    }

    /// Whether trains go as one `UDP_SEGMENT` send.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// The kernel refused `UDP_SEGMENT`: cut trains from now on.
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// The queued transmits, oldest first.
    pub fn as_slice(&self) -> &[Transmit] {
        &self.q[self.head..]
    }

    /// Mutable access (to rewrite destinations when a socket's peer changes).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Transmit> {
        self.q[self.head..].iter_mut()
    }

    /// Removes the `n` oldest (they were submitted). The storage is
    /// reused once empty, or compacted when a push would otherwise grow it.
    pub fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.q.len() {
            self.q.clear();
            self.head = 0;
        }
    }

    /// Appends `t`, first dropping the consumed ones if the storage is
    /// full (rather than growing it).
    fn append(&mut self, t: Transmit) {
        if self.head > 0 && self.q.len() == self.q.capacity() {
            self.q.drain(..self.head);
            self.head = 0;
        }
        self.q.push(t);
    }

    /// Removes and returns the oldest.
    pub fn pop_front(&mut self) -> Option<Transmit> {
        let t = *self.as_slice().first()?;
        self.consume(1);
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.q.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
