//! A key-value responder: one datagram a request, one a reply, state
//! shared by every worker, entries that expire.
//!
//! ```text
//! SET <key> <value> [ttl_ms]   -> OK
//! GET <key>                    -> VALUE <value> | NOTFOUND
//! DEL <key>                    -> DELETED | NOTFOUND
//! anything else                -> ERROR <why>, cut to the request's length
//! ```
//!
//! Run: `cargo run --example kv -- 127.0.0.1:7000 [workers] [answers/s per
//! address, 0: no limit; 1000 by default]`, then e.g.
//! `echo -n 'SET a 1 500' | nc -u -w1 127.0.0.1 7000`.
//!
//! What it shows (the crate documentation walks through it):
//! - a handler per worker sharing one table (`Arc<RwLock<..>>`: readers in
//!   parallel, writers alone);
//! - replies built into a buffer the handler keeps (no allocation per
//!   request) and sent with `reply_with` (one copy into a send slot; from
//!   the address the request was sent to);
//! - a periodic timer on worker 0 sweeping expired entries, and a lazy
//!   check on every read; the sweep need not be punctual, so its timer
//!   has a slack (`set_timer_slack`), which lets a worker waiting for
//!   datagrams in `recvmsg` fire it with the next one rather than wake
//!   for it;
//! - bounded state: at most `MAX_KEYS` keys, so a stranger cannot make it
//!   grow without end;
//! - bounded reflection: sources can be forged, and a `GET` of a long value
//!   answers a few bytes with up to `MAX_LEN` (memcached's UDP port was
//!   used this way against third parties). So what any one address can be
//!   sent is bounded by the guard's per-source rate (`PER_SOURCE_RATE`
//!   answers a second, about 1 MB/s at the longest value; refusals counted
//!   in `guard_rate`), and an error is never longer than the request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use udpring::{Config, Datagram, Engine, Handler, Transport};

/// Requests a second one source address may make (a burst of a fifth of
/// that after a quiet spell); beyond, refused and counted (`guard_rate`).
pub const PER_SOURCE_RATE: f64 = 1000.0;

/// How often worker 0 sweeps expired entries out of the table.
pub const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// How late a sweep may come.
pub const SWEEP_SLACK: Duration = Duration::from_millis(25);

/// Keys the table holds at most.
pub const MAX_KEYS: usize = 100_000;
/// Longest key and value.
pub const MAX_LEN: usize = 1024;

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

/// The table every worker shares.
#[derive(Clone, Default)]
pub struct Table(Arc<RwLock<HashMap<Vec<u8>, Entry>>>);

impl Table {
    /// Live entries.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        t.values()
            .filter(|e| e.expires.is_none_or(|x| x > now))
            .count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One worker's handler.
pub struct Kv {
    table: Table,
    sweeper: bool,
    reply: Vec<u8>,
}

impl Kv {
    /// A handler on `table`; `sweeper`: this one removes expired entries.
    pub fn new(table: Table, sweeper: bool) -> Kv {
        Kv {
            table,
            sweeper,
            reply: Vec::with_capacity(MAX_LEN + 16),
        }
    }

    /// Removes the entries that have expired.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut t = self.table.0.write().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, e| e.expires.is_none_or(|x| x > now));
    }

    /// Answers one request: the reply, kept in the handler (no allocation
    /// per request). Public so that the same logic can run behind another
    /// socket loop (`benches/kv.rs` holds it against std and tokio).
    pub fn answer(&mut self, req: &[u8]) -> &[u8] {
        self.fill(req);
        // An error answers junk: never more bytes than were sent.
        if self.reply.starts_with(b"ERROR") {
            self.reply.truncate(req.len());
        }
        &self.reply
    }

    /// Builds the answer to `req` in `self.reply`.
    fn fill(&mut self, req: &[u8]) {
        self.reply.clear();
        let mut words = req.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let (cmd, key) = (words.next(), words.next());
        let too_long = |w: &[u8]| w.len() > MAX_LEN;
        match (cmd, key) {
            (Some(b"GET"), Some(k)) => {
                let now = Instant::now();
                let t = self.table.0.read().unwrap_or_else(|e| e.into_inner());
                match t.get(k).filter(|e| e.expires.is_none_or(|x| x > now)) {
                    Some(e) => {
                        self.reply.extend_from_slice(b"VALUE ");
                        self.reply.extend_from_slice(&e.value);
                    }
                    None => self.reply.extend_from_slice(b"NOTFOUND"),
                }
            }
            (Some(b"SET"), Some(k)) => {
                let Some(v) = words.next() else {
                    return self.reply.extend_from_slice(b"ERROR SET needs a value");
                };
                let ttl = match words.next().map(std::str::from_utf8) {
                    None => None,
                    Some(Ok(ms)) => match ms.parse::<u64>() {
                        Ok(ms) => Some(Duration::from_millis(ms)),
                        Err(_) => return self.reply.extend_from_slice(b"ERROR bad ttl"),
                    },
                    Some(Err(_)) => return self.reply.extend_from_slice(b"ERROR bad ttl"),
                };
                if too_long(k) || too_long(v) {
                    return self.reply.extend_from_slice(b"ERROR too long");
                }
                let mut t = self.table.0.write().unwrap_or_else(|e| e.into_inner());
                if t.len() >= MAX_KEYS && !t.contains_key(k) {
                    return self.reply.extend_from_slice(b"ERROR full");
                }
                t.insert(
                    k.to_vec(),
                    Entry {
                        value: v.to_vec(),
                        expires: ttl.map(|d| Instant::now() + d),
                    },
                );
                self.reply.extend_from_slice(b"OK");
            }
            (Some(b"DEL"), Some(k)) => {
                let mut t = self.table.0.write().unwrap_or_else(|e| e.into_inner());
                let gone = t.remove(k).is_some();
                self.reply
                    .extend_from_slice(if gone { b"DELETED" } else { b"NOTFOUND" });
            }
            _ => self
                .reply
                .extend_from_slice(b"ERROR expected GET, SET or DEL and a key"),
        }
    }
}

/// The sweeper's timer token.
const SWEEP: u64 = 1;

impl Handler for Kv {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        if self.sweeper {
            tx.call_every(SWEEP_EVERY, SWEEP);
            tx.set_timer_slack(SWEEP_SLACK);
        }
    }

    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        let reply = self.answer(d.payload());
        if reply.is_empty() {
            return;
        }
        // To the asker, from the address it asked (several addresses,
        // a wildcard bind). A refusal (the send queue full) is counted by
        // the engine; the client asks again.
        let _ = tx.reply_with(&d, reply);
    }

    fn on_timer(&mut self, token: u64, _tx: &mut Transport<'_>) {
        if token == SWEEP {
            self.sweep();
        }
    }
}

/// Starts the responder on `bind` with `workers` workers, answering each
/// source address at most `per_source` times a second (`None`: no limit).
pub fn start(
    bind: SocketAddr,
    workers: usize,
    per_source: Option<f64>,
) -> std::io::Result<(Engine, Table)> {
    let table = Table::default();
    let t2 = table.clone();
    let mut guard = udpring::Guard::default();
    guard.per_source_rate = per_source.map(|r| udpring::RateLimit {
        per_second: r,
        burst: ((r / 5.0) as u32).max(1),
    });
    let cfg = Config::builder(bind)
        .workers(workers)
        .guard(guard)
        .build()?;
    let engine = Engine::start(cfg, move |i| Kv::new(t2.clone(), i == 0))?;
    Ok((engine, table))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let workers: usize = args.next().as_deref().unwrap_or("1").parse()?;
    let rate: f64 = match args.next() {
        Some(r) => r.parse()?,
        None => PER_SOURCE_RATE,
    };
    udpring::signals::install()?;
    let (engine, table) = start(bind, workers, (rate > 0.0).then_some(rate))?;
    println!(
        "kv: listening on {} ({} workers)",
        engine.local_addr(),
        engine.workers()
    );
    udpring::signals::wait(None); // asleep until SIGINT/SIGTERM
    let keys = table.len();
    let s = engine.stop()?;
    println!(
        "kv: {} requests, {} replies, {keys} keys left, {} send errors, {} over the per-source rate",
        s.received,
        s.sent,
        s.send_errors_total(),
        s.guard_rate
    );
    Ok(())
}
