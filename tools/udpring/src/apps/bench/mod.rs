//! `udpring bench`: an echo engine and the load generator in one process,
//! on loopback, one workload after another.
//!
//! The server is an [`Engine`] running [`Echo`] on the backend under test,
//! one worker pinned to the first CPU. The client is the load generator
//! ([`crate::apps::load`]) on the last CPU, always on the same backend, so
//! only the server changes between rows. Throughput rows keep a window of
//! datagrams in flight (a closed loop: what comes back is what the server
//! sustains, without overrunning it); the ping row has one in flight.
//!
//! [`Pair`] and [`Flood`] are a lighter closed-loop pair that runs until
//! stopped, for criterion's benches. What a run's rows say, as a table or
//! CSV, is in [`report`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::apps::echo::Echo;
use crate::apps::window::InFlight;
use udpring::{Backend, Config, Datagram, Engine, Handler, Transport};

pub mod report;

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
    in_flight: InFlight,
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
            in_flight: InFlight::default(),
            data: vec![0x5a; size * segments],
            counters,
        }
    }

    fn refill(&mut self, tx: &mut Transport<'_>) {
        let segs = self.segments as u64;
        while self.in_flight.room_for(segs, self.window) {
            let r = if self.segments > 1 {
                tx.send_segments(&self.data, self.size as u16, self.target)
            } else {
                tx.send_to(&self.data, self.target)
            };
            match r {
                Ok(()) => {
                    self.in_flight.sent(segs);
                    self.counters.sent.fetch_add(segs, Ordering::Relaxed);
                }
                Err(_) => break,
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
        self.in_flight.answered(n);
        self.counters.echoed.fetch_add(n, Ordering::Relaxed);
        self.refill(tx);
    }

    fn on_timer(&mut self, _token: u64, tx: &mut Transport<'_>) {
        let lost = self.in_flight.check_stall();
        self.counters.written_off.fetch_add(lost, Ordering::Relaxed);
        self.refill(tx);
        tx.call_later(STALL_CHECK, 0);
    }
}

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Echo throughput: a window of datagrams in flight.
    Flood,
    /// Round-trip latency: one datagram in flight.
    Ping,
}

impl Workload {
    /// The name rows and the CSV give it (as the JSON does).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Flood => "flood",
            Workload::Ping => "ping",
        }
    }
}

/// One row of the bench table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    /// Throughput or latency.
    pub workload: Workload,
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
    /// Who drove the echo: `udpring` (the load generator, the row's
    /// figure) or `C limit` (the kernel-level reference flood,
    /// `udpring reference`, against the same echo: what that echo gives a
    /// C program).
    pub client: &'static str,
    /// Throughput or latency.
    pub workload: Workload,
    /// Server backend.
    pub backend: Backend,
    /// Payload size.
    pub size: usize,
    /// Datagrams per send (1: GSO and GRO off).
    pub gso_segments: usize,
    /// Datagrams sent in the measured interval.
    pub sent: u64,
    /// Datagrams echoed back.
    pub received: u64,
    /// Echoed datagrams per second.
    pub pps_received: f64,
    /// Echoed payload, Gbit/s.
    pub gbps_received: f64,
    /// Datagrams without a reply.
    pub lost: u64,
    /// Echoes that came back shorter than sent (not counted as echoed).
    pub truncated: u64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Round-trip times; `null` when nothing came back.
    pub rtt_us: Option<crate::apps::load::RttUs>,
}

/// How to run the bench: the options of `udpring bench` that shape each
/// row.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchOpts {
    /// Seconds measured per row.
    #[arg(long, default_value = "2", value_parser = crate::common::parse_secs, allow_negative_numbers = true)]
    pub duration: Duration,
    /// Warm-up per row, not measured.
    #[arg(long, default_value = "0.3", value_parser = crate::common::parse_secs_or_zero)]
    pub warmup: Duration,
    /// Backend of the client (default: the engine's choice).
    #[arg(skip)]
    pub client_backend: Option<Backend>,
    /// Datagrams kept in flight in flood rows (1..1000000; default 256);
    /// the GSO/GRO rows keep at least 128 trains (at most 4 MiB of them)
    /// in flight.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: Option<u64>,
    /// Segments per GSO send in the GSO/GRO rows (1..64, default 64;
    /// capped so a send stays under 64 KiB: 46 at 1400 B).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub gso_segments: Option<u64>,
    /// Loopback address to run on (127.0.0.1 or ::1 style, port ignored).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = crate::common::parse_addr)]
    pub bind: SocketAddr,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(300),
            client_backend: None,
            window: None,
            gso_segments: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl BenchOpts {
    /// Datagrams in flight in a flood row: `--window`, or 256.
    pub fn window(&self) -> u64 {
        self.window.unwrap_or(crate::apps::window::DEFAULT_WINDOW)
    }

    /// The most segments per GSO send: `--gso-segments`, or 64.
    pub fn max_segments(&self) -> usize {
        self.gso_segments.unwrap_or(64) as usize
    }
}

/// Segments per GSO send for `size`: at most `max`, under 64 KiB in all.
pub fn gso_segments(size: usize, max: usize) -> usize {
    max.min(65000 / size.max(1)).max(1)
}

/// The main table: every backend's flood at 64 and 1400 B and ping at 64 B,
/// and GSO/GRO floods on `uring` (on every backend with `compare`).
pub fn default_cases(backends: &[Backend], compare: bool) -> Vec<Case> {
    let mut v = Vec::new();
    for &backend in backends {
        for size in [64, 1400] {
            v.push(Case {
                workload: Workload::Flood,
                backend,
                size,
                gso: false,
            });
        }
    }
    for &backend in backends {
        v.push(Case {
            workload: Workload::Ping,
            backend,
            size: 64,
            gso: false,
        });
    }
    let gso_backends: Vec<Backend> = if compare {
        backends.to_vec()
    } else if backends.contains(&Backend::Uring) {
        vec![Backend::Uring]
    } else {
        backends.last().copied().into_iter().collect()
    };
    for backend in gso_backends {
        for size in [64, 1400] {
            v.push(Case {
                workload: Workload::Flood,
                backend,
                size,
                gso: true,
            });
        }
    }
    v
}

/// Starts the echo server under test: `case`'s backend, one worker on the
/// first CPU, GRO when the case has GSO. Returns it and the segments per
/// GSO send for the case (the largest train under 64 KiB; 1 without GSO).
/// Fails when a row's echo, stopped, had `slots_out` slots not back.
fn all_slots_back(slots_out: u64) -> io::Result<()> {
    if slots_out != 0 {
        return Err(io::Error::other(format!(
            "server left {slots_out} slots out"
        )));
    }
    Ok(())
}

fn start_server(case: Case, opts: &BenchOpts, batch: usize) -> io::Result<(Engine, usize)> {
    let segs = if case.gso {
        gso_segments(case.size, opts.max_segments())
    } else {
        1
    };
    let mut cfg = Config::new(opts.bind);
    cfg.backend = Some(case.backend);
    cfg.workers = 1;
    cfg.gro = case.gso;
    // A row without GSO measures one send per echo.
    cfg.coalesce = case.gso;
    if !case.gso {
        // Room for the whole datagram: a cut echo is not an echo.
        cfg.slot_size = (case.size + udpring::HEADROOM).max(udpring::DEFAULT_SLOT_SIZE);
    }
    cfg.batch = batch;
    cfg.pin = true;
    cfg.first_cpu = 0;
    Ok((Engine::start(cfg, |_| Echo::new())?, segs))
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
        let cpus = udpring::os::allowed_cpus();
        let last = cpus.len().saturating_sub(1);
        let (server, segs) = start_server(case, opts, server_batch)?;
        let target = server.local_addr();
        let mut client_cfg = Config::new(SocketAddr::new(opts.bind.ip(), 0));
        client_cfg.backend = opts.client_backend;
        client_cfg.workers = 1;
        // A client: its requests go unmarked and it takes marked answers.
        client_cfg.guard = udpring::Guard::client();
        client_cfg.gro = case.gso;
        client_cfg.coalesce = false;
        client_cfg.pin = true;
        client_cfg.first_cpu = last;
        if case.gso {
            client_cfg.send_slots = 64;
        }
        let counters = Arc::new(FloodCounters::default());
        let c = counters.clone();
        let window = if case.gso {
            opts.window().max(segs as u64 * 8)
        } else {
            opts.window()
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
        all_slots_back(self.server.stop()?.slots_out)
    }
}

/// Datagrams a GSO flood row keeps in flight at least: 128 trains, no
/// more than 4 MiB of them, half the 8 MiB socket buffers: the kernel
/// gives a UDP socket's buffer back a quarter at a time while its reader
/// is busy, and a train's pages weigh more than its payload, so 6 MiB of
/// 1400 B trains overflowed one now and then (46 or 92 lost in three
/// `bench` runs of four). A closed loop gets window / round trip: with 32
/// trains in flight the client got 0.52-0.57x of what the open-loop C
/// flood got from the same echo at 64 B on a fast hour of this host,
/// with 128 0.95x (PERF.md). 1 without GSO.
fn gso_window(segs: usize, size: usize) -> u64 {
    if segs <= 1 {
        return 1;
    }
    let cap = (4 << 20) / size.max(1);
    (segs * 128).min(cap).max(segs) as u64
}

/// Runs one case: starts the echo server, drives it with the load
/// generator, stops both, checks the server gave every slot back.
pub fn run_case(case: Case, opts: &BenchOpts) -> io::Result<RunResult> {
    use crate::apps::load::{LoadOpts, Mode, run_load};
    let (server, segs) = start_server(case, opts, 32)?;
    let mut o = LoadOpts::new(server.local_addr());
    o.mode = match case.workload {
        Workload::Flood => Mode::Flood,
        Workload::Ping => Mode::Ping,
    };
    o.size = case.size.max(crate::apps::header::HEADER_LEN);
    o.gso = segs;
    o.window = match case.workload {
        Workload::Flood => Some(opts.window().max(gso_window(segs, case.size))),
        Workload::Ping => None,
    };
    o.duration = Some(opts.duration);
    o.warmup = Some(opts.warmup);
    o.drain_arg = Some(Duration::from_millis(200));
    o.backend = opts.client_backend;
    let r = run_load(&o, &std::sync::atomic::AtomicBool::new(false), |_| {});
    let slots_out = server.stop()?.slots_out;
    let r = r?;
    all_slots_back(slots_out)?;
    Ok(RunResult {
        client: "udpring",
        workload: case.workload,
        backend: case.backend,
        size: case.size,
        gso_segments: segs,
        sent: r.counts.sent,
        received: r.counts.received,
        pps_received: r.pps_received,
        gbps_received: r.gbps_received,
        lost: r.lost,
        truncated: r.counts.truncated,
        duration_s: r.duration_s,
        rtt_us: r.rtt_us,
    })
}

/// The `C limit` rows for `cases`: one per flood workload (size, GSO or
/// not), against the echo of its best backend there (uring when listed,
/// else the last listed).
pub fn c_limit_cases(cases: &[Case]) -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    for c in cases.iter().filter(|c| c.workload == Workload::Flood) {
        // The backends come in the order simple, mmsg, uring: the last
        // listed is the best.
        match v.iter_mut().find(|x| x.size == c.size && x.gso == c.gso) {
            Some(x) if x.backend != Backend::Uring => *x = *c,
            Some(_) => {}
            None => v.push(*c),
        }
    }
    v
}

/// Runs `case`'s echo driven by the C flood (open loop, `send` or
/// `sendmsg` + `UDP_SEGMENT`, echoes read with `recvmmsg` + GRO, on the
/// client's CPU): the row that says what this echo gives a C program.
pub fn run_c_limit(case: Case, opts: &BenchOpts) -> io::Result<RunResult> {
    let (server, segs) = start_server(case, opts, 32)?;
    let cpus = udpring::os::allowed_cpus().len();
    let f = crate::apps::reference::flood_echo(
        server.local_addr(),
        case.size.max(crate::apps::header::HEADER_LEN),
        segs,
        opts.warmup + opts.duration,
        Some(cpus.saturating_sub(1)),
    );
    let slots_out = server.stop()?.slots_out;
    let f = f?;
    all_slots_back(slots_out)?;
    Ok(RunResult {
        client: "C limit",
        workload: case.workload,
        backend: case.backend,
        size: case.size,
        gso_segments: segs,
        sent: f.sent,
        received: f.echoed,
        pps_received: f.pps_echoed,
        gbps_received: f.pps_echoed * case.size as f64 * 8.0 / 1e9,
        lost: f.sent.saturating_sub(f.echoed),
        truncated: 0,
        duration_s: f.duration_s,
        rtt_us: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn gso_rows_keep_128_trains_in_flight_within_4_mib() {
        assert_eq!(super::gso_window(64, 64), 8192, "128 trains of 64");
        let w = super::gso_window(46, 1400);
        assert!(w * 1400 <= 4 << 20 && w > 46 * 64, "{w}: bounded by bytes");
        assert_eq!(super::gso_window(64, 1 << 20), 64, "at least one train");
        assert_eq!(super::gso_window(1, 64), 1, "no GSO: the row's own window");
    }
}
