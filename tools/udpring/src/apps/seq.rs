//! Which sequence numbers of one stream have been seen: new, reordered or
//! duplicated. Shared by the load generator (per flow and per responder)
//! and the multicast listener and pinger (per source).

/// What a sequence number was, given those seen before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before, and above every one seen.
    New,
    /// Not seen before, below the highest seen: it came late.
    Reordered,
    /// Seen before.
    Duplicate,
    /// More than [`SEQ_WINDOW`] below the highest seen: too old to tell
    /// whether it was seen (counted apart, never as new).
    Stale,
}

impl Seen {
    /// New or reordered: the first time this sequence is seen.
    pub fn is_first(self) -> bool {
        matches!(self, Seen::New | Seen::Reordered)
    }
}

/// Sequences remembered per stream for duplicate and reorder detection.
pub const SEQ_WINDOW: u64 = 65536;

/// Which sequence numbers of one stream have been seen: a window of the last
/// 65536 below the highest, to tell new, reordered and duplicated apart.
pub struct SeqWindow {
    highest: u64,
    any: bool,
    seen: Vec<u64>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        SeqWindow::new()
    }
}

impl SeqWindow {
    /// An empty window (8 KiB, allocated once).
    pub fn new() -> Self {
        SeqWindow {
            highest: 0,
            any: false,
            seen: vec![0; (SEQ_WINDOW / 64) as usize],
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = (seq % SEQ_WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    /// The highest sequence seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.any.then_some(self.highest)
    }

    /// Classifies a sequence number and remembers it.
    pub fn mark(&mut self, seq: u64) -> Seen {
        if !self.any || seq > self.highest {
            let from = if self.any { self.highest + 1 } else { 0 };
            if seq.saturating_sub(from) >= SEQ_WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in from..seq {
                    let (w, m) = Self::bit(s);
                    self.seen[w] &= !m;
                }
            }
            let (w, m) = Self::bit(seq);
            self.seen[w] |= m;
            self.highest = seq;
            self.any = true;
            return Seen::New;
        }
        if self.highest - seq >= SEQ_WINDOW {
            return Seen::Stale;
        }
        let (w, m) = Self::bit(seq);
        if self.seen[w] & m != 0 {
            return Seen::Duplicate;
        }
        self.seen[w] |= m;
        Seen::Reordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_new_reordered_and_duplicate() {
        let mut f = SeqWindow::new();
        assert_eq!(f.mark(0), Seen::New);
        assert_eq!(f.mark(2), Seen::New);
        assert_eq!(f.mark(1), Seen::Reordered, "older than the highest");
        assert_eq!(f.mark(1), Seen::Duplicate);
        assert_eq!(f.mark(2), Seen::Duplicate);
        assert_eq!(f.mark(70_000), Seen::New, "a jump clears the window");
        assert_eq!(f.mark(70_000 - 10), Seen::Reordered);
        assert_eq!(f.mark(3), Seen::Stale, "too old to remember: not new");
        assert_eq!(f.mark(3), Seen::Stale, "and never counted new later");
        // Wrap-around of the bitmap: sequence s and s + 65536 are distinct.
        let mut g = SeqWindow::new();
        for s in 0..(SEQ_WINDOW * 2 + 5) {
            assert_eq!(g.mark(s), Seen::New);
        }
        assert_eq!(g.mark(SEQ_WINDOW * 2), Seen::Duplicate);
        // The far end of the sequence space does not overflow.
        let mut h = SeqWindow::new();
        assert_eq!(h.mark(u64::MAX), Seen::New);
        assert_eq!(h.mark(u64::MAX), Seen::Duplicate);
        assert_eq!(h.mark(0), Seen::Stale);
    }
}
