//! What the request/answer benches share: the client's ping-pong and
//! windowed flood against one server, and the process's CPU time.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Requests per ping-pong measurement.
pub const PING: usize = 3000;
/// Seconds per flood measurement.
pub const FLOOD_SECS: f64 = 1.5;
/// Requests in flight in a flood.
pub const WINDOW: usize = 32;

/// CPU time this process has used (user + system), µs, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks of 10 ms here,
/// against phases of 1.5 s): every thread, the client's, the servers' and
/// any runtime's, so a difference over a phase is what serving it cost the
/// host, the client's share being the same for every server.
pub fn cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0] + f[1]) * 1e6 / 100.0
}

/// One request in flight, [`PING`] times: the round trip's p50 and p99,
/// µs. `check` sees each answer.
pub fn ping(c: &UdpSocket, to: SocketAddr, req: &[u8], check: impl Fn(&[u8])) -> (f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..PING {
        let t = Instant::now();
        c.send_to(req, to).unwrap();
        let (n, _) = c.recv_from(&mut buf).expect("an answer");
        check(&buf[..n]);
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

/// [`WINDOW`] requests in flight for [`FLOOD_SECS`]: answers per second,
/// and the process's CPU µs per answer.
pub fn flood(c: &UdpSocket, to: SocketAddr, req: &[u8]) -> (f64, f64) {
    let mut buf = [0u8; 256];
    let mut answered = 0u64;
    for _ in 0..WINDOW {
        c.send_to(req, to).unwrap();
    }
    let start = Instant::now();
    let cpu0 = cpu_us();
    while start.elapsed().as_secs_f64() < FLOOD_SECS {
        match c.recv_from(&mut buf) {
            Ok(_) => {
                answered += 1;
                c.send_to(req, to).unwrap();
            }
            // A lost one: put another in flight.
            Err(_) => c.send_to(req, to).map(drop).unwrap(),
        }
    }
    let rate = answered as f64 / start.elapsed().as_secs_f64();
    let cpu = (cpu_us() - cpu0) / answered.max(1) as f64;
    // Drain what is still in flight.
    while c.recv_from(&mut buf).is_ok() {}
    (rate, cpu)
}
