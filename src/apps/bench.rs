//! `udpring bench`: an echo engine and a flood client in one process, on
//! loopback, one configuration after another.
//!
//! The server is an [`Engine`] running [`Echo`] on the backend under test,
//! one worker pinned to the first CPU. The client is a second engine (always
//! the same backend, so only the server changes between rows) pinned to the
//! last CPU, running [`Flood`]: it keeps a window of datagrams outstanding,
//! sends one more for every echo, and writes off what is lost when nothing
//! comes back for a while. Rates are measured after a warm-up.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::apps::echo::Echo;
use crate::{Backend, Config, Datagram, Engine, Handler, SendError, Transport};

/// Counters the flood client shares with the thread that measures.
#[derive(Debug, Default)]
pub struct FloodCounters {
    /// Datagrams sent (segments of a train count one each).
    pub sent: AtomicU64,
    /// Datagrams that came back.
    pub echoed: AtomicU64,
    /// Datagrams given up on (no echo within the stall timeout).
    pub written_off: AtomicU64,
}

/// A closed-loop flood: keeps `window` datagrams in flight to `target`.
pub struct Flood {
    target: SocketAddr,
    size: usize,
    segments: usize,
    window: u64,
    outstanding: u64,
    last_echoed: u64,
    echoed: u64,
    data: Vec<u8>,
    counters: Arc<FloodCounters>,
}

/// How often the flood checks for a stall.
const STALL_CHECK: Duration = Duration::from_millis(20);

impl Flood {
    /// A flood of `size`-byte datagrams, `segments` per send (GSO when > 1).
    pub fn new(
        target: SocketAddr,
        size: usize,
        segments: usize,
        window: u64,
        counters: Arc<FloodCounters>,
    ) -> Self {
        let segments = segments.max(1);
        Flood {
            target,
            size,
            segments,
            window: window.max(segments as u64),
            outstanding: 0,
            last_echoed: 0,
            echoed: 0,
            data: vec![0x5a; size * segments],
            counters,
        }
    }

    fn refill(&mut self, tx: &mut Transport<'_>) {
        let segs = self.segments as u64;
        while self.outstanding + segs <= self.window {
            let r = if self.segments > 1 {
                tx.send_segments(&self.data, self.size as u16, self.target)
            } else {
                tx.send_to(&self.data, self.target)
            };
            match r {
                Ok(()) => {
                    self.outstanding += segs;
                    self.counters.sent.fetch_add(segs, Ordering::Relaxed);
                }
                Err(SendError::Exhausted | SendError::TooLarge | SendError::NoSuchSocket) => break,
            }
        }
    }
}

impl Handler for Flood {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.refill(tx);
        tx.call_later(STALL_CHECK, 0);
    }

    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let n = dgram.segments() as u64;
        self.echoed += n;
        self.outstanding = self.outstanding.saturating_sub(n);
        self.counters.echoed.fetch_add(n, Ordering::Relaxed);
        self.refill(tx);
    }

    fn on_timer(&mut self, _token: u64, tx: &mut Transport<'_>) {
        if self.echoed == self.last_echoed && self.outstanding > 0 {
            self.counters
                .written_off
                .fetch_add(self.outstanding, Ordering::Relaxed);
            self.outstanding = 0;
        }
        self.last_echoed = self.echoed;
        self.refill(tx);
        tx.call_later(STALL_CHECK, 0);
    }
}

/// One row of the bench table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    /// Server backend.
    pub backend: Backend,
    /// Datagram payload size.
    pub size: usize,
    /// GSO sends and GRO receives on both ends.
    pub gso: bool,
}

/// The result of one case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunResult {
    /// Server backend.
    pub backend: Backend,
    /// Payload size.
    pub size: usize,
    /// Whether GSO/GRO was on.
    pub gso: bool,
    /// Datagrams the client sent in the measured interval.
    pub sent: u64,
    /// Datagrams echoed back in the measured interval.
    pub echoed: u64,
    /// Echoed datagrams per second.
    pub pps: f64,
    /// Echoed payload, Gbit/s.
    pub gbps: f64,
    /// Datagrams the client gave up on (whole run).
    pub lost: u64,
    /// Seconds measured.
    pub secs: f64,
}

/// How to run the bench.
#[derive(Clone, Debug)]
pub struct BenchOpts {
    /// Measured time per case.
    pub duration: Duration,
    /// Warm-up per case, not measured.
    pub warmup: Duration,
    /// Backend of the flood client.
    pub client_backend: Option<Backend>,
    /// Datagrams in flight (without GSO).
    pub window: u64,
    /// Segments per GSO send.
    pub gso_segments: usize,
    /// Bind address of the server (port 0 is fine).
    pub bind: SocketAddr,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(300),
            client_backend: None,
            window: 256,
            gso_segments: 64,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// The default table: each backend at 64 B and 1400 B, and `uring` with
/// GSO/GRO at both sizes.
pub fn default_cases(backends: &[Backend]) -> Vec<Case> {
    let mut v = Vec::new();
    for &b in backends {
        for size in [64, 1400] {
            v.push(Case {
                backend: b,
                size,
                gso: false,
            });
        }
    }
    if backends.contains(&Backend::Uring) {
        for size in [64, 1400] {
            v.push(Case {
                backend: Backend::Uring,
                size,
                gso: true,
            });
        }
    }
    v
}

/// An echo server and a flood client, running.
pub struct Pair {
    /// The echo engine under test.
    pub server: Engine,
    /// The flood client's engine.
    pub client: Engine,
    /// The flood's counters.
    pub counters: Arc<FloodCounters>,
}

impl Pair {
    /// Starts the echo server for `case` and a flood client against it.
    /// `server_batch` sets the server's `recvmmsg`/`sendmmsg` batch.
    pub fn start(case: Case, opts: &BenchOpts, server_batch: usize) -> io::Result<Pair> {
        let cpus = crate::sys::allowed_cpus();
        let last = cpus.len().saturating_sub(1);
        // Largest GSO train under 64 KiB for this size.
        let segs = if case.gso {
            opts.gso_segments.min(65000 / case.size.max(1)).max(1)
        } else {
            1
        };
        let mut server_cfg = Config::new(opts.bind);
        server_cfg.backend = Some(case.backend);
        server_cfg.workers = 1;
        server_cfg.gro = case.gso;
        server_cfg.batch = server_batch;
        server_cfg.first_cpu = 0;
        let server = Engine::start(server_cfg, |_| Echo::new())?;
        let target = server.local_addr();
        let mut client_cfg = Config::new(SocketAddr::new(opts.bind.ip(), 0));
        client_cfg.backend = opts.client_backend;
        client_cfg.workers = 1;
        client_cfg.gro = case.gso;
        client_cfg.first_cpu = last;
        if case.gso {
            client_cfg.send_slots = 64;
        }
        let counters = Arc::new(FloodCounters::default());
        let c = counters.clone();
        let window = if case.gso {
            opts.window.max(segs as u64 * 8)
        } else {
            opts.window
        };
        let size = case.size;
        let client = Engine::start(client_cfg, move |_| {
            Flood::new(target, size, segs, window, c.clone())
        })?;
        Ok(Pair {
            server,
            client,
            counters,
        })
    }

    /// Datagrams echoed so far.
    pub fn echoed(&self) -> u64 {
        self.counters.echoed.load(Ordering::Relaxed)
    }

    /// Stops both engines; fails if the server did not get every slot back.
    pub fn stop(self) -> io::Result<()> {
        self.client.stop()?;
        let s = self.server.stop()?;
        if s.slots_out != 0 {
            return Err(io::Error::other(format!(
                "server left {} slots out",
                s.slots_out
            )));
        }
        Ok(())
    }
}

/// Runs one case and returns its figures.
pub fn run_case(case: Case, opts: &BenchOpts) -> io::Result<RunResult> {
    let pair = Pair::start(case, opts, 32)?;
    std::thread::sleep(opts.warmup);
    let t0 = Instant::now();
    let counters = pair.counters.clone();
    let (s0, e0) = (
        counters.sent.load(Ordering::Relaxed),
        counters.echoed.load(Ordering::Relaxed),
    );
    std::thread::sleep(opts.duration);
    let secs = t0.elapsed().as_secs_f64();
    let (s1, e1) = (
        counters.sent.load(Ordering::Relaxed),
        counters.echoed.load(Ordering::Relaxed),
    );
    pair.stop()?;
    let echoed = e1 - e0;
    let pps = echoed as f64 / secs;
    Ok(RunResult {
        backend: case.backend,
        size: case.size,
        gso: case.gso,
        sent: s1 - s0,
        echoed,
        pps,
        gbps: pps * case.size as f64 * 8.0 / 1e9,
        lost: counters.written_off.load(Ordering::Relaxed),
        secs,
    })
}

/// The ratio of `r` to the `simple` run of the same size, if there is one.
pub fn ratio_to_simple(r: &RunResult, all: &[RunResult]) -> Option<f64> {
    all.iter()
        .find(|b| b.backend == Backend::Simple && !b.gso && b.size == r.size && b.pps > 0.0)
        .map(|b| r.pps / b.pps)
}

/// Formats results as the table `udpring bench` prints.
pub fn table(results: &[RunResult]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<8} {:>6} {:>8} {:>14} {:>9} {:>10} {:>9}\n",
        "backend", "size", "gso/gro", "echoed/s", "Gbit/s", "vs simple", "lost"
    ));
    for r in results {
        let ratio = ratio_to_simple(r, results).map_or("-".to_string(), |x| format!("{x:.2}x"));
        s.push_str(&format!(
            "{:<8} {:>6} {:>8} {:>14.0} {:>9.3} {:>10} {:>9}\n",
            r.backend.name(),
            r.size,
            if r.gso { "on" } else { "off" },
            r.pps,
            r.gbps,
            ratio,
            r.lost
        ));
    }
    s
}
