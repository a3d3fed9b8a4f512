//! A tokio application that owns an engine: requests go from the engine's
//! handler to async code through a bounded channel, replies go straight
//! onto the worker's socket through its `Sender` (`send_now_from`: one
//! system call from the async task, no copy, no wake-up of the worker,
//! from the address the client asked), waiting
//! when the socket's buffer is full.
//! Nothing is dropped without a count, and in steady state nothing is
//! allocated per request (buffers are recycled; see `tests/examples.rs`).
//!
//! ```text
//! worker thread:  datagram -> pooled buffer -> try_send -> (channel full: counted)
//! async task:     recv -> work (here: upper-case) -> Sender::send_now_from -> (buffer full: wait, retry)
//! ```
//!
//! Run: `cargo run --example tokio_bridge -- 127.0.0.1:7200`, then
//! `echo -n hello | nc -u -w1 127.0.0.1 7200` answers `HELLO`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use udpring::{Config, Datagram, Engine, Handler, Sender, Transport};

/// A request on its way to the async side.
pub struct Request {
    /// The payload, in a pooled buffer.
    pub buf: Vec<u8>,
    /// Who asked.
    pub from: SocketAddr,
    /// The address it asked (the answer leaves from it).
    pub asked: Option<IpAddr>,
    /// Which worker it came through (its `Sender` answers).
    pub worker: usize,
}

/// Buffers that go round: taken by the handler, given back by the async
/// side once the reply is queued.
#[derive(Clone)]
pub struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufPool {
    /// `n` buffers of `size` bytes' capacity.
    pub fn new(n: usize, size: usize) -> BufPool {
        BufPool(Arc::new(Mutex::new(
            (0..n).map(|_| Vec::with_capacity(size)).collect(),
        )))
    }
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
    fn give(&self, mut b: Vec<u8>) {
        b.clear();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    }
}

/// Every request is in exactly one of these once the run is over:
/// `received = answered + dropped_full + dropped_no_buffer + failed`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams the handler saw.
    pub received: AtomicU64,
    /// Handed to the async side.
    pub forwarded: AtomicU64,
    /// The channel was full (the async side is behind): not forwarded.
    pub dropped_full: AtomicU64,
    /// No pooled buffer was free: not forwarded.
    pub dropped_no_buffer: AtomicU64,
    /// Replies queued through a Sender.
    pub answered: AtomicU64,
    /// Replies the Sender refused for good (the worker stopped).
    pub failed: AtomicU64,
}

/// The handler: hands each datagram to the async side.
struct Forward {
    tx: mpsc::Sender<Request>,
    pool: BufPool,
    counts: Arc<Counts>,
    worker: usize,
}

impl Handler for Forward {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        let Some(mut buf) = self.pool.take() else {
            self.counts
                .dropped_no_buffer
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        buf.extend_from_slice(d.payload());
        let req = Request {
            buf,
            from: d.source(),
            asked: d.answer_from(),
            worker: self.worker,
        };
        match self.tx.try_send(req) {
            Ok(()) => {
                self.counts.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counts.dropped_full.fetch_add(1, Ordering::Relaxed);
                self.pool.give(e.into_inner().buf);
            }
        }
    }
}

/// A running bridge: the engine, the async side's end of the channel.
pub struct Bridge {
    /// The engine (stop it to end the run).
    pub engine: Engine,
    /// Requests from the workers.
    pub requests: mpsc::Receiver<Request>,
    /// One per worker.
    pub senders: Vec<Sender>,
    /// The recycled buffers.
    pub pool: BufPool,
    /// What happened to every request.
    pub counts: Arc<Counts>,
}

/// Starts an engine on `bind` whose handlers forward to a channel of
/// `depth` requests.
pub fn start(bind: SocketAddr, workers: usize, depth: usize) -> io::Result<Bridge> {
    let (tx, rx) = mpsc::channel(depth);
    // One buffer for every request that can be in the channel, in a
    // reply, or in a handler's hands.
    let pool = BufPool::new(depth * 2 + 64, 2048);
    let counts = Arc::new(Counts::default());
    let (p2, c2) = (pool.clone(), counts.clone());
    let cfg = Config::builder(bind).workers(workers).build()?;
    let engine = Engine::start(cfg, move |worker| Forward {
        tx: tx.clone(),
        pool: p2.clone(),
        counts: c2.clone(),
        worker,
    })?;
    let senders = (0..engine.workers())
        .map(|i| engine.sender(i).expect("a sender per worker"))
        .collect();
    Ok(Bridge {
        engine,
        requests: rx,
        senders,
        pool,
        counts,
    })
}

/// The async side: answers every request, waiting for room when a
/// Sender is full. Returns when the engine has stopped.
pub async fn serve(
    mut requests: mpsc::Receiver<Request>,
    senders: Vec<Sender>,
    pool: BufPool,
    counts: Arc<Counts>,
) {
    while let Some(mut req) = requests.recv().await {
        req.buf.make_ascii_uppercase();
        let s = &senders[req.worker];
        loop {
            // Straight onto the worker's socket from this thread: no copy,
            // no wake-up of the worker; from the address the client asked.
            // A full socket buffer waits.
            match s.send_now_from(0, &req.buf, req.from, req.asked) {
                Ok(()) => {
                    counts.answered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(std::time::Duration::from_micros(50)).await;
                }
                Err(_) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        pool.give(req.buf);
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()?;
    let b = start(bind, 1, 1024)?;
    println!("bridge: listening on {}", b.engine.local_addr());
    let counts = b.counts.clone();
    let server = tokio::spawn(serve(b.requests, b.senders, b.pool, counts.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Stopping the engine drops the handlers and so the channel's senders:
    // the async side drains what is left and ends.
    let s = b.engine.stop()?;
    server.await?;
    println!("bridge: {counts:?}; engine sent {}", s.sent);
    Ok(())
}
