//! The sends a handler queued, waiting for the backend to submit them.
//!
//! Every queued [`Transmit`] holds one reference on its slot, taken here
//! when it is queued and dropped by the worker when the send's outcome is
//! known. A GSO train is queued as one transmit while the kernel accepts
//! `UDP_SEGMENT`; once it has refused (GSO off), a train is cut here into
//! plain datagrams of the segment size, each holding its own reference.

use crate::bufring::Pool;
use crate::sys::Transmit;

/// Transmits in the order they were asked for, at most `cap` at once.
pub(crate) struct SendQueue {
    q: Vec<Transmit>,
    gso: bool,
    cap: usize,
}

impl SendQueue {
    /// An empty queue of at most `cap` sends; `gso`: whether trains may go
    /// as one send.
    pub fn new(cap: usize, gso: bool) -> Self {
        SendQueue {
            q: Vec::with_capacity(cap.min(4096)),
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

    /// Queues `t` if there is room (false, nothing queued, otherwise).
    pub fn try_push(&mut self, pool: &mut Pool, t: Transmit) -> bool {
        if self.q.len() + self.entries(&t) > self.cap {
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
                self.q.push(Transmit { segment: None, ..t });
                return;
            }
        };
        if self.gso {
            pool.hold(t.slot);
            self.q.push(t);
            return;
        }
        let seg = u32::from(seg.get());
        let mut o = 0;
        while o < t.len {
            let l = seg.min(t.len - o);
            pool.hold(t.slot);
            self.q.push(Transmit {
                off: t.off + o,
                len: l,
                segment: None,
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
        &self.q
    }

    /// Mutable access (to rewrite destinations when a socket's peer changes).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Transmit> {
        self.q.iter_mut()
    }

    /// Removes the `n` oldest (they were submitted).
    pub fn consume(&mut self, n: usize) {
        self.q.drain(..n);
    }

    /// Removes and returns the oldest.
    pub fn pop_front(&mut self) -> Option<Transmit> {
        (!self.q.is_empty()).then(|| self.q.remove(0))
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RawAddr;

    fn train(pool: &mut Pool, len: u32, seg: u16) -> Transmit {
        // The lending's own reference stays until `refs_back` drops it.
        let slot = pool.alloc_send().unwrap().slot();
        Transmit {
            sock: 0,
            slot,
            off: 0,
            len,
            dst: RawAddr::zeroed(),
            segment: std::num::NonZeroU16::new(seg),
            retried: false,
            src: crate::sys::SrcIp::Any,
            tos: None,
            ts_id: None,
            socket_segments: false,
        }
    }

    fn refs_back(pool: &mut Pool, q: &mut SendQueue, slot: u32) {
        while let Some(t) = q.pop_front() {
            pool.unref(t.slot);
        }
        pool.unref(slot);
        assert_eq!(pool.counts().out, 0, "every reference came back");
    }

    #[test]
    fn a_train_stays_whole_with_gso_and_is_cut_without() {
        let mut pool = Pool::new(4096, 1, 2, false).unwrap();
        let mut q = SendQueue::new(8, true);
        let t = train(&mut pool, 1000, 300);
        q.push(&mut pool, t);
        assert_eq!(q.len(), 1);
        assert_eq!(q.as_slice()[0].datagrams(), 4, "300+300+300+100");
        refs_back(&mut pool, &mut q, t.slot);

        q.disable_gso();
        let t = train(&mut pool, 1000, 300);
        q.push(&mut pool, t);
        let parts: Vec<(u32, u32, bool)> = q
            .as_slice()
            .iter()
            .map(|x| (x.off, x.len, x.segment.is_none()))
            .collect();
        assert_eq!(
            parts,
            [
                (0, 300, true),
                (300, 300, true),
                (600, 300, true),
                (900, 100, true)
            ],
            "an odd last segment keeps its own length"
        );
        refs_back(&mut pool, &mut q, t.slot);
    }

    #[test]
    fn a_full_queue_refuses_and_takes_no_reference() {
        let mut pool = Pool::new(4096, 1, 3, false).unwrap();
        let mut q = SendQueue::new(3, false);
        let a = train(&mut pool, 100, 0);
        assert!(q.try_push(&mut pool, a));
        let b = train(&mut pool, 1000, 400);
        assert!(
            !q.try_push(&mut pool, b),
            "3 segments do not fit in 2 entries"
        );
        assert_eq!(q.len(), 1);
        pool.unref(b.slot);
        refs_back(&mut pool, &mut q, a.slot);
    }

    #[test]
    fn a_train_of_one_segment_is_a_plain_datagram() {
        let mut pool = Pool::new(4096, 1, 1, false).unwrap();
        let mut q = SendQueue::new(8, true);
        for (len, seg) in [(300, 300), (10, 300), (0, 300)] {
            let t = train(&mut pool, len, seg);
            q.push(&mut pool, t);
            assert_eq!(q.as_slice()[0].segment, None);
            assert_eq!(q.as_slice()[0].datagrams(), 1);
            refs_back(&mut pool, &mut q, t.slot);
        }
    }
}
