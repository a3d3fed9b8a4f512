//! A result for people: the final table, the `.hgrm` percentile text
//! HdrHistogram's plotter reads, and the live line printed once a second.

use hdrhistogram::Histogram;

use super::report::LoadReport;

/// What a one-way result (`--match none`) says instead of a loss: the
/// text table and the HTML page alike.
pub const ONE_WAY: &str = "one-way (--match none): nothing is expected back; what arrived, lost \
                           and jitter are the sink's to report (`udpring sink`)";

impl LoadReport {
    /// The percentile distribution in HdrHistogram's text form (`.hgrm`),
    /// values in microseconds, for plotting.
    pub fn percentile_text(&self) -> Result<String, String> {
        let h = self.histogram.to_histogram()?;
        let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
        // TotalCount is the running total up to this value (what
        // HdrHistogram's outputPercentileDistribution writes and its
        // plotter reads), not the count of this step alone.
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total = total.saturating_add(v.count_since_last_iteration());
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - q))
            } else {
                "inf".into()
            };
            s.push_str(&format!(
                "{:12.3} {:14.12} {:10} {:>14}\n",
                v.value_iterated_to() as f64 / 1000.0,
                q,
                total,
                inv
            ));
        }
        s.push_str(&format!(
            "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {:.3}, Total count = {}]\n",
            h.mean() / 1000.0,
            h.stdev() / 1000.0,
            h.max() as f64 / 1000.0,
            h.len()
        ));
        Ok(s)
    }

    /// The final table.
    pub fn table(&self) -> String {
        let loss = if self.counts.sent > 0 {
            format!("{:.3}%", 100.0 * self.lost as f64 / self.counts.sent as f64)
        } else {
            "-".to_string()
        };
        let mut s = match &self.invalid_because {
            Some(why) if !self.valid => format!("NOT VALID: {why}\n"),
            _ => String::new(),
        };
        s += &format!(
            "target {}  mode {}{}  size {}  flows {}  workers {}  gso {}  backend {}  {:.2} s\n",
            self.target,
            self.mode,
            match (self.rate, self.burst) {
                (Some(r), Some(b)) => format!(
                    " {r:.0}/s in bursts of {} every {} s",
                    b.datagrams, b.interval_s
                ),
                (Some(r), None) if self.arrivals.as_deref() == Some("poisson") => {
                    format!(" {r:.0}/s at Poisson arrivals")
                }
                (Some(r), None) => format!(" {r:.0}/s"),
                _ => String::new(),
            },
            self.size,
            self.flows,
            self.workers,
            self.gso_segments,
            self.backend,
            self.duration_s
        );
        s += &format!(
            "sent {:>12}  {:>12.0}/s  {:.3} Gbit/s\nrecv {:>12}  {:>12.0}/s  {:.3} Gbit/s\n",
            self.counts.sent,
            self.pps_sent,
            self.gbps_sent,
            self.counts.received,
            self.pps_received,
            self.gbps_received
        );
        if self.one_way {
            s += ONE_WAY;
            s += "\n";
        } else {
            s += &format!(
                "lost {} ({loss})  reordered {}  duplicated {}  invalid {}  foreign {}  cut {}  \
                 stale {}\n",
                self.lost,
                self.counts.reordered,
                self.counts.duplicated,
                self.counts.invalid,
                self.counts.foreign,
                self.counts.truncated,
                self.counts.stale
            );
            if self.counts.dns_not_response > 0 {
                s += &format!(
                    "not DNS responses (QR clear, or shorter than a header): {} (among invalid)\n",
                    self.counts.dns_not_response
                );
            }
        }
        if !self.expect.is_empty() {
            s += &format!(
                "expect {}: {} of {} answers carried it, {} did not (unexpected; among recv, \
                 with their RTTs)\n",
                self.checks(),
                self.counts.received.saturating_sub(self.counts.unexpected),
                self.counts.received,
                self.counts.unexpected
            );
        }
        let errs: Vec<String> = self
            .send_errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let evs: Vec<String> = self
            .counts
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // With GSO the replies come back as GRO trains: the kernel drops
        // (and the socket's counter counts) a whole train at once.
        let unit = if self.gso_segments > 1 {
            " (GRO trains)"
        } else {
            ""
        };
        if self.counts.send_blocked > 0 {
            s += &format!(
                "given up unsent: {} (the socket's send buffer stayed full; among the lost)\n",
                self.counts.send_blocked
            );
        }
        s += &format!(
            "send errors {}  kernel drops {}{unit}  host UDP: rcvbuf-errors {} sndbuf-errors {} in-errors {}  icmp/errors {}{}\n",
            if errs.is_empty() {
                "none".into()
            } else {
                errs.join(" ")
            },
            self.kernel.drops,
            self.host_udp.rcvbuf_errors,
            self.host_udp.sndbuf_errors,
            self.host_udp.in_errors,
            if evs.is_empty() {
                "none".into()
            } else {
                evs.join(" ")
            },
            if self.counts.timeouts > 0 {
                format!("  timeouts {}", self.counts.timeouts)
            } else {
                String::new()
            },
        );
        if self.matching != "header" && self.matching != "none" {
            s += &format!(
                "matched by {}: unmatched replies {}\n",
                self.matching, self.counts.unmatched
            );
        }
        if !self.counts.dns_rcodes.is_empty() || self.counts.dns_truncated > 0 {
            let codes: Vec<String> = self
                .counts
                .dns_rcodes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s += &format!(
                "dns answers: {}  truncated (TC) {}\n",
                codes.join("  "),
                self.counts.dns_truncated
            );
        }
        for r in &self.responders {
            let rtt = r.rtt_us.as_ref().map_or("rtt -".to_string(), |x| {
                format!("rtt p50 {:.1} p99 {:.1} us", x.p50, x.p99)
            });
            s += &format!(
                "responder {}  received {}  lost {}  duplicated {}  reordered {}  {rtt}\n",
                r.addr, r.received, r.lost, r.duplicated, r.reordered
            );
        }
        s += &match &self.rtt_us {
            Some(r) => format!(
                "rtt us  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  (min {:.1} mean {:.1})\n",
                r.p50, r.p90, r.p99, r.p999, r.p9999, r.max, r.min, r.mean
            ),
            None => "rtt us  - (no replies)\n".to_string(),
        };
        if let Some(k) = &self.kernel_timestamps {
            s += &k.text();
        }
        s
    }
}

/// The figures of one live line (one interval, by default a second).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Seconds since measuring began (the warm-up is not in the clock,
    /// as it is not in the counts).
    pub elapsed: f64,
    /// Seconds this interval lasted (it ended at `elapsed`).
    pub interval_s: f64,
    /// Sending is over; replies are being waited for.
    pub draining: bool,
    /// Sent per second over the interval.
    pub pps_sent: f64,
    /// Received per second over the interval.
    pub pps_received: f64,
    /// Median RTT over the interval, µs; `None` when no reply came in it.
    pub p50_us: Option<f64>,
    /// p99 RTT over the interval, µs; `None` when no reply came in it.
    pub p99_us: Option<f64>,
    /// The interval's RTTs, ns (for interval logs).
    pub histogram: Histogram<u64>,
    /// Running total: datagrams sent since measuring began.
    pub sent: u64,
    /// Running total: distinct replies since measuring began.
    pub received: u64,
    /// Running total: sent and not (yet) answered (in flight or lost;
    /// after the drain, the run's `lost`); `None` one-way, where nothing
    /// is expected back.
    pub unanswered: Option<u64>,
    /// Datagrams sent in this interval.
    pub interval_sent: u64,
    /// Distinct replies in this interval.
    pub interval_received: u64,
    /// `--expect`: of those, the answers without its bytes (`None`
    /// without `--expect`).
    pub interval_unexpected: Option<u64>,
    /// When the interval ended, Unix seconds.
    pub unix_s: f64,
}

impl Progress {
    /// The header of [`Progress::csv`]'s rows: when the interval ended
    /// (wall clock and since measuring began), its length, whether sending
    /// was over; what was sent and received in it, its rates and RTT
    /// percentiles (µs); then the running totals, `unanswered` being sent
    /// and not (yet) answered (its last value is the run's `lost`); last,
    /// with `--expect`, the interval's answers without its bytes (among
    /// its `received`; empty without `--expect`).
    pub const CSV_HEADER: &'static str = "unix_s,elapsed_s,interval_s,draining,sent,received,\
        pps_sent,pps_received,p50_us,p99_us,p999_us,max_us,sent_total,received_total,unanswered,\
        unexpected";

    /// The interval's RTT at quantile `q`, µs; `None` without replies.
    pub fn rtt_at(&self, q: f64) -> Option<f64> {
        (!self.histogram.is_empty()).then(|| self.histogram.value_at_quantile(q) as f64 / 1000.0)
    }

    /// As a CSV row (empty fields for no data).
    pub fn csv(&self) -> String {
        let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
        format!(
            "{:.3},{:.3},{:.3},{},{},{},{:.0},{:.0},{},{},{},{},{},{},{},{}",
            self.unix_s,
            self.elapsed,
            self.interval_s,
            u8::from(self.draining),
            self.interval_sent,
            self.interval_received,
            self.pps_sent,
            self.pps_received,
            o(self.p50_us),
            o(self.p99_us),
            o(self.rtt_at(0.999)),
            o(self.rtt_at(1.0)),
            self.sent,
            self.received,
            self.unanswered.map_or(String::new(), |u| u.to_string()),
            self.interval_unexpected
                .map_or(String::new(), |u| u.to_string())
        )
    }

    /// As a `--json-stream` interval event (without `schema`, `command`):
    /// the CSV row's figures, the RTTs as `rtt_us` (`null` without replies),
    /// and with `--expect` the interval's `unexpected`.
    pub fn event(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event": "interval",
            "unix_s": self.unix_s,
            "elapsed_s": self.elapsed,
            "interval_s": self.interval_s,
            "draining": self.draining,
            "sent": self.interval_sent,
            "received": self.interval_received,
            "pps_sent": self.pps_sent,
            "pps_received": self.pps_received,
            "rtt_us": super::report::RttUs::from_histogram(&self.histogram),
            "sent_total": self.sent,
            "received_total": self.received,
            "unanswered": self.unanswered,
        });
        if let Some(n) = self.interval_unexpected {
            v["unexpected"] = n.into();
        }
        v
    }

    /// As a line: this interval's rates and p99, then the running totals.
    pub fn line(&self) -> String {
        let when = if self.draining {
            " drain".to_string()
        } else {
            format!("{:>5.1}s", self.elapsed)
        };
        let p99 = self
            .p99_us
            .map_or("        -".to_string(), |v| format!("{v:>9.1}"));
        format!(
            "{when}  sent/s {:>10.0}  recv/s {:>10.0}  p99 {p99} us  | total sent {:>11}  unanswered {:>9}",
            self.pps_sent,
            self.pps_received,
            self.sent,
            self.unanswered.map_or("-".to_string(), |u| u.to_string())
        )
    }
}
