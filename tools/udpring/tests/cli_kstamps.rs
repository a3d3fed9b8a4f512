//! `load --mode ping --kernel-timestamps`
//! splits each round trip into send_path, wire_and_server and
//! receive_queue; `echo --kernel-timestamps` splits its own time into
//! receive_queue and reply_path. The stages of each round trip add up to
//! the round trip the generator measured with its own clock, and every
//! answered request has its stages.

mod util;

use util::{Server, run, vocab};

/// The stages' names, in order.
fn names(k: &serde_json::Value) -> Vec<&str> {
    k["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect()
}

fn stage<'a>(k: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    k["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {k}"))
}

#[test]
fn round_trips_split_at_the_kernels_stamps_both_sides() {
    for (bind, v6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
        let echo = Server::start(&util::words(&format!(
            "echo --bind {} -w 1 -q --duration 3 --kernel-timestamps --json",
            bind
        )));
        let target = echo.addr.to_string();
        let (code, out, err) = run(&util::words(&format!(
            "load {} --mode ping --flows 2 --count 2000 --kernel-timestamps --json",
            target
        )));
        assert_eq!(code, 0, "{err}");
        let v = util::json(&out);
        vocab::check("load", &v);
        let k = &v["kernel_timestamps"];
        let received = v["received"].as_u64().unwrap();
        assert!(received >= 1990, "v6 {v6}: {v}");
        assert_eq!(
            k["samples"].as_u64().unwrap() + k["missing"].as_u64().unwrap(),
            received,
            "every answered request is split or counted as missing: {k}"
        );
        assert!(
            k["missing"].as_u64().unwrap() <= received / 100,
            "stamps went missing: {k}"
        );
        let names = names(k);
        assert_eq!(names, ["send_path", "wire_and_server", "receive_queue"]);
        // The stages of a round trip add up to it: their means to the mean
        // RTT the generator measured itself (its clock reads a little
        // before and after the kernel's: allow 20% and 5 us).
        let sum: f64 = names
            .iter()
            .map(|n| stage(k, n)["mean"].as_f64().unwrap())
            .sum();
        let rtt = v["rtt_us"]["mean"].as_f64().unwrap();
        assert!(
            (sum - rtt).abs() <= rtt * 0.2 + 5.0,
            "stages sum to {sum:.1} us, the RTT's mean is {rtt:.1} us: {k}"
        );
        for n in &names {
            assert!(stage(k, n)["p50"].as_f64().unwrap() > 0.0, "{n}: {k}");
        }

        let s = echo.json();
        vocab::check("echo", &s);
        let ks = &s["kernel_timestamps"];
        let server_names = self::names(ks);
        assert_eq!(server_names, ["receive_queue", "reply_path"]);
        // The server stamped every reply it sent (the generator's warm-up
        // and drain included).
        assert_eq!(
            ks["samples"].as_u64().unwrap() + ks["missing"].as_u64().unwrap(),
            s["received"].as_u64().unwrap(),
            "{s}"
        );
        assert_eq!(s["tx_timestamps"], s["sent"], "{s}");
        // The server's own time fits inside the client's wire_and_server.
        let server_p50: f64 = server_names
            .iter()
            .map(|n| stage(ks, n)["p50"].as_f64().unwrap())
            .sum();
        assert!(
            server_p50 <= stage(k, "wire_and_server")["p99"].as_f64().unwrap(),
            "server {server_p50} us vs client wire_and_server {}",
            stage(k, "wire_and_server")
        );
    }
}

#[test]
fn kernel_timestamps_refuse_what_they_cannot_split() {
    for args in [
        &["load", "127.0.0.1:9", "--kernel-timestamps"][..],
        &["load", "127.0.0.1:9", "--rate", "10", "--kernel-timestamps"][..],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--mode ping"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = run(&["echo", "--discard", "--kernel-timestamps"]);
    assert_eq!(code, 2, "{err}");
}
