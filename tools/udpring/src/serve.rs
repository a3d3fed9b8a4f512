//! Serving: how long a server runs and what it prints while it does (live
//! lines, `--json-stream` intervals, the totals), and its orderly stop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use udpring::Stats;

use crate::common::{Failure, parse_addr, parse_secs, say_json, wait_until};

/// What a run prints as it goes and at its end (the servers, `mcast`).
#[derive(Args, Clone)]
pub(crate) struct OutputArgs {
    /// No per-interval counter lines.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Newline-delimited JSON on standard output, as iperf3's
    /// --json-stream: one object per interval (`"event": "interval"`: the
    /// engine's counters over the interval, and rates; where the command
    /// tracks peers, how many it has heard), then the result with
    /// `"event": "end"`. Every line has `schema` and `command`.
    #[arg(long, conflicts_with = "json")]
    pub(crate) json_stream: bool,
    /// Seconds per live line and per --json-stream interval.
    #[arg(long, short = 'i', default_value = "1", value_parser = parse_secs)]
    pub(crate) interval: Duration,
}

/// How long a server runs and what it prints (echo, sink, fanout).
#[derive(Args, Clone)]
pub(crate) struct ServeArgs {
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM/SIGHUP).
    #[arg(long, value_parser = parse_secs, allow_negative_numbers = true)]
    pub(crate) duration: Option<Duration>,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
    /// Serve the engine's counters at http://ADDR/metrics in Prometheus'
    /// text format (per worker; e.g. 127.0.0.1:9464, port 0 picks one).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub(crate) metrics: Option<SocketAddr>,
}

/// A server's engine stops, as on SIGINT, when one of its workers fails
/// (an xdp interface gone, a handler's panic): the run is no longer what
/// was asked, and [`stop`] then reports why with exit code 1.
pub(crate) fn stop_on_failure(cfg: &mut udpring::Config) {
    cfg.on_failure = Some(udpring::FailureHook(std::sync::Arc::new(|i, why| {
        note!("udpring: worker {i} failed: {why}; stopping");
        udpring::signals::request();
    })));
}

/// Stops an engine. Its totals come back even when a worker failed; the
/// failure, if any, is returned beside them to be reported after them.
pub(crate) fn stop(engine: udpring::Engine) -> (Stats, Option<Failure>) {
    match engine.stop() {
        Ok(s) => (s, None),
        Err(e) => {
            let msg = e.to_string();
            (
                *e.stats,
                Some(Failure {
                    code: 1,
                    msg: format!("stopped with errors: {msg}"),
                }),
            )
        }
    }
}

/// Counters that are only worth a look when they are not zero.
fn is_trouble(name: &str) -> bool {
    !matches!(
        name,
        "received" | "sent" | "bytes_received" | "bytes_sent" | "recv_arms" | "waits"
    )
}

/// A counter's name as the lines print it: `kernel-drops`.
fn label(name: &str) -> String {
    name.replace('_', "-")
}

/// A per-second line: rates over the last `dt` seconds, then the running
/// totals of whatever went wrong so far.
pub(crate) fn rate_line(t: f64, now: &Stats, prev: &Stats, dt: f64) -> String {
    let mut s = format!(
        "t={t:>6.1}s rx {:>10.0}/s tx {:>10.0}/s  rx {:>8.3} Gbit/s",
        now.received.saturating_sub(prev.received) as f64 / dt,
        now.sent.saturating_sub(prev.sent) as f64 / dt,
        now.bytes_received.saturating_sub(prev.bytes_received) as f64 * 8.0 / dt / 1e9,
    );
    let trouble: Vec<String> = now
        .counters()
        .filter(|&(n, v)| v > 0 && is_trouble(n))
        .map(|(n, v)| format!("{}={v}", label(n)))
        .chain(
            (now.send_errors_total() > 0)
                .then(|| format!("send-errors=[{}]", now.send_errors_text())),
        )
        .collect();
    if !trouble.is_empty() {
        s += "  so far: ";
        s += &trouble.join(" ");
    }
    s
}

/// The final line: every counter, failed sends by errno, the slots. With
/// `gro`, kernel drops are GRO trains (the kernel drops a train at once),
/// and the line says so.
pub(crate) fn totals(s: &Stats, gro: bool) -> String {
    let mut out = String::from("totals:");
    for (n, v) in s.counters() {
        out += &format!(" {} {v}", label(n));
        if gro && n == "kernel_drops" {
            out += " (GRO trains)";
        }
    }
    out += &format!(
        " send-errors {} slots-out {}/{}",
        s.send_errors_text(),
        s.slots_out,
        s.slots_total
    );
    if s.gso_disabled {
        out += " (GSO turned off by the kernel)";
    }
    out
}

/// Waits until SIGINT/SIGTERM or `end` (from now); unless `quiet`, calls
/// `tick(seconds since start, seconds since the last tick)` about once a
/// second for a progress line.
/// Returns the seconds it ran.
pub(crate) fn run_until(
    end: Option<Duration>,
    every: Option<Duration>,
    mut tick: impl FnMut(f64, f64),
) -> f64 {
    let start = Instant::now();
    let mut last = start;
    loop {
        // Asleep until the next line is due, the end, or a stop.
        let wake = [end.map(|d| start + d), every.map(|e| last + e)]
            .into_iter()
            .flatten()
            .min();
        if wait_until(wake) || end.is_some_and(|d| start.elapsed() >= d) {
            return start.elapsed().as_secs_f64();
        }
        if every.is_some_and(|e| last.elapsed() >= e) {
            let now = Instant::now();
            tick(
                now.duration_since(start).as_secs_f64(),
                now.duration_since(last).as_secs_f64(),
            );
            last = now;
        }
    }
}

impl OutputArgs {
    /// How often the run loop ticks: every --interval for live lines or
    /// --json-stream, never when -q leaves nothing to print.
    pub(crate) fn every(&self) -> Option<Duration> {
        (!self.quiet || self.json_stream).then_some(self.interval)
    }

    /// Standard output holds JSON (--json or --json-stream): banners and
    /// live lines go to standard error.
    pub(crate) fn json_out(&self) -> bool {
        self.json || self.json_stream
    }

    /// Prints the final document: with --json-stream, as its `end` event.
    pub(crate) fn say_end(&self, command: &str, secs: f64, body: impl serde::Serialize) {
        let mut v = serde_json::to_value(body).unwrap_or_default();
        if self.json_stream {
            v["event"] = "end".into();
        }
        say_json(command, Some(secs), v);
    }

    /// With --json-stream, prints an `interval` event: the engine's
    /// counters over the interval (`t` seconds since the start, `dt` long)
    /// and the rates.
    pub(crate) fn say_interval(&self, command: &str, t: f64, dt: f64, now: &Stats, prev: &Stats) {
        if self.json_stream {
            say_json(command, None, interval_event(t, dt, now, prev));
        }
    }
}

/// A `--json-stream` `interval` event: the engine's counters over the
/// interval (`t` seconds since the start, `dt` long) and the rates.
pub(crate) fn interval_event(t: f64, dt: f64, now: &Stats, prev: &Stats) -> serde_json::Value {
    // The tail after the last tick can be as short as the stop: its
    // counts are exact, its rates over at least a millisecond.
    let dt = dt.max(1e-3);
    let mut v = serde_json::json!({
        "event": "interval",
        "unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        "elapsed_s": t,
        "interval_s": dt,
        "pps_received": now.received.saturating_sub(prev.received) as f64 / dt,
        "pps_sent": now.sent.saturating_sub(prev.sent) as f64 / dt,
    });
    let before: std::collections::HashMap<_, _> = prev.counters().collect();
    for (n, x) in now.counters() {
        v[n] = x.saturating_sub(before.get(n).copied().unwrap_or(0)).into();
    }
    v
}
