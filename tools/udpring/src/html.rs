//! `--html FILE` (`load`, `report`): one self-contained page per run or
//! per set of results, to share as Gatling's and k6's reports are shared.
//! Nothing is fetched: the CSS is in a `<style>`, the figures are inline
//! SVG (the same as `--plot`'s), and every string from a result (targets,
//! warnings, file names) is escaped.
//!
//! The page: what was run, the summary table (one column per result, side
//! by side), the RTT percentile distribution of every result on one axis,
//! one run's per-interval rates and percentiles, the responders of a
//! multicast target, DNS response codes, and the counters that say where
//! datagrams died (the generator's kernel, the host's UDP counters, send
//! failures and what the network reported back).

use std::fmt::Write;

use crate::apps::load::{LoadReport, ONE_WAY, RttUs};
use crate::common::Failure;
use crate::plot::Point;

/// `s` made safe as HTML text or an attribute value.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;\
margin:24px auto;max-width:1040px;color:#222}h1{font-size:22px;margin:0 0 4px}\
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.sub{color:#666;font-size:13px}table{border-collapse:collapse;font-size:13px}\
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}\
th:first-child,td:first-child{text-align:left}thead th{background:#f4f4f4}\
.bad{color:#b00020;font-weight:600}.warn{background:#fff4d6;padding:6px 10px;\
margin:4px 0;font-size:13px}figure{margin:8px 0}svg{max-width:100%;height:auto}";

/// One row of a table: its name, then a cell per result.
fn row(out: &mut String, name: &str, cells: impl IntoIterator<Item = String>) {
    let _ = write!(out, "<tr><th>{}</th>", esc(name));
    for c in cells {
        let _ = write!(out, "<td>{c}</td>");
    }
    out.push_str("</tr>\n");
}

/// A table row's name and how to read its figure from a result.
type Field<T> = (&'static str, fn(&LoadReport) -> T);
/// A row's name and how to read it from RTT percentiles.
type RttField = (&'static str, fn(&RttUs) -> f64);

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn rtt(r: &Option<RttUs>, f: fn(&RttUs) -> f64) -> String {
    r.as_ref().map_or("-".into(), |x| num(f(x)))
}

/// The page for `results` (a name each: a file, or the run's target) and,
/// for one run, its per-interval `series`.
pub(crate) fn page(
    title: &str,
    results: &[(String, &LoadReport)],
    series: Option<&[Point]>,
) -> Result<String, String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    for (_, r) in results {
        let _ = writeln!(
            o,
            "<div class=\"sub\">{}</div>",
            esc(&crate::plot::about(r))
        );
    }
    for (name, r) in results {
        if !r.valid {
            let why = r.invalid_because.as_deref().unwrap_or("not valid");
            let _ = writeln!(
                o,
                "<div class=\"warn bad\">{}: NOT VALID: {}</div>",
                esc(name),
                esc(why)
            );
        }
        for w in &r.warnings {
            let _ = writeln!(o, "<div class=\"warn\">{}: {}</div>", esc(name), esc(w));
        }
        if r.one_way {
            let _ = writeln!(o, "<div class=\"sub\">{}: {ONE_WAY}</div>", esc(name));
        }
    }
    let cols = |f: &dyn Fn(&LoadReport) -> String| -> Vec<String> {
        results.iter().map(|(_, r)| f(r)).collect()
    };

    let head = |o: &mut String| {
        o.push_str("<table><thead><tr><th></th>");
        for (name, _) in results {
            let _ = write!(o, "<th>{}</th>", esc(name));
        }
        o.push_str("</tr></thead><tbody>\n");
    };
    o.push_str("<h2>Summary</h2>\n");
    head(&mut o);
    let text_rows: [Field<String>; 10] = [
        ("target", |r| esc(&r.target)),
        ("mode", |r| esc(&r.mode)),
        ("match", |r| esc(&r.matching)),
        ("answers checked for", |r| match r.expect.is_empty() {
            true => "-".into(),
            false => esc(&r.checks()),
        }),
        ("rate asked, /s", |r| r.rate.map_or("-".into(), num)),
        ("arrivals", |r| esc(r.arrivals.as_deref().unwrap_or("-"))),
        ("size, bytes", |r| count(r.size as u64)),
        ("flows · workers", |r| {
            format!("{} · {}", r.flows, r.workers)
        }),
        ("backend", |r| esc(&r.backend)),
        ("seconds measured", |r| format!("{:.2}", r.duration_s)),
    ];
    for (name, f) in text_rows {
        row(&mut o, name, cols(&f));
    }
    let sent: [Field<u64>; 2] = [
        ("sent", |r| r.counts.sent),
        ("received", |r| r.counts.received),
    ];
    for (name, f) in sent {
        row(&mut o, name, cols(&|r| count(f(r))));
    }
    // One-way, nothing was expected back: the generator cannot count loss.
    row(
        &mut o,
        "lost",
        cols(&|r| {
            if r.one_way {
                "- (one-way)".into()
            } else {
                count(r.lost)
            }
        }),
    );
    let counts: [Field<u64>; 8] = [
        ("unexpected (--expect)", |r| r.counts.unexpected),
        ("reordered", |r| r.counts.reordered),
        ("duplicated", |r| r.counts.duplicated),
        ("invalid", |r| r.counts.invalid),
        ("foreign", |r| r.counts.foreign),
        ("unmatched", |r| r.counts.unmatched),
        ("timeouts", |r| r.counts.timeouts),
        ("truncated", |r| r.counts.truncated),
    ];
    for (name, f) in counts {
        row(&mut o, name, cols(&|r| count(f(r))));
    }
    row(
        &mut o,
        "loss",
        cols(&|r| match r.counts.sent {
            _ if r.one_way => "- (one-way)".into(),
            0 => "-".into(),
            s => {
                let pct = r.lost as f64 * 100.0 / s as f64;
                let cell = format!("{pct:.3}%");
                if r.lost > 0 {
                    format!("<span class=\"bad\">{cell}</span>")
                } else {
                    cell
                }
            }
        }),
    );
    row(&mut o, "sent /s", cols(&|r| num(r.pps_sent)));
    row(&mut o, "received /s", cols(&|r| num(r.pps_received)));
    let rtts: [RttField; 8] = [
        ("RTT min, µs", |x| x.min),
        ("RTT p50, µs", |x| x.p50),
        ("RTT p90, µs", |x| x.p90),
        ("RTT p99, µs", |x| x.p99),
        ("RTT p99.9, µs", |x| x.p999),
        ("RTT p99.99, µs", |x| x.p9999),
        ("RTT max, µs", |x| x.max),
        ("RTT mean, µs", |x| x.mean),
    ];
    for (name, f) in rtts {
        row(&mut o, name, cols(&|r| rtt(&r.rtt_us, f)));
    }
    o.push_str("</tbody></table>\n");

    let hists = results
        .iter()
        .map(|(_, r)| r.histogram.to_histogram())
        .collect::<Result<Vec<_>, _>>()?;
    let named: Vec<(String, &LoadReport)> = results.iter().map(|(n, r)| (n.clone(), *r)).collect();
    let curves: Vec<(String, &hdrhistogram::Histogram<u64>)> = crate::plot::labels(&named)
        .into_iter()
        .zip(&hists)
        .collect();
    o.push_str("<h2>Round-trip time</h2>\n");
    match crate::plot::svg("Round-trip time by percentile", "", &curves, series) {
        Ok(svg) => {
            let _ = writeln!(o, "<figure>{}</figure>", strip_xml_header(&svg));
        }
        Err(e) => {
            let _ = writeln!(o, "<p>{}</p>", esc(&e));
        }
    }

    if results.iter().any(|(_, r)| !r.responders.is_empty()) {
        o.push_str("<h2>Responders</h2>\n");
        for (name, r) in results.iter().filter(|(_, r)| !r.responders.is_empty()) {
            let _ = writeln!(
                o,
                "<p>{}</p><table><thead><tr><th>responder</th><th>received</th><th>lost</th>\
                 <th>duplicated</th><th>reordered</th><th>p50, µs</th><th>p99, µs</th></tr>\
                 </thead><tbody>",
                esc(name)
            );
            for x in &r.responders {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td></tr>",
                    esc(&x.addr),
                    count(x.received),
                    count(x.lost),
                    count(x.duplicated),
                    count(x.reordered),
                    rtt(&x.rtt_us, |v| v.p50),
                    rtt(&x.rtt_us, |v| v.p99)
                );
            }
            o.push_str("</tbody></table>\n");
        }
    }

    let codes: std::collections::BTreeSet<&String> = results
        .iter()
        .flat_map(|(_, r)| r.counts.dns_rcodes.keys())
        .collect();
    if !codes.is_empty() {
        o.push_str("<h2>DNS answers</h2>\n");
        head(&mut o);
        for c in codes {
            row(
                &mut o,
                c,
                cols(&|r| count(r.counts.dns_rcodes.get(c).copied().unwrap_or(0))),
            );
        }
        row(
            &mut o,
            "truncated (TC)",
            cols(&|r| count(r.counts.dns_truncated)),
        );
        row(
            &mut o,
            "not a response",
            cols(&|r| count(r.counts.dns_not_response)),
        );
        o.push_str("</tbody></table>\n");
    }

    o.push_str(
        "<h2>Where datagrams died</h2>\n<p class=\"sub\">What can account for a loss: \
         the generator's own sockets (in the kernel's units: a GRO train counts once), \
         sends that failed, what the network reported back (ICMP, by errno), and the \
         host's UDP counters (every process's, over the run).</p>\n",
    );
    head(&mut o);
    let errs = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{} {}", esc(k), count(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let died: [Field<u64>; 8] = [
        ("generator's kernel drops", |r| r.kernel.drops),
        ("sends refused (no free slot)", |r| r.counts.send_exhausted),
        ("sends given up (buffer full)", |r| r.counts.send_blocked),
        ("host UDP InErrors", |r| r.host_udp.in_errors),
        ("host UDP RcvbufErrors", |r| r.host_udp.rcvbuf_errors),
        ("host UDP SndbufErrors", |r| r.host_udp.sndbuf_errors),
        ("buffers received (kernel)", |r| r.kernel.received_bufs),
        ("sends taken (kernel)", |r| r.kernel.sent_bufs),
    ];
    for (name, f) in died {
        row(&mut o, name, cols(&|r| count(f(r))));
    }
    row(&mut o, "send errors", cols(&|r| errs(&r.send_errors)));
    row(
        &mut o,
        "reported by the network",
        cols(&|r| errs(&r.counts.errors)),
    );
    o.push_str("</tbody></table>\n");
    let _ = writeln!(
        o,
        "<p class=\"sub\">Made by udpring {} from {} result{}.</p></body></html>",
        env!("CARGO_PKG_VERSION"),
        results.len(),
        if results.len() == 1 { "" } else { "s" }
    );
    Ok(o)
}

/// An SVG document as an element of a page: without an XML declaration.
fn strip_xml_header(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// Writes [`page`] to `path`.
pub(crate) fn write(
    path: &std::path::Path,
    title: &str,
    results: &[(String, &LoadReport)],
    series: Option<&[Point]>,
) -> Result<(), Failure> {
    let fail = |e: String| Failure {
        code: 1,
        msg: format!("{}: {e}", path.display()),
    };
    let text = page(title, results, series).map_err(fail)?;
    std::fs::write(path, text).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_from_a_result_are_escaped_and_nothing_is_fetched() {
        let mut r = LoadReport {
            target: "<script>alert(1)</script>".into(),
            warnings: vec!["a \"quoted\" & <b>bold</b> warning".into()],
            ..LoadReport::default()
        };
        r.histogram.unit = "ns".into();
        r.histogram.sigfig = 3;
        let p = page("t", &[("x<y>.json".into(), &r)], None).unwrap();
        assert!(!p.contains("<script>"), "{p}");
        assert!(!p.contains("<b>bold"), "{p}");
        assert!(p.contains("&lt;script&gt;"));
        assert!(p.contains("x&lt;y&gt;.json"));
        for fetch in ["src=", "href=", "@import", "url("] {
            assert!(!p.contains(fetch), "{fetch} in the page");
        }
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
