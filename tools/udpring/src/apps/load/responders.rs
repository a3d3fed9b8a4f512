//! The responders to a multicast target, as one worker saw them: one
//! datagram, many answers, so each responder has its own sequence windows
//! (none a duplicate of another's), its own counts and RTT histogram. At
//! most `max` are tracked: a stranger answering from many addresses
//! cannot make the table grow without end.

use std::collections::HashMap;
use std::net::SocketAddr;

use hdrhistogram::Histogram;

use super::report::{ResponderReport, new_histogram};
use crate::apps::seq::{Seen, SeqWindow};

/// One responder.
struct Responder {
    /// A sequence window per flow of the worker.
    windows: Vec<SeqWindow>,
    counts: ResponderReport,
    hist: Histogram<u64>,
}

/// The responders a worker tracks.
pub(super) struct Responders {
    by_addr: HashMap<SocketAddr, Responder>,
    max: usize,
}

impl Responders {
    pub(super) fn new(max: usize) -> Self {
        Responders {
            by_addr: HashMap::new(),
            max,
        }
    }

    /// `from` answered `seq` of flow `fi` (of `flows`) after `rtt` ns.
    /// `None` for a responder beyond the tracked maximum (the caller
    /// counts it).
    pub(super) fn mark(
        &mut self,
        from: SocketAddr,
        flows: usize,
        fi: usize,
        seq: u64,
        rtt: u64,
    ) -> Option<Seen> {
        if !self.by_addr.contains_key(&from) {
            if self.by_addr.len() >= self.max {
                return None;
            }
            self.by_addr.insert(
                from,
                Responder {
                    windows: (0..flows).map(|_| SeqWindow::new()).collect(),
                    counts: ResponderReport {
                        addr: from.to_string(),
                        ..Default::default()
                    },
                    hist: new_histogram(),
                },
            );
        }
        let r = self.by_addr.get_mut(&from)?;
        let seen = r.windows.get_mut(fi)?.mark(seq);
        match seen {
            Seen::Duplicate => r.counts.duplicated += 1,
            Seen::Stale => {}
            first => {
                r.counts.received += 1;
                r.counts.reordered += u64::from(first == Seen::Reordered);
                r.hist.saturating_record(rtt);
            }
        }
        Some(seen)
    }

    /// Whether every responder heard from has answered `sent` requests
    /// (none heard: no).
    pub(super) fn all_answered(&self, sent: u64) -> bool {
        !self.by_addr.is_empty() && self.by_addr.values().all(|r| r.counts.received >= sent)
    }

    /// Each responder's counts and histogram.
    pub(super) fn reports(&self) -> Vec<(SocketAddr, ResponderReport, Histogram<u64>)> {
        self.by_addr
            .iter()
            .map(|(a, r)| (*a, r.counts.clone(), r.hist.clone()))
            .collect()
    }
}
