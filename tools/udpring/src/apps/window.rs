//! Datagrams in flight of a closed loop, and the stall rule both floods
//! (the load generator's `--window` and the bench pair's client) use.

/// Datagrams a flood keeps in flight per worker unless told otherwise
/// (`udpring load` and `udpring bench`). Enough to keep a server on this
/// host busy; more only queues in its socket buffer, and what overflows
/// that is lost, which measures the buffer, not the server.
pub const DEFAULT_WINDOW: u64 = 256;

/// What a closed loop has in flight. When a whole check period passes
/// without a reply (lost datagrams never come back), what is outstanding is
/// written off, so the loop sends again instead of waiting for ever.
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlight {
    outstanding: u64,
    replies: u64,
    replies_at_check: u64,
}

impl InFlight {
    /// `n` more datagrams left.
    pub fn sent(&mut self, n: u64) {
        self.outstanding += n;
    }

    /// `n` replies came back.
    pub fn answered(&mut self, n: u64) {
        self.outstanding = self.outstanding.saturating_sub(n);
        self.replies += n;
    }

    /// Datagrams sent and not (yet) answered or written off.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Whether `n` more may go with at most `window` in flight.
    pub fn room_for(&self, n: u64, window: u64) -> bool {
        self.outstanding + n <= window
    }

    /// Called once per check period: if no reply came since the last call,
    /// writes off what is outstanding and returns how many that was.
    pub fn check_stall(&mut self) -> u64 {
        let stalled = self.replies == self.replies_at_check;
        self.replies_at_check = self.replies;
        if stalled {
            std::mem::take(&mut self.outstanding)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_period_writes_off_what_is_outstanding() {
        let mut w = InFlight::default();
        w.sent(10);
        w.answered(3);
        assert_eq!(w.check_stall(), 0, "replies came since the start");
        assert!(w.room_for(3, 10) && !w.room_for(4, 10));
        assert_eq!(w.check_stall(), 7, "nothing since the last check");
        assert_eq!(w.outstanding(), 0);
        w.answered(5);
        assert_eq!(w.outstanding(), 0, "late replies do not go negative");
    }
}
