//! One JSON vocabulary. Every subcommand that runs on loopback is
//! run with `--json`; its standard output must be one JSON document that
//! keeps to tools/udpring/json-vocabulary.json (same names, same types, no retired
//! names, the command named). The multicast subcommands are checked the
//! same way in the namespace tests (tests/netns: every document they read
//! goes through the same check).

mod util;

use util::udpring;

use std::net::UdpSocket;
use std::time::Duration;

use util::{Server, vocab};

/// Runs `udpring ARGS`; stdout must be exactly one JSON document.
fn doc(args: &[&str]) -> (i32, serde_json::Value) {
    let out = udpring().args(args).output().expect("run udpring");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON document ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    vocab::check_any(&v);
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn every_subcommand_speaks_one_json_vocabulary() {
    let echo = Server::start(&util::words(
        "echo --bind 127.0.0.1:0 -w 1 -q --duration 6 --json",
    ));
    let target = echo.addr.to_string();
    let dir = std::env::temp_dir().join(format!("udpring-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |n: &str| dir.join(n).display().to_string();

    // load: a flood, a paced run, a ping; each written for report.
    let mut docs = Vec::new();
    for (name, extra) in [
        ("flood.json", &["-t", "0.3"][..]),
        ("rate.json", &["-t", "0.3", "--rate", "2000"][..]),
        ("ping.json", &["--mode", "ping", "-t", "0.3"][..]),
    ] {
        let mut args = vec!["load", target.as_str(), "--json", "--warmup", "0.1"];
        args.extend_from_slice(extra);
        let (code, v) = doc(&args);
        assert_eq!(code, 0, "{args:?}: {v}");
        vocab::check("load", &v);
        std::fs::write(file(name), v.to_string()).unwrap();
        docs.push(v);
    }
    // A flood with no replies: rtt_us is null, and still the vocabulary.
    let closed_addr = util::unused_addr("127.0.0.1").to_string();
    let (code, v) = doc(&["load", &closed_addr, "-t", "0.2", "--warmup", "0", "--json"]);
    assert_eq!(code, 1);
    assert!(v["rtt_us"].is_null(), "{v}");
    vocab::check("load", &v);

    // report: a merge (a second flood, so the two are one experiment) and
    // a diff.
    let (code, v) = doc(&["load", &target, "-t", "0.3", "--warmup", "0.1", "--json"]);
    assert_eq!(code, 0);
    std::fs::write(file("flood2.json"), v.to_string()).unwrap();
    let (code, v) = doc(&[
        "report",
        &file("flood.json"),
        &file("flood2.json"),
        "--json",
    ]);
    assert_eq!(code, 0, "{v}");
    vocab::check("report", &v);
    assert_eq!(v["run_tokens"].as_array().unwrap().len(), 2, "{v}");
    let (code, v) = doc(&[
        "report",
        "--diff",
        &file("flood.json"),
        &file("rate.json"),
        "--json",
    ]);
    assert_eq!(code, 0, "{v}");
    vocab::check("report", &v);

    // ping, pmtu (ICMP on loopback: the MTU of lo).
    let (code, v) = doc(&["ping", &target, "-c", "3", "-i", "0.01", "--json"]);
    assert_eq!(code, 0, "{v}");
    vocab::check("ping", &v);
    assert!(v["rtt_us"]["p50"].as_f64().unwrap() > 0.0, "{v}");
    let (code, v) = doc(&["pmtu", "127.0.0.1", "--method", "icmp", "--json"]);
    assert_eq!(code, 0, "{v}");
    vocab::check("pmtu", &v);
    assert_eq!(v["method"], "icmp");
    // The text spells the method as the flag and the JSON do.
    let out = udpring()
        .args(["pmtu", "127.0.0.1", "--method", "icmp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("method icmp,"), "{text}");

    // fanout to the echo, fed by hand.
    let fan = Server::start(&util::words(&format!(
        "fanout --listen 127.0.0.1:0 --to {} -w 1 -q --duration 1 --json",
        target
    )));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        s.send_to(b"fan me out", fan.addr).unwrap();
    }
    let v = fan.json();
    vocab::check("fanout", &v);
    assert_eq!(v["received"], 5, "{v}");

    // bench, one short row.
    let (code, v) = doc(&[
        "bench",
        "--duration",
        "0.1",
        "--warmup",
        "0.05",
        "--backend",
        "simple",
        "--only",
        "ping",
        "--json",
    ]);
    assert_eq!(code, 0, "{v}");
    vocab::check("bench", &v);

    // The echo server's own totals.
    std::thread::sleep(Duration::from_millis(100));
    let v = echo.json();
    vocab::check("echo", &v);
    assert!(v["received"].as_u64().unwrap() > 0, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checker itself: today's names pass, the names the issue found in
/// use fail (so the test above can fail).
#[test]
fn the_checker_refuses_the_old_names_and_wrong_types() {
    let old = [
        serde_json::json!({"command": "ping", "rtt_ms": {"min": 1.0, "avg": 1.0, "max": 1.0}}),
        serde_json::json!({"command": "bench", "rows": [{"secs": 1.0, "echoed": 3, "gso": true}]}),
        serde_json::json!({"command": "echo", "send_errors": [[11, 3]]}),
        serde_json::json!({"command": "fanout", "send_errors": 3}),
        serde_json::json!({"command": "load", "rtt_us": {"p50": 0.0}}),
        serde_json::json!({"sent": 1}),
        serde_json::json!({"command": "load", "sent": 1.5}),
        // A name nobody listed, at the top and deep down.
        serde_json::json!({"command": "load", "frobs": 1}),
        serde_json::json!({"command": "fanout", "destinations": [{"addr": "h:1", "frobs": 1}]}),
        // Schema 1's second names for one quantity.
        serde_json::json!({"command": "load", "kernel": {"drops": 1}}),
        serde_json::json!({"command": "fanout", "destinations": [{"to": "h:1"}]}),
        serde_json::json!({"command": "ping", "wrong_addr": 1}),
    ];
    for d in old {
        let c = d["command"].as_str().unwrap_or("load").to_string();
        let r = std::panic::catch_unwind(|| vocab::check(&c, &d));
        assert!(r.is_err(), "accepted {d}");
    }
    vocab::check(
        "load",
        &serde_json::json!({"schema": 2, "command": "load", "sent": 3, "rtt_us": null,
            "send_errors": {"ECONNREFUSED": 2, "errno200": 1}}),
    );
}
