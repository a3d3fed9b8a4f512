//! A subscriber relay: datagrams to the data port go to every subscriber;
//! subscribers come and go through the control port.
//!
//! ```text
//! control:  SUB padded with spaces to 32 bytes  -> TOKEN <16 hex>
//!           SUB <token>    -> SUBSCRIBED   (the sender's address; lasts EXPIRY, again to renew)
//!           UNSUB <token>  -> UNSUBSCRIBED
//!           anything else  -> no answer
//! data:     any datagram -> every live subscriber, from the receive buffer
//! ```
//!
//! Sources can be forged: a plain `SUB` would let a stranger subscribe any
//! address, and have the relay send it the stream. The token (a keyed hash
//! of the address, the key random per relay) goes to the address that asks
//! for it, so only a host that receives there can subscribe it. No answer
//! is longer than the request it answers (the first `SUB` is padded), so
//! the control port cannot be used to send a victim more than was sent to
//! it; anything else is not answered at all. `udpring fanout --control` does
//! the same with expiring tokens and limits per host and prefix.
//!
//! Run: `cargo run --example relay -- 127.0.0.1:7100 127.0.0.1:7101`.
//!
//! What it shows: one engine bound to two ports (`Config::also_bind`:
//! socket 0 data, socket 1 control), fan-out without a copy
//! (`Transport::forward`, the receive buffer sent to every subscriber),
//! state shared by the workers, a periodic timer expiring subscribers, and
//! bounded state (at most `MAX_SUBSCRIBERS`; beyond, `FULL`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use udpring::{Config, Datagram, Engine, Handler, Transport};

/// Subscribers at most.
pub const MAX_SUBSCRIBERS: usize = 1024;
/// How long a subscription lasts without a renewing SUB.
pub const EXPIRY: Duration = Duration::from_secs(10);

/// Subscribers by address, with when each expires.
#[derive(Clone, Default)]
pub struct Subscribers(Arc<RwLock<HashMap<SocketAddr, Instant>>>);

/// The first request: `SUB` padded with spaces to this many bytes, so that
/// the token's answer is not longer than it.
pub const FIRST_SUB_LEN: usize = 32;

/// The token of an address: a hash keyed at random when the relay starts.
fn token(key: &RandomState, addr: SocketAddr) -> u64 {
    key.hash_one(addr)
}

impl Subscribers {
    /// Live subscribers.
    pub fn list(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let s = self.0.read().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .filter(|(_, t)| **t > now)
            .map(|(a, _)| *a)
            .collect()
    }
}

const DATA: usize = 0;
const CONTROL: usize = 1;
const EXPIRE: u64 = 1;

/// One worker's handler.
pub struct Relay {
    subs: Subscribers,
    key: RandomState,
    /// The live subscribers of the datagram being relayed (kept, so that
    /// relaying allocates nothing).
    cache: Vec<SocketAddr>,
    expirer: bool,
}

impl Handler for Relay {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        if self.expirer {
            tx.call_every(Duration::from_millis(100), EXPIRE);
        }
    }

    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        match d.socket() {
            CONTROL => {
                let from = d.source();
                let text = std::str::from_utf8(d.payload()).unwrap_or("");
                let proven =
                    |t: &str| u64::from_str_radix(t, 16).is_ok_and(|t| t == token(&self.key, from));
                let reply: &[u8] = match text.split_once(' ') {
                    // The first SUB, padded: the token, to the address it is for.
                    Some(("SUB", pad))
                        if d.payload().len() == FIRST_SUB_LEN && pad.trim().is_empty() =>
                    {
                        let t = format!("TOKEN {:016x}", token(&self.key, from));
                        let _ = tx.reply_with(&d, t.as_bytes());
                        return;
                    }
                    Some(("SUB", t)) if proven(t) => {
                        let mut s = self.subs.0.write().unwrap_or_else(|e| e.into_inner());
                        if s.len() >= MAX_SUBSCRIBERS && !s.contains_key(&from) {
                            b"FULL"
                        } else {
                            s.insert(from, Instant::now() + EXPIRY);
                            b"SUBSCRIBED"
                        }
                    }
                    Some(("UNSUB", t)) if proven(t) => {
                        let mut s = self.subs.0.write().unwrap_or_else(|e| e.into_inner());
                        s.remove(&from);
                        b"UNSUBSCRIBED"
                    }
                    // Anything else, a wrong token included: no answer.
                    _ => return,
                };
                // From the control socket and the address it was asked on.
                let _ = tx.reply_with(&d, reply);
            }
            DATA => {
                // Read the table once per datagram (a shared lock, no
                // allocation), then send the receive buffer itself to each
                // subscriber.
                self.cache.clear();
                {
                    let now = Instant::now();
                    let s = self.subs.0.read().unwrap_or_else(|e| e.into_inner());
                    self.cache
                        .extend(s.iter().filter(|(_, t)| **t > now).map(|(a, _)| *a));
                }
                for &to in &self.cache {
                    // A full send queue is counted by the engine.
                    let _ = tx.forward(&d, to);
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, _token: u64, _tx: &mut Transport<'_>) {
        let now = Instant::now();
        let mut s = self.subs.0.write().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, &mut t| t > now);
    }
}

/// Starts the relay: data on `data`, control on `control`.
pub fn start(data: SocketAddr, control: SocketAddr) -> std::io::Result<(Engine, Subscribers)> {
    let subs = Subscribers::default();
    let s2 = subs.clone();
    let key = RandomState::new();
    let cfg = Config::builder(data).also_bind(vec![control]).build()?;
    let engine = Engine::start(cfg, move |i| Relay {
        subs: s2.clone(),
        key: key.clone(),
        cache: Vec::with_capacity(MAX_SUBSCRIBERS),
        expirer: i == 0,
    })?;
    Ok((engine, subs))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let control: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:0").parse()?;
    udpring::signals::install()?;
    let (engine, subs) = start(data, control)?;
    let a = engine.local_addrs();
    println!("relay: listening on {} (control {})", a[0], a[1]);
    udpring::signals::wait(None); // asleep until SIGINT/SIGTERM
    let n = subs.list().len();
    let s = engine.stop()?;
    println!(
        "relay: {} received, {} sent, {n} subscribers left",
        s.received, s.sent
    );
    Ok(())
}
