//! Outputs a pipeline reads while a run goes on: `--json-stream` (NDJSON,
//! as iperf3's) on `load`, `echo`, `sink`, `fanout` and `mcast`, whose
//! intervals add up to the final document. Loopback only (multicast on
//! `lo`).

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;
use util::{Server, json_lines, run, words};

/// The `interval` events and the one `end` event, which comes last;
/// every line of the stream is one or the other, of `command`.
fn split(lines: Vec<Value>, command: &str) -> (Vec<Value>, Value) {
    let mut lines = lines;
    let end = lines.pop().expect("an end event");
    assert_eq!(end["event"], "end", "{end}");
    for l in &lines {
        assert_eq!(l["event"], "interval", "{l}");
        assert_eq!(l["command"], command, "{l}");
        assert!(l["unix_s"].as_f64().unwrap() > 1.7e9, "{l}");
    }
    (lines, end)
}

fn sum(events: &[Value], k: &str) -> u64 {
    events.iter().map(|e| e[k].as_u64().unwrap()).sum()
}

#[test]
fn a_load_stream_has_intervals_that_add_up_to_its_result() {
    let echo = Server::echo();
    let (code, out, err) = run(&words(&format!(
        "load {} --rate 2000 -t 1.2 -i 0.3 --json-stream -q",
        echo.addr
    )));
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "-q: {err}");
    let (intervals, end) = split(json_lines(&out), "load");
    assert!(intervals.len() >= 4, "{out}");
    assert_eq!(sum(&intervals, "sent"), end["sent"].as_u64().unwrap());
    assert_eq!(
        sum(&intervals, "received"),
        end["received"].as_u64().unwrap()
    );
    let last = intervals.last().unwrap();
    assert_eq!(last["sent_total"], end["sent"]);
    assert_eq!(last["unanswered"], end["lost"]);
    assert_eq!(last["draining"], true, "the last interval is the drain");
    // An interval with replies has their RTTs; the clock only goes on.
    assert!(
        intervals[0]["rtt_us"]["p99"].as_f64().is_some(),
        "{}",
        intervals[0]
    );
    let t: Vec<f64> = intervals
        .iter()
        .map(|e| e["elapsed_s"].as_f64().unwrap())
        .collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    // One run only, and not beside --json.
    for bad in ["--size 64,128", "--json"] {
        let (code, _, err) = run(&words(&format!(
            "load {} -n 10 --json-stream {bad}",
            echo.addr
        )));
        assert_eq!(code, 2, "{bad}: {err}");
    }
}

#[test]
fn servers_stream_intervals_that_add_up_to_their_totals() {
    for command in ["echo", "sink", "fanout"] {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let args = match command {
            "fanout" => format!(
                "fanout --listen 127.0.0.1:0 --to {} -w 1",
                sink.local_addr().unwrap()
            ),
            "echo" => "echo --bind 127.0.0.1:0 -w 1".to_string(),
            c => format!("{c} --bind 127.0.0.1:0"),
        };
        let server = Server::start(&words(&format!(
            "{args} --duration 1.5 -i 0.2 --json-stream -q"
        )));
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..300u32 {
            c.send_to(&i.to_be_bytes(), server.addr).unwrap();
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let (code, out, err) = server.finish();
        assert_eq!(code, 0, "{command}: {err}");
        let (intervals, end) = split(json_lines(&out), command);
        assert!(intervals.len() >= 5, "{command}: {out}");
        assert_eq!(end["received"], 300, "{command}: {end}");
        assert_eq!(sum(&intervals, "received"), 300, "{command}: {out}");
        // The echo answers each, the relay relays each, the sink sends none.
        let sent = if command == "sink" { 0 } else { 300 };
        assert_eq!(sum(&intervals, "sent"), sent, "{command}: {out}");
    }
}

#[test]
fn a_multicast_listener_streams_what_it_hears_and_a_sender_what_it_sent() {
    use std::io::BufRead;
    // A group and port of this process's own, on `lo` only.
    let group = format!(
        "239.255.71.{}:{}",
        std::process::id() % 200 + 1,
        20000 + std::process::id() % 20000
    );
    let mut listen = util::udpring()
        .args(words(&format!(
            "mcast listen {group} --iface lo --verify --duration 2 -i 0.25 --json-stream -q"
        )))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Joined once it names its group on standard error.
    let mut err = std::io::BufReader::new(listen.stderr.take().unwrap());
    let mut banner = String::new();
    err.read_line(&mut banner).unwrap();
    assert!(banner.contains("udpring mcast listen"), "{banner}");
    util::keep_reading(err);
    let (code, out, e) = run(&words(&format!(
        "mcast send {group} --iface lo -c 120 --rate 200 -i 0.2 --json-stream"
    )));
    assert_eq!(code, 0, "{e}");
    // Without -q the live lines go to standard error beside the stream.
    assert!(e.contains("tx "), "{e}");
    let (intervals, end) = split(json_lines(&out), "mcast send");
    assert!(intervals.len() >= 3, "{out}");
    assert_eq!(end["sent"], 120, "{end}");
    assert_eq!(sum(&intervals, "sent"), 120, "{out}");
    assert!(
        intervals.iter().all(|i| i.get("sources_heard").is_none()),
        "{out}"
    );
    let out = listen.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).unwrap();
    let (intervals, end) = split(json_lines(&out), "mcast listen");
    assert!(intervals.len() >= 6, "{out}");
    assert_eq!(end["received"], 120, "{end}");
    assert_eq!(end["sources"][0]["lost"], 0, "{end}");
    assert_eq!(sum(&intervals, "received"), 120, "{out}");
    // The sources heard so far: none before the sender, then the one.
    let heard: Vec<u64> = intervals
        .iter()
        .map(|i| i["sources_heard"].as_u64().unwrap())
        .collect();
    assert_eq!(heard.last(), Some(&1), "{heard:?}");
    assert!(heard.windows(2).all(|w| w[0] <= w[1]), "{heard:?}");
}

#[test]
fn a_one_way_stream_counts_nothing_as_unanswered() {
    // One-way, nothing is expected back: `unanswered` is no count of loss
    // (null, an empty CSV field), or a dashboard would read 100% lost.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap();
    let (code, out, err) = run(&words(&format!(
        "load {to} --match none --rate 1000 -t 0.5 -i 0.2 --json-stream -q"
    )));
    assert_eq!(code, 0, "{err}");
    let (intervals, end) = split(json_lines(&out), "load");
    assert!(intervals.len() >= 2, "{out}");
    assert!(intervals.iter().all(|i| i["unanswered"].is_null()), "{out}");
    assert_eq!(sum(&intervals, "sent"), end["sent"].as_u64().unwrap());
    let (code, out, err) = run(&words(&format!(
        "load {to} --match none --rate 1000 -t 0.5 -i 0.2 --csv -q"
    )));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(rows.len() >= 2, "{out}");
    assert!(rows.iter().all(|r| r.ends_with(',')), "{out}");
}
