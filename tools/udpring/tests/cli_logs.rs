//! HdrHistogram interval logs written as a run
//! goes, read back exactly (by the hdrhistogram crate and by the
//! `hdrhistogram` PyPI package's reader), `schema` in every document, and
//! CSV for the per-interval lines and the bench table. Loopback only.

mod util;

use util::udpring;

use std::process::Command;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use util::{have, vocab};

/// Every interval histogram of a log, decoded.
fn intervals(log: &[u8]) -> Vec<(f64, Histogram<u64>)> {
    let mut d = Deserializer::new();
    IntervalLogIterator::new(log)
        .filter_map(|e| match e.expect("a well-formed log") {
            LogEntry::Interval(i) => {
                let bytes = base64_decode(i.encoded_histogram());
                let h: Histogram<u64> = d.deserialize(&mut &bytes[..]).expect("a histogram");
                Some((i.start_timestamp().as_secs_f64(), h))
            }
            _ => None,
        })
        .collect()
}

/// Standard base64 (the log's alphabet), without a crate for it.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let b: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    b.chunks(4)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |a, &x| (a << 6) | u32::from(x)) << (6 * (4 - c.len()));
            n.to_be_bytes()[1..c.len()].to_vec()
        })
        .collect()
}

#[test]
fn an_interval_log_holds_every_reply_and_reads_back_exactly() {
    let e = util::Server::echo();
    let dir = std::env::temp_dir().join(format!("udpring-hlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("rtt.hlog");
    let out = udpring()
        .args(util::words(&format!(
            "load {} -t 2.5 --rate 2000 -i 0.5",
            e.addr
        )))
        .args(["--hist-log", log.to_str().unwrap(), "--json", "-q"])
        .output()
        .unwrap();
    let v = util::ok_json(&out);
    vocab::check("load", &v);
    let text = std::fs::read(&log).unwrap();
    let t = String::from_utf8_lossy(&text);
    assert!(
        t.contains("#[StartTime: ") && t.contains("#[BaseTime: "),
        "{t}"
    );
    let iv = intervals(&text);
    assert!(
        iv.len() >= 5,
        "an interval every 0.5 s of 2.5 s, and the tail: {}",
        iv.len()
    );
    // In time order, and together exactly the run's histogram.
    assert!(iv.windows(2).all(|w| w[0].0 <= w[1].0));
    let mut union = udpring_cli::apps::load::new_histogram();
    for (_, h) in &iv {
        union.add(h).unwrap();
    }
    let whole = udpring_cli::apps::load::HistogramData::from_histogram(&union);
    assert_eq!(serde_json::to_value(&whole).unwrap(), v["histogram"]);
    assert_eq!(union.len(), v["received"].as_u64().unwrap());
    // HdrHistogram's Python reader reads the same counts.
    if have("python3")
        && Command::new("python3")
            .args(["-c", "import hdrh"])
            .status()
            .is_ok_and(|s| s.success())
    {
        let py = Command::new("python3")
            .args([
                "-c",
                "import sys\nfrom hdrh.log import HistogramLogReader\n\
                 from hdrh.histogram import HdrHistogram\n\
                 r = HistogramLogReader(sys.argv[1], HdrHistogram(1, 60_000_000_000, 3))\n\
                 n = []\nwhile True:\n    h = r.get_next_interval_histogram()\n    \
                 if h is None: break\n    n.append(h.get_total_count())\nprint(n)",
                log.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let counts: Vec<u64> = iv.iter().map(|(_, h)| h.len()).collect();
        assert_eq!(
            String::from_utf8_lossy(&py.stdout).trim(),
            format!("{counts:?}"),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
    } else if std::env::var("UDPRING_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("python's hdrhistogram package is missing and UDPRING_REQUIRE_PEERS=1");
    }
    // The same log twice is the same run: refused, or with
    // --allow-duplicates merged as asked (every reply twice).
    let l = log.to_str().unwrap();
    let (code, _, err) = util::run(&["report", "--interval-logs", l, l]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("are the same log"), "{err}");
    let both = util::run_json(&[
        "report",
        "--interval-logs",
        l,
        l,
        "--allow-duplicates",
        "--json",
    ]);
    assert_eq!(both["received"].as_u64(), Some(2 * union.len()), "{both}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn csv_for_the_interval_lines_and_the_bench_table() {
    let e = util::Server::echo();
    let out = udpring()
        .args(util::words(&format!(
            "load {} -t 1.2 --rate 1000 -i 0.5 --csv",
            e.addr
        )))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], udpring_cli::apps::load::Progress::CSV_HEADER);
    assert!(rows.len() >= 3, "{text}");
    let header: Vec<&str> = rows[0].split(',').collect();
    let col = |r: &str, name: &str| -> String {
        let i = header.iter().position(|h| *h == name).unwrap();
        r.split(',').nth(i).unwrap().to_string()
    };
    for r in &rows[1..] {
        assert_eq!(r.split(',').count(), header.len(), "{r}");
        let unix: f64 = col(r, "unix_s").parse().unwrap();
        assert!(unix > 1.7e9, "wall clock: {r}");
        // p50 <= p99 <= p999 <= max wherever the interval had replies.
        let q: Vec<f64> = ["p50_us", "p99_us", "p999_us", "max_us"]
            .iter()
            .filter_map(|k| col(r, k).parse().ok())
            .collect();
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{r}");
    }
    // The intervals' sent and received add up to the running totals.
    let last = rows.last().unwrap();
    for (each, total) in [("sent", "sent_total"), ("received", "received_total")] {
        let sum: u64 = rows[1..]
            .iter()
            .map(|r| col(r, each).parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum.to_string(), col(last, total), "{text}");
    }
    // The last row's running total is what the table (on stderr) says.
    let last_sent = col(last, "sent_total");
    let err = String::from_utf8_lossy(&out.stderr);
    let table_sent = err
        .lines()
        .find_map(|l| l.strip_prefix("sent"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(last_sent, table_sent, "{text}\n{err}");
    // Without --expect the last column is empty; with a check no echo
    // carries (udpring's header starts with its magic, not 00), the
    // intervals' unexpected add up to every answer.
    assert!(
        rows[1..].iter().all(|r| col(r, "unexpected").is_empty()),
        "{text}"
    );
    let out = udpring()
        .args(util::words(&format!(
            "load {} -t 1.2 --rate 1000 -i 0.5 --csv --expect 0:00",
            e.addr
        )))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no answer passed");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    let unexpected: u64 = rows[1..]
        .iter()
        .map(|r| col(r, "unexpected").parse::<u64>().unwrap())
        .sum();
    let received = col(rows.last().unwrap(), "received_total");
    assert!(unexpected > 0, "{text}");
    assert_eq!(unexpected.to_string(), received, "{text}");
    let out = udpring()
        .args(util::words(
            "bench --duration 0.1 --warmup 0.05 --backend simple",
        ))
        .args(["--only", "ping", "--csv"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("client,workload,backend,size,"),
        "{text}"
    );
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[1].starts_with("udpring,ping,simple,64,1,"), "{text}");
    let out = udpring()
        .args(["load", "127.0.0.1:9", "--csv", "--json"])
        .output()
        .unwrap();
    let code = out.status.code();
    assert_eq!(code, Some(2));
}

/// Bench says which row and how long is left on a
/// terminal (a pseudo-terminal from util-linux's `script`), and nothing of
/// the kind in a pipe.
#[test]
fn progress_shows_on_a_terminal_and_not_in_a_pipe() {
    let bench = format!(
        "{} bench --duration 0.1 --warmup 0.05 --backend simple --only ping",
        env!("CARGO_BIN_EXE_udpring")
    );
    let piped = Command::new("sh").args(["-c", &bench]).output().unwrap();
    assert!(piped.status.success());
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("[1/1]"));
    if !have("script") {
        return;
    }
    let tty = Command::new("script")
        .args(["-qec", &bench, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("[1/1] ping simple 64 B (about"), "{text}");
}

/// Counts, in an SVG parsed as XML by Python's standard library, the data
/// curves (polylines 2 px wide) and collects the text.
const SVG_CHECK: &str = r#"
import sys, json, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
curves = [p for p in root.iter(ns + "polyline") if float(p.get("stroke-width", "1")) >= 2]
texts = [t.text or "" for t in root.iter(ns + "text")]
print(json.dumps({"curves": len(curves), "texts": texts}))
"#;

/// --plot draws well-formed SVG: one curve per result,
/// labelled axes; a run also gets its per-interval panels.
#[test]
fn plots_are_svg_with_a_curve_per_result_and_labelled_axes() {
    if !have("python3") {
        return;
    }
    let e = util::Server::echo();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("udpring-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    for (name, rate) in [("before.json", "2000"), ("after.json", "4000")] {
        let out = udpring()
            .args(util::words(&format!(
                "load {} -t 1 -i 0.5 --rate {}",
                e.addr, rate
            )))
            .args(["--json", "-q", "--plot", &p(&format!("{name}.svg"))])
            .output()
            .unwrap();
        util::ok_json(&out);
        std::fs::write(p(name), &out.stdout).unwrap();
    }
    let st = udpring()
        .args([
            "report",
            &p("before.json"),
            &p("after.json"),
            "--plot",
            &p("ab.svg"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let check = |f: &str| -> serde_json::Value {
        let out = Command::new("python3")
            .args(["-c", SVG_CHECK, f])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "not well-formed XML: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ab = check(&p("ab.svg"));
    assert_eq!(ab["curves"], 2, "{ab}");
    let texts = ab["texts"].to_string();
    // Curves named by what each ran; the files under the title.
    for want in [
        "2 results: before.json, after.json",
        "64 B rate 2000/s at ",
        "64 B rate 4000/s at ",
        "round-trip time (µs)",
        "1/(1-q)",
    ] {
        assert!(texts.contains(want), "{want} not in {texts}");
    }
    // One run: its distribution, and sent/received and p50/p99 per interval.
    let one = check(&p("before.json.svg"));
    assert_eq!(one["curves"], 5, "{one}");
    let texts = one["texts"].to_string();
    for want in [
        "datagrams per second",
        "time (s)",
        "p99",
        "received",
        "rate · 2000 /s · 64 B · 1 flow",
        " UTC · udpring ",
    ] {
        assert!(texts.contains(want), "{want} not in {texts}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
