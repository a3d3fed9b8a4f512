//! The engine's counters in Prometheus' text exposition format (version
//! 0.0.4), so a service can serve them on its own endpoint and a
//! Prometheus server can scrape them.
//!
//! Every counter of [`Stats`] becomes a family `udpring_NAME_total` with one
//! sample per worker (`worker="0"`, ...): the engine's total is their sum
//! (`sum without (worker) (...)`), so no total sample is written beside
//! them to be counted twice. Datagrams not sent are `udpring_send_errors_total`
//! with an `errno` label; the pool's state and GSO are gauges.
//!
//! ```
//! let per_worker = vec![udpring::Stats::default(); 2];
//! let text = udpring::metrics::prometheus(&per_worker);
//! assert!(text.contains("udpring_received_total{worker=\"1\"} 0"));
//! ```

use std::fmt::Write;

use crate::stats::{Stats, errno_name};

/// The `Content-Type` of [`prometheus`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    // HELP escapes backslash and newline.
    let text = text.trim().replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders `workers` (one [`Stats`] per worker, as
/// [`Engine::worker_stats`](crate::Engine::worker_stats) gives them).
pub fn prometheus(workers: &[Stats]) -> String {
    let mut out = String::with_capacity(8192);
    for (i, (name, doc)) in Stats::COUNTERS.iter().enumerate() {
        let family = format!("udpring_{name}_total");
        help(&mut out, &family, "counter", doc);
        for (w, s) in workers.iter().enumerate() {
            let v = s.counters().nth(i).map_or(0, |(_, v)| v);
            let _ = writeln!(out, "{family}{{worker=\"{w}\"}} {v}");
        }
    }
    help(
        &mut out,
        "udpring_send_errors_total",
        "counter",
        "Datagrams whose send failed, by errno.",
    );
    for (w, s) in workers.iter().enumerate() {
        for &(e, n) in &s.send_errors {
            let _ = writeln!(
                out,
                "udpring_send_errors_total{{worker=\"{w}\",errno=\"{}\"}} {n}",
                errno_name(e)
            );
        }
    }
    type Gauge = fn(&Stats) -> u64;
    let gauges: [(&str, &str, Gauge); 3] = [
        (
            "udpring_slots",
            "Buffer slots in the worker's pools.",
            |s| s.slots_total,
        ),
        (
            "udpring_slots_out",
            "Slots not home (lent or in flight); 0 when idle.",
            |s| s.slots_out,
        ),
        (
            "udpring_gso_disabled",
            "1 once GSO was turned off after the kernel refused it.",
            |s| u64::from(s.gso_disabled),
        ),
    ];
    for (name, doc, get) in gauges {
        help(&mut out, name, "gauge", doc);
        for (w, s) in workers.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {}", get(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_help_type_and_a_sample_per_worker() {
        let mut a = Stats {
            received: 7,
            ..Stats::default()
        };
        a.send_errors = vec![(libc::ECONNREFUSED, 3)];
        let text = prometheus(&[a, Stats::default()]);
        for (name, _) in Stats::COUNTERS {
            let f = format!("udpring_{name}_total");
            assert!(text.contains(&format!("# TYPE {f} counter\n")), "{f}");
            assert!(text.contains(&format!("{f}{{worker=\"1\"}} 0\n")), "{f}");
        }
        assert!(text.contains("udpring_received_total{worker=\"0\"} 7\n"));
        assert!(
            text.contains("udpring_send_errors_total{worker=\"0\",errno=\"ECONNREFUSED\"} 3\n")
        );
        // No line a parser would trip on: comments, or NAME{...} VALUE.
        for l in text.lines() {
            assert!(l.starts_with("# ") || l.split(' ').count() == 2, "{l}");
        }
    }
}
