//! Which sequence numbers of one stream have been seen: new, reordered or
//! duplicated. Shared by the load generator (per flow and per responder)
//! and the multicast listener and pinger (per source).

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

    /// Classifies a sequence number: `Some(reordered)` for one not seen
    /// before (reordered when below the highest), `None` for a duplicate.
    /// Sequences more than 65536 below the highest count as new and reordered.
    pub fn mark(&mut self, seq: u64) -> Option<bool> {
        if !self.any || seq > self.highest {
            let from = if self.any { self.highest + 1 } else { 0 };
            if seq - from >= SEQ_WINDOW {
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
            return Some(false);
        }
        if self.highest - seq >= SEQ_WINDOW {
            // Too old to remember: new as far as we can tell, and reordered.
            return Some(true);
        }
        let (w, m) = Self::bit(seq);
        if self.seen[w] & m != 0 {
            return None;
        }
        self.seen[w] |= m;
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_new_reordered_and_duplicate() {
        let mut f = SeqWindow::new();
        assert_eq!(f.mark(0), Some(false));
        assert_eq!(f.mark(2), Some(false));
        assert_eq!(f.mark(1), Some(true), "older than the highest: reordered");
        assert_eq!(f.mark(1), None, "seen: duplicate");
        assert_eq!(f.mark(2), None);
        assert_eq!(f.mark(70_000), Some(false), "a jump clears the window");
        assert_eq!(f.mark(70_000 - 10), Some(true));
        assert_eq!(
            f.mark(3),
            Some(true),
            "too old to remember: counted new, reordered"
        );
        // Wrap-around of the bitmap: sequence s and s + 65536 are distinct.
        let mut g = SeqWindow::new();
        for s in 0..(SEQ_WINDOW * 2 + 5) {
            assert_eq!(g.mark(s), Some(false));
        }
        assert_eq!(g.mark(SEQ_WINDOW * 2), None);
    }
}
