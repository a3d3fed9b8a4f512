//! What `udpring bench`'s rows say: each row's ratio to the `simple`
//! backend, the table a reader sees (with what the C-limit rows' loss and
//! ratio mean) and the CSV.

use udpring::Backend;

use super::{RunResult, Workload};

/// `r` against the `simple` row of the same workload and size: echoed
/// rate over simple's for floods, simple's median RTT over this one's for
/// ping (above 1 is better either way).
pub fn ratio_to_simple(r: &RunResult, all: &[RunResult]) -> Option<f64> {
    if r.client != "udpring" {
        return None;
    }
    let base = all.iter().find(|b| {
        b.client == "udpring"
            && b.backend == Backend::Simple
            && b.gso_segments == 1
            && b.size == r.size
            && b.workload == r.workload
    })?;
    match r.workload {
        Workload::Flood if base.pps_received > 0.0 => Some(r.pps_received / base.pps_received),
        Workload::Ping => match (&base.rtt_us, &r.rtt_us) {
            (Some(b), Some(x)) if x.p50 > 0.0 => Some(b.p50 / x.p50),
            _ => None,
        },
        _ => None,
    }
}

/// The table as CSV: a header row, then one row per result (empty fields
/// where there is no figure).
pub fn csv(results: &[RunResult]) -> String {
    let mut s = String::from(
        "client,workload,backend,size,gso_segments,pps_received,gbps_received,p50_us,p99_us,vs_simple,lost\n",
    );
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for r in results {
        s.push_str(&format!(
            "{},{},{},{},{},{:.1},{:.6},{},{},{},{}\n",
            r.client,
            r.workload.name(),
            r.backend.name(),
            r.size,
            r.gso_segments,
            r.pps_received,
            r.gbps_received,
            o(r.rtt_us.as_ref().map(|x| x.p50)),
            o(r.rtt_us.as_ref().map(|x| x.p99)),
            o(ratio_to_simple(r, results)),
            r.lost
        ));
    }
    s
}

/// Formats results as the table `udpring bench` prints.
pub fn table(results: &[RunResult]) -> String {
    let mut s = format!(
        "{:<8} {:<8} {:<8} {:>6} {:>8} {:>13} {:>9} {:>9} {:>9} {:>10} {:>8}\n",
        "client",
        "workload",
        "backend",
        "size",
        "gso/gro",
        "echoed/s",
        "Gbit/s",
        "p50 us",
        "p99 us",
        "vs simple",
        "lost"
    );
    let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in results {
        let ratio = ratio_to_simple(r, results).map_or("-".to_string(), |x| format!("{x:.2}x"));
        s.push_str(&format!(
            "{:<8} {:<8} {:<8} {:>6} {:>8} {:>13.0} {:>9.3} {:>9} {:>9} {:>10} {:>8}\n",
            r.client,
            r.workload.name(),
            r.backend.name(),
            r.size,
            if r.gso_segments > 1 { "on" } else { "off" },
            r.pps_received,
            r.gbps_received,
            us(r.rtt_us.as_ref().map(|x| x.p50)),
            us(r.rtt_us.as_ref().map(|x| x.p99)),
            ratio,
            r.lost
        ));
    }
    let mut compared = false;
    for c in results.iter().filter(|r| r.client == "C limit") {
        let ours = results.iter().find(|r| {
            r.client == "udpring"
                && r.workload == c.workload
                && r.backend == c.backend
                && r.size == c.size
                && r.gso_segments == c.gso_segments
        });
        if let Some(o) = ours.filter(|_| c.pps_received > 0.0) {
            compared = true;
            s.push_str(&format!(
                "{} B{} on the {} echo: {:.0}/s echoed to udpring's client, {:.0}/s to the C \
                 flood ({} of its datagrams overflowed the echo): {:.2}x\n",
                c.size,
                if c.gso_segments > 1 { " GSO/GRO" } else { "" },
                c.backend.name(),
                o.pps_received,
                c.pps_received,
                c.lost,
                o.pps_received / c.pps_received
            ));
        }
    }
    if compared {
        let ours_lost: u64 = results
            .iter()
            .filter(|r| r.client == "udpring" && r.workload == Workload::Flood)
            .map(|r| r.lost)
            .sum();
        let window = if ours_lost == 0 {
            "keeps a window in flight and lost nothing".to_string()
        } else {
            format!("keeps a window in flight (and lost {ours_lost})")
        };
        s.push_str(&format!(
            "C limit: the same echo under the loop a C program would run, open loop (send as \
             fast as it can, read echoes with recvmmsg + GRO): its echoed/s is what the echo \
             gives back under overload, its lost what the echo's socket dropped. udpring's \
             client {window}: near 1.00x both measure the echo, not which client is faster.\n"
        ));
    }
    if results.iter().any(|r| r.client == "udpring") {
        s.push_str(
            "Echo and client share this one process (their own threads, one CPU each where \
             there are two); as two processes, `udpring echo` and `udpring load` reach the \
             same rates (PERF.md).\n",
        );
    }
    if results.iter().any(|r| r.gso_segments > 1) {
        s.push_str(
            "echoed/s counts datagrams; with GSO/GRO on loopback a train is never split into \
             packets, so those are segments\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(client: &'static str, pps: f64, lost: u64) -> RunResult {
        RunResult {
            client,
            workload: Workload::Flood,
            backend: Backend::Uring,
            size: 64,
            gso_segments: 1,
            sent: 1000 + lost,
            received: 1000,
            pps_received: pps,
            gbps_received: 0.1,
            lost,
            truncated: 0,
            duration_s: 1.0,
            rtt_us: None,
        }
    }

    /// The C flood's loss is said to be the echo overflowing, the ratio
    /// is put as both clients measuring the echo, never as one winning.
    #[test]
    fn the_c_limit_comparison_says_what_its_loss_and_ratio_mean() {
        let t = table(&[
            row("udpring", 480_000.0, 0),
            row("C limit", 437_000.0, 40_897),
        ]);
        assert!(
            t.contains("480000/s echoed to udpring's client, 437000/s to the C flood"),
            "{t}"
        );
        assert!(
            t.contains("40897 of its datagrams overflowed the echo): 1.10x"),
            "{t}"
        );
        assert!(
            t.contains("lost nothing: near 1.00x both measure the echo"),
            "{t}"
        );
        assert!(!t.contains("gets"), "{t}");
        let t = table(&[row("udpring", 480_000.0, 7), row("C limit", 437_000.0, 0)]);
        assert!(t.contains("(and lost 7)"), "{t}");
    }
}
