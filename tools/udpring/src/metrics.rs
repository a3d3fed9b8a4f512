//! `--metrics ADDR`: the engine's counters for a Prometheus scraper, over
//! HTTP on a plain `std::net::TcpListener`.
//!
//! Why no HTTP crate: one read-only endpoint, `GET /metrics` (a query
//! string is accepted and ignored), answered and closed. A scraper needs
//! no more, and every part a stranger can reach is bounded here in a few
//! lines: at most [`MAX_CONNECTIONS`] connections are served at once, each
//! on a thread of its own and each within [`DEADLINE`] of its accept
//! (reading at most 8 KiB of request, and writing the answer); one more is
//! closed at once. Anything but `GET /metrics` gets 404 or 405. A slow or
//! hostile client (a byte a second, for hours) holds one of those
//! connections for a second at most, the others serve scrapes meanwhile,
//! and the engine is held not at all (the counters are read from the
//! workers' published snapshots).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a connection may take from its accept to the end of the
/// answer, whatever it sends and however slowly.
pub(crate) const DEADLINE: Duration = Duration::from_secs(1);
/// Connections served at once; more are closed at their accept.
pub(crate) const MAX_CONNECTIONS: usize = 4;

use crate::common::{Failure, runtime};

/// What a scrape answers: the exposition text, made at the scrape.
pub(crate) type Body = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` and serves `body` there until the process ends; returns
/// the bound address (port 0 picks one).
pub(crate) fn serve(addr: SocketAddr, body: Body) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        runtime(std::io::Error::new(
            e.kind(),
            format!("--metrics {addr}: {e}"),
        ))
    })?;
    let bound = listener.local_addr().map_err(runtime)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("udpring-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let c = match conn {
                    Ok(c) => c,
                    // Out of descriptors, or an aborted connection: wait a
                    // little rather than spin.
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let deadline = Instant::now() + DEADLINE;
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    // Full: closed at once (dropped here).
                    active.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let (body, mine) = (body.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("udpring-metrics-conn".into())
                    .spawn(move || {
                        let _ = answer(c, &body, deadline);
                        mine.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })
        .map_err(runtime)?;
    Ok(bound)
}

/// The time left until `deadline`, or `TimedOut`.
fn left(deadline: Instant) -> std::io::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(std::io::ErrorKind::TimedOut.into())
    } else {
        Ok(d)
    }
}

fn answer(mut c: TcpStream, body: &Body, deadline: Instant) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut n = 0;
    // Up to the end of the request line and headers, or 8 KiB, within the
    // deadline: each read waits only for what is left of it.
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        c.set_read_timeout(Some(left(deadline)?))?;
        match c.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = buf[..n].split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or(&[]);
    // The path without its query string (`/metrics?name[]=...`).
    let target = parts.next().unwrap_or(&[]);
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", udpring::metrics::CONTENT_TYPE, body()),
        (b"GET", _) => ("404 Not Found", "text/plain", "GET /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
    };
    c.set_write_timeout(Some(left(deadline)?))?;
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    c.flush()
}

/// Starts `--metrics` for `engine` if asked, saying where on stderr.
pub(crate) fn start_metrics(
    addr: Option<SocketAddr>,
    engine: &udpring::Engine,
) -> Result<(), Failure> {
    if let Some(a) = addr {
        let engine = engine.stop_handle();
        let body: Body = Arc::new(move || udpring::metrics::prometheus(&engine.worker_stats()));
        let bound = serve(a, body)?;
        note!("udpring: metrics on http://{bound}/metrics");
    }
    Ok(())
}

/// What `load --metrics` serves: the run so far, as of its last interval.
#[derive(Default)]
pub(crate) struct LoadSnapshot {
    sent: u64,
    received: u64,
    unanswered: Option<u64>,
    rtt: Option<hdrhistogram::Histogram<u64>>,
}

impl LoadSnapshot {
    /// Takes in one interval's progress.
    pub(crate) fn update(&mut self, p: &crate::apps::load::Progress) {
        self.sent = p.sent;
        self.received = p.received;
        self.unanswered = p.unanswered;
        match &mut self.rtt {
            Some(h) => {
                let _ = crate::apps::load::add_checked(h, &p.histogram);
            }
            None => self.rtt = Some(p.histogram.clone()),
        }
    }

    /// In Prometheus' text format: counters of datagrams, a gauge of those
    /// not answered, the RTT as a summary (seconds), labelled by target.
    pub(crate) fn prometheus(&self, target: &str) -> String {
        use std::fmt::Write;
        let t: String = target
            .chars()
            .flat_map(|c| match c {
                '\\' | '"' => vec!['\\', c],
                '\n' => vec!['\\', 'n'],
                c => vec![c],
            })
            .collect();
        let mut s = String::new();
        // One-way runs have no unanswered gauge: nothing is expected back.
        for (name, kind, help, v) in [
            (
                "udpring_load_sent_total",
                "counter",
                "Datagrams sent since measuring began.",
                Some(self.sent),
            ),
            (
                "udpring_load_received_total",
                "counter",
                "Distinct replies since measuring began.",
                Some(self.received),
            ),
            (
                "udpring_load_unanswered",
                "gauge",
                "Sent and not answered yet: in flight or lost (after the drain, the run's lost).",
                self.unanswered,
            ),
        ]
        .into_iter()
        .filter_map(|(n, k, h, v)| Some((n, k, h, v?)))
        {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{target=\"{t}\"}} {v}"
            );
        }
        let name = "udpring_load_rtt_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Round-trip time of the replies since measuring began.\n# TYPE {name} summary"
        );
        if let Some(h) = self.rtt.as_ref().filter(|h| !h.is_empty()) {
            for q in [0.5, 0.9, 0.99, 0.999] {
                let v = h.value_at_quantile(q) as f64 / 1e9;
                let _ = writeln!(s, "{name}{{target=\"{t}\",quantile=\"{q}\"}} {v}");
            }
            let _ = writeln!(
                s,
                "{name}_sum{{target=\"{t}\"}} {}",
                h.mean() * h.len() as f64 / 1e9
            );
            let _ = writeln!(s, "{name}_count{{target=\"{t}\"}} {}", h.len());
        } else {
            let _ = writeln!(
                s,
                "{name}_sum{{target=\"{t}\"}} 0\n{name}_count{{target=\"{t}\"}} 0"
            );
        }
        s
    }
}
