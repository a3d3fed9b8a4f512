//! Three generators in three namespaces, one echo, one
//! load: `--shard i/3` and a shared `--start-at`; the merged result is the
//! sum of the three and its histogram the union of theirs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::topo::json_of;

#[test]
fn three_sharded_generators_start_together_and_merge_exactly() {
    let topo = crate::topology!(lan, "fl");
    let _echo = topo.server(
        "h1",
        &crate::util::words("echo --bind 10.201.0.1:7100 -w 1 -q --duration 20"),
    );
    // In the target directory: `ip netns exec` may give /tmp a mount of
    // its own.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("udpring-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = SystemTime::now() + Duration::from_secs(2);
    let at = format!(
        "{:.3}",
        start.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    );
    let topo = std::sync::Arc::new(topo);
    let runs: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (topo, at, h) = (topo.clone(), at.clone(), h.to_string());
            let log = dir.join(format!("g{i}.hlog")).display().to_string();
            std::thread::spawn(move || {
                let shard = format!("{i}/3");
                topo.udpring(
                    &h,
                    &[
                        "load",
                        "10.201.0.1:7100",
                        "--rate",
                        "3000",
                        // Two seconds: at least two one-second intervals in
                        // every log, whatever the phase of the ticks.
                        "-t",
                        "2",
                        "--shard",
                        &shard,
                        "--start-at",
                        &at,
                        "--hist-log",
                        &log,
                        "--json",
                        "-q",
                    ],
                )
            })
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let docs: Vec<serde_json::Value> = outs.iter().map(json_of).collect();
    for (o, d) in outs.iter().zip(&docs) {
        assert!(o.status.success(), "{d}");
        assert_eq!(
            d["rate"].as_f64(),
            Some(1000.0),
            "a third of the rate each: {d}"
        );
        assert_eq!(d["saturated"], false, "{d}");
        assert!(d["start_late_s"].as_f64().unwrap() < 0.1, "{d}");
    }
    // Measuring began at the asked instant on all three (same host clock),
    // none before it.
    let starts: Vec<f64> = docs
        .iter()
        .map(|d| d["start_unix_s"].as_f64().unwrap())
        .collect();
    let asked: f64 = at.parse().unwrap();
    for s in &starts {
        assert!(
            *s >= asked - 0.002,
            "started before --start-at: {s} < {asked}"
        );
    }
    let spread = starts.iter().cloned().fold(f64::MIN, f64::max)
        - starts.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread < 0.1, "starts {starts:?} spread {spread} s");
    // Merged: counts add up, the histogram is the union.
    let files: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let f = dir.join(format!("g{i}.json"));
            std::fs::write(&f, d.to_string()).unwrap();
            f.display().to_string()
        })
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udpring"))
        .arg("report")
        .args(&files)
        .arg("--json")
        .output()
        .unwrap();
    let m = crate::util::ok_json(&out);
    crate::util::vocab::check("report", &m);
    let sum = |k: &str| docs.iter().map(|d| d[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(m["sent"].as_u64(), Some(sum("sent")));
    assert_eq!(m["received"].as_u64(), Some(sum("received")));
    assert_eq!(m["rate"].as_f64(), Some(3000.0));
    assert_eq!(m["valid"], true);
    let mut union = udpring_cli::apps::load::new_histogram();
    for d in &docs {
        let h: udpring_cli::apps::load::HistogramData =
            serde_json::from_value(d["histogram"].clone()).unwrap();
        union.add(h.to_histogram().unwrap()).unwrap();
    }
    let want = udpring_cli::apps::load::HistogramData::from_histogram(&union);
    assert_eq!(m["histogram"], serde_json::to_value(&want).unwrap());
    // The three interval logs on one timeline say the same of the whole.
    let logs: Vec<String> = (0..3)
        .map(|i| dir.join(format!("g{i}.hlog")).display().to_string())
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udpring"))
        .args(["report", "--interval-logs", "--json"])
        .args(&logs)
        .output()
        .unwrap();
    let t = crate::util::ok_json(&out);
    crate::util::vocab::check("report", &t);
    assert_eq!(t["received"], m["received"], "{t}");
    assert_eq!(t["rtt_us"], m["rtt_us"], "{t}");
    assert!(t["results"].as_array().unwrap().len() >= 2, "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}
