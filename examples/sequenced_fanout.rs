//! A fan-out that delivers every copy: each datagram to every subscriber
//! with a header of that subscriber's own (a 4-byte sequence number, so a
//! subscriber sees its gaps), built in the send slot. A thousand copies
//! per datagram outrun the send slots; the engine refuses the rest
//! (`SendError::Exhausted`) and calls `on_writable` when slots come back,
//! and the relay resumes where it stopped. Each datagram's fan-out starts
//! one subscriber further on, so that when the backlog is full (counted,
//! bounded) the losses fall on everyone in turn, never on the same
//! subscribers.
//!
//! Run: `cargo run --example sequenced_fanout -- 127.0.0.1:7200 SUB1 SUB2 ...`.
//!
//! Each copy takes a send slot of its own (a zero-copy `forward` sends the
//! receive buffer to everyone), so the relay asks for slots enough for two
//! fan-outs (`Config::send_slots`).
//!
//! What it shows: backpressure a handler can act on (`Handler::on_writable`),
//! replies built in place (`Transport::send_with`), bounded state (a
//! backlog of at most `MAX_BACKLOG` datagrams, their buffers reused: no
//! allocation per datagram once warm).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use udpring::{Config, Datagram, Engine, Handler, SendError, Transport};

/// Datagrams waiting to be fanned out, at most; more are dropped
/// (counted in `Counts::backlog_full`).
pub const MAX_BACKLOG: usize = 64;

/// What the workers counted.
#[derive(Default)]
pub struct Counts {
    /// Datagrams taken in for fan-out.
    pub accepted: AtomicU64,
    /// Datagrams dropped because the backlog was full.
    pub backlog_full: AtomicU64,
    /// Copies queued for a subscriber.
    pub copies: AtomicU64,
    /// Copies that could not be queued for another reason than room
    /// (too large, wrong family): skipped.
    pub failed: AtomicU64,
    /// Times the engine said there was room again.
    pub resumed: AtomicU64,
}

/// A datagram part-way through its fan-out.
struct Pending {
    payload: Vec<u8>,
    /// Where its fan-out starts, and how many subscribers have their copy.
    first: usize,
    done: usize,
}

/// One worker's relay.
pub struct Fanout {
    subs: Arc<Vec<SocketAddr>>,
    /// Each subscriber's next sequence number.
    seqs: Vec<u32>,
    backlog: VecDeque<Pending>,
    /// Buffers of finished datagrams, reused.
    spare: Vec<Vec<u8>>,
    start: usize,
    counts: Arc<Counts>,
}

impl Fanout {
    /// A relay to `subs`, counting into `counts`.
    pub fn new(subs: Arc<Vec<SocketAddr>>, counts: Arc<Counts>) -> Fanout {
        let n = subs.len();
        Fanout {
            subs,
            seqs: vec![0; n],
            backlog: VecDeque::with_capacity(MAX_BACKLOG),
            spare: Vec::with_capacity(MAX_BACKLOG),
            start: 0,
            counts,
        }
    }

    /// Sends what it can of the backlog, oldest first; stops at the first
    /// refusal for want of room (`on_writable` brings it back).
    fn pump(&mut self, tx: &mut Transport<'_>) {
        let n = self.subs.len();
        while let Some(p) = self.backlog.front_mut() {
            while p.done < n {
                let i = (p.first + p.done) % n;
                let seq = self.seqs[i].to_be_bytes();
                let body = &p.payload;
                let len = 4 + body.len();
                match tx.send_with(len, self.subs[i], |b| {
                    b[..4].copy_from_slice(&seq);
                    b[4..len].copy_from_slice(body);
                    len
                }) {
                    Ok(_) => {
                        self.seqs[i] = self.seqs[i].wrapping_add(1);
                        self.counts.copies.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(SendError::Exhausted) => return,
                    Err(_) => {
                        // This copy cannot go (never will): the sequence
                        // moves on, so the subscriber sees the gap.
                        self.seqs[i] = self.seqs[i].wrapping_add(1);
                        self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                p.done += 1;
            }
            if let Some(done) = self.backlog.pop_front() {
                self.spare.push(done.payload);
            }
        }
    }
}

impl Handler for Fanout {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        if self.subs.is_empty() {
            return;
        }
        if self.backlog.len() >= MAX_BACKLOG {
            self.counts.backlog_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut payload = self.spare.pop().unwrap_or_default();
        payload.clear();
        payload.extend_from_slice(d.payload());
        self.backlog.push_back(Pending {
            payload,
            first: self.start,
            done: 0,
        });
        self.start = (self.start + 1) % self.subs.len();
        self.counts.accepted.fetch_add(1, Ordering::Relaxed);
        self.pump(tx);
    }

    fn on_writable(&mut self, tx: &mut Transport<'_>) {
        self.counts.resumed.fetch_add(1, Ordering::Relaxed);
        self.pump(tx);
    }
}

/// Starts the fan-out on `bind` (one worker: one sequence per subscriber),
/// with send slots for two datagrams' fan-outs, so that one is built
/// while the last goes out (with the default 256, a thousand copies took
/// four turns of the loop each and moved half as many per second; a slot
/// is about 4 KiB).
pub fn start(bind: SocketAddr, subs: Vec<SocketAddr>) -> std::io::Result<(Engine, Arc<Counts>)> {
    let slots = (2 * subs.len()).clamp(256, 8192);
    start_with_slots(bind, subs, slots)
}

/// [`start`] with `slots` send slots (fewer than a fan-out's copies: the
/// relay runs on `on_writable`).
pub fn start_with_slots(
    bind: SocketAddr,
    subs: Vec<SocketAddr>,
    slots: usize,
) -> std::io::Result<(Engine, Arc<Counts>)> {
    let counts = Arc::new(Counts::default());
    let (c, subs) = (counts.clone(), Arc::new(subs));
    let mut cfg = Config::new(bind);
    cfg.workers = 1;
    cfg.send_slots = slots;
    let engine = Engine::start(cfg, move |_| Fanout::new(subs.clone(), c.clone()))?;
    Ok((engine, counts))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let subs = args
        .map(|a| a.parse())
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    udpring::signals::install()?;
    let (engine, counts) = start(bind, subs)?;
    println!("sequenced_fanout: listening on {}", engine.local_addr());
    udpring::signals::wait(None); // asleep until SIGINT/SIGTERM
    let s = engine.stop()?;
    println!(
        "sequenced_fanout: {} accepted, {} copies, {} resumptions, {} dropped (backlog full), \
         {} sent",
        counts.accepted.load(Ordering::Relaxed),
        counts.copies.load(Ordering::Relaxed),
        counts.resumed.load(Ordering::Relaxed),
        counts.backlog_full.load(Ordering::Relaxed),
        s.sent
    );
    Ok(())
}
