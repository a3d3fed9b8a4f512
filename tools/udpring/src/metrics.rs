//! `--metrics ADDR`: the engine's counters for a Prometheus scraper, over
//! HTTP on a plain `std::net::TcpListener`.
//!
//! Why no HTTP crate: one read-only endpoint, `GET /metrics`, answered by
//! a thread of its own, one connection at a time. A scraper needs no more,
//! and every part a stranger can reach is bounded here in a few lines: a
//! request is read for at most 1 s and 8 KiB, then answered and closed;
//! anything but `GET /metrics` gets 404 or 405. A slow or hostile client
//! holds the endpoint for a second at most and the engine not at all (the
//! counters are read from the workers' published snapshots).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use udpring::StopHandle;

use crate::common::{Failure, runtime};

/// Binds `addr` and serves the engine's counters there until the process
/// ends; returns the bound address (port 0 picks one).
pub(crate) fn serve(addr: SocketAddr, engine: StopHandle) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        runtime(std::io::Error::new(
            e.kind(),
            format!("--metrics {addr}: {e}"),
        ))
    })?;
    let bound = listener.local_addr().map_err(runtime)?;
    std::thread::Builder::new()
        .name("udpring-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        let _ = answer(c, &engine);
                    }
                    // Out of descriptors, or an aborted connection: wait a
                    // little rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
        .map_err(runtime)?;
    Ok(bound)
}

fn answer(mut c: TcpStream, engine: &StopHandle) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(1)))?;
    c.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 8192];
    let mut n = 0;
    // Up to the end of the request line and headers, or 8 KiB.
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = buf[..n].split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            udpring::metrics::CONTENT_TYPE,
            udpring::metrics::prometheus(&engine.worker_stats()),
        ),
        (b"GET", _) => ("404 Not Found", "text/plain", "GET /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
    };
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
        let bound = serve(a, engine.stop_handle())?;
        note!("udpring: metrics on http://{bound}/metrics");
    }
    Ok(())
}
