//! The load generator's accounting, exact, against echo servers that
//! misbehave on purpose: drop every 10th datagram, swap neighbours, answer
//! twice, answer from another port, add malformed replies. And `report`'s
//! merge against a merge done by hand. The command's side: usage errors,
//! refusals from a closed port, the JSON report, its merge and the
//! histogram file.

#[macro_use]
mod util;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use udpring::{Config, Datagram, Engine, Handler, Transport};
use udpring_cli::apps::load::{HistogramData, LoadOpts, LoadReport, Mode, run_load};
use util::*;

const N: u64 = 1000;

/// How a test server misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    None,
    DropEvery10th,
    SwapNeighbours,
    Twice,
    AlsoFromOtherPort,
    AlsoMalformed,
    /// After `REPLAY_AFTER` datagrams, sends the very first one back again.
    ReplayFirstLater,
}

/// More than the 65536 sequences a flow remembers.
const REPLAY_AFTER: u64 = 70_000;

struct Faulty {
    fault: Fault,
    n: u64,
    held: Vec<u8>,
    held_to: Option<SocketAddr>,
}

impl Handler for Faulty {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let i = self.n;
        self.n += 1;
        let src = dgram.source();
        match self.fault {
            Fault::None => tx.reply(dgram).unwrap(),
            Fault::DropEvery10th => {
                if i % 10 != 9 {
                    tx.reply(dgram).unwrap();
                }
            }
            Fault::SwapNeighbours => {
                if i % 2 == 0 {
                    self.held.clear();
                    self.held.extend_from_slice(dgram.payload());
                    self.held_to = Some(src);
                } else {
                    tx.reply(dgram).unwrap();
                    let to = self.held_to.take().expect("held");
                    tx.send_to(&self.held, to).unwrap();
                }
            }
            Fault::Twice => {
                tx.send_to(dgram.payload(), src).unwrap();
                tx.reply(dgram).unwrap();
            }
            Fault::AlsoFromOtherPort => {
                tx.send_to_via(1, dgram.payload(), src).unwrap();
                tx.reply(dgram).unwrap();
            }
            Fault::ReplayFirstLater => {
                if i == 0 {
                    self.held = dgram.payload().to_vec();
                    self.held_to = Some(src);
                }
                tx.reply(dgram).unwrap();
                if i == REPLAY_AFTER {
                    let to = self.held_to.expect("held");
                    tx.send_to(&self.held, to).unwrap();
                }
            }
            Fault::AlsoMalformed => {
                tx.send_to(b"junk", src).unwrap();
                let mut bad_magic = dgram.payload().to_vec();
                bad_magic[0] ^= 0xff;
                tx.send_to(&bad_magic, src).unwrap();
                let mut other_run = dgram.payload().to_vec();
                other_run[8] ^= 0xff; // the run token
                tx.send_to(&other_run, src).unwrap();
                tx.reply(dgram).unwrap();
            }
        }
    }
}

fn server(fault: Fault, v6: bool) -> Engine {
    let mut cfg = Config::new(loopback(v6));
    cfg.workers = 1;
    cfg.sockets_per_worker = 2;
    cfg.distinct_ports = true;
    Engine::start(cfg, move |_| Faulty {
        fault,
        n: 0,
        held: Vec::new(),
        held_to: None,
    })
    .unwrap()
}

fn opts(target: SocketAddr) -> LoadOpts {
    let mut o = LoadOpts::new(target);
    // Unconnected, so that datagrams from elsewhere reach the generator
    // and are counted as foreign (connected sockets are tested below).
    o.unconnected = true;
    o.mode = Mode::Rate(20_000.0);
    o.duration = None;
    o.count = Some(N);
    // Generous: on a loaded host a reply can take a while, and the drop
    // tests wait the whole drain.
    o.drain_arg = Some(Duration::from_secs(1));
    o
}

fn run(o: &LoadOpts) -> LoadReport {
    run_load(o, &AtomicBool::new(false), |_| {}).expect("load run")
}

#[test]
fn a_clean_echo_loses_nothing_and_rtts_are_recorded() {
    for v6 in [false, true] {
        let s = server(Fault::None, v6);
        let mut o = opts(s.local_addr());
        o.flows = 4;
        let r = run(&o);
        assert_eq!(
            (r.counts.sent, r.counts.received, r.lost),
            (N, N, 0),
            "v6={v6}: {}",
            r.table()
        );
        assert_eq!(
            (
                r.counts.reordered,
                r.counts.duplicated,
                r.counts.invalid,
                r.counts.foreign
            ),
            (0, 0, 0, 0)
        );
        let h = r.histogram.to_histogram().unwrap();
        assert_eq!(h.len(), N, "one RTT per reply");
        let rtt = r.rtt_us.as_ref().expect("replies came, so RTTs");
        assert!(rtt.p50 > 0.0 && rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max);
        stop_clean(s);
    }
}

#[test]
fn dropping_every_10th_reply_reads_as_exactly_10_percent_loss() {
    let s = server(Fault::DropEvery10th, false);
    let r = run(&opts(s.local_addr()));
    assert_eq!(r.counts.sent, N);
    assert_eq!(r.lost, N / 10, "{}", r.table());
    assert_eq!(r.counts.received, N - N / 10);
    assert_eq!(
        (r.counts.reordered, r.counts.duplicated, r.counts.invalid),
        (0, 0, 0)
    );
    stop_clean(s);
}

#[test]
fn swapped_neighbours_count_as_reordered() {
    let s = server(Fault::SwapNeighbours, false);
    let r = run(&opts(s.local_addr()));
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (N, N, 0),
        "{}",
        r.table()
    );
    assert_eq!(
        r.counts.reordered,
        N / 2,
        "every even sequence arrives after its odd neighbour"
    );
    assert_eq!(r.counts.duplicated, 0);
    stop_clean(s);
}

#[test]
fn answering_twice_counts_duplicates_not_receptions() {
    let s = server(Fault::Twice, false);
    let r = run(&opts(s.local_addr()));
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (N, N, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.counts.duplicated, N);
    assert_eq!(
        r.histogram.to_histogram().unwrap().len(),
        N,
        "no RTT for a duplicate"
    );
    stop_clean(s);
}

#[test]
fn replies_from_another_port_are_foreign_and_malformed_ones_invalid() {
    let s = server(Fault::AlsoFromOtherPort, false);
    let r = run(&opts(s.local_addrs()[0]));
    assert_eq!((r.counts.received, r.lost), (N, 0), "{}", r.table());
    assert_eq!(
        r.counts.foreign, N,
        "same payload, other source port: not a reply"
    );
    assert_eq!(r.counts.invalid, 0);
    stop_clean(s);

    let s = server(Fault::AlsoMalformed, false);
    let r = run(&opts(s.local_addrs()[0]));
    assert_eq!((r.counts.received, r.lost), (N, 0), "{}", r.table());
    assert_eq!(
        r.counts.invalid,
        3 * N,
        "short, bad magic, other run's token"
    );
    assert_eq!((r.counts.foreign, r.counts.duplicated), (0, 0));
    stop_clean(s);
}

#[test]
fn ping_mode_keeps_one_request_per_flow_in_flight() {
    let s = server(Fault::None, false);
    let mut o = opts(s.local_addr());
    o.mode = Mode::Ping;
    o.flows = 3;
    o.count = Some(300);
    let r = run(&o);
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (300, 300, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.counts.reordered, 0, "closed loop: nothing can overtake");
    stop_clean(s);
}

#[test]
fn ping_timeouts_move_on_and_count_as_loss() {
    let s = server(Fault::DropEvery10th, false);
    let mut o = opts(s.local_addr());
    o.mode = Mode::Ping;
    o.count = Some(30);
    o.timeout_arg = Some(Duration::from_millis(250));
    let r = run(&o);
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (30, 27, 3),
        "{}",
        r.table()
    );
    assert_eq!(r.counts.timeouts, 3);
    stop_clean(s);
}

#[test]
fn gso_trains_are_counted_per_datagram() {
    let s = {
        let mut cfg = Config::new(loopback(false));
        cfg.workers = 1;
        cfg.gro = true;
        Engine::start(cfg, |_| Faulty {
            fault: Fault::None,
            n: 0,
            held: Vec::new(),
            held_to: None,
        })
        .unwrap()
    };
    let mut o = opts(s.local_addr());
    o.gso = 10;
    o.count = Some(N);
    let r = run(&o);
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (N, N, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.histogram.to_histogram().unwrap().len(), N);
    // A flood with room builds 16 trains per call in one slot
    // (`send_trains_with`): 6 calls of 160, then the last 40 train by
    // train. Every datagram has its own sequence: each reply matches one
    // request, once.
    o.mode = Mode::Flood;
    o.window = Some(1024);
    let r = run(&o);
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (N, N, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.histogram.to_histogram().unwrap().len(), N);
    assert_eq!(
        (r.counts.duplicated, r.counts.reordered, r.counts.unmatched),
        (0, 0, 0)
    );
    let st = stop_clean(s);
    assert_eq!(st.received, 2 * N);
}

#[test]
fn report_merge_equals_a_merge_by_hand() {
    let s = server(Fault::None, false);
    let a = run(&opts(s.local_addr()));
    let mut o = opts(s.local_addr());
    o.size = 200;
    let b = run(&o);
    stop_clean(s);
    // Through JSON, as `udpring report` reads them.
    let a: LoadReport = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    let b: LoadReport = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    let m = LoadReport::merge(&[a.clone(), b.clone()]).unwrap();
    let mut by_hand = a.histogram.to_histogram().unwrap();
    by_hand.add(b.histogram.to_histogram().unwrap()).unwrap();
    assert_eq!(m.histogram, HistogramData::from_histogram(&by_hand));
    assert_eq!(m.histogram.to_histogram().unwrap().len(), 2 * N);
    assert_eq!(
        m.rtt_us.as_ref().unwrap().p99,
        by_hand.value_at_quantile(0.99) as f64 / 1000.0
    );
    assert_eq!(
        (m.counts.sent, m.counts.received, m.lost, m.runs),
        (2 * N, 2 * N, 0, 2)
    );
    assert_eq!(m.pps_sent, a.pps_sent + b.pps_sent);
}

#[test]
fn rate_mode_sends_the_asked_count_at_the_asked_rate() {
    let s = server(Fault::None, false);
    let mut o = opts(s.local_addr());
    o.count = None;
    o.duration = Some(Duration::from_millis(500));
    o.mode = Mode::Rate(10_000.0);
    let r = run(&o);
    // Sending stops exactly at the end of the duration: 5000 datagrams due.
    assert!((4999..=5001).contains(&r.counts.sent), "{}", r.table());
    assert_eq!(r.lost, 0);
    stop_clean(s);
}

#[test]
fn connected_flows_only_hear_the_target() {
    let s = server(Fault::AlsoFromOtherPort, false);
    let mut o = opts(s.local_addrs()[0]);
    o.unconnected = false;
    o.flows = 2;
    let r = run(&o);
    assert_eq!(
        (r.counts.sent, r.counts.received, r.lost),
        (N, N, 0),
        "{}",
        r.table()
    );
    assert_eq!(
        r.counts.foreign, 0,
        "the kernel filters a connected socket's traffic"
    );
    stop_clean(s);
}

per_backend!(
    fn busy_polling_generator_and_server_lose_nothing(backend) {
        let mut cfg = config(backend, false);
        cfg.busy_poll = true;
        let s = Engine::start(cfg, |_| Faulty {
            fault: Fault::None,
            n: 0,
            held: Vec::new(),
            held_to: None,
        })
        .unwrap();
        let mut o = opts(s.local_addr());
        o.mode = Mode::Ping;
        o.count = Some(300);
        o.busy_poll = true;
        o.backend = Some(backend);
        let r = run(&o);
        assert_eq!(
            (r.counts.sent, r.counts.received, r.lost),
            (300, 300, 0),
            "{backend}: {}",
            r.table()
        );
        let st = stop_clean(s);
        assert_eq!(st.received, 300);
    }
);

#[test]
fn replies_cut_by_the_server_are_truncated_not_received() {
    // A default echo's slot holds 4096 bytes of payload: it echoes what it
    // kept of 5000.
    let s = Engine::start(Config::new(loopback(false)), |_| {
        udpring_cli::apps::echo::Echo::new()
    })
    .unwrap();
    let mut o = opts(s.local_addr());
    o.size = 5000;
    o.count = Some(200);
    let r = run(&o);
    assert_eq!(
        (r.counts.sent, r.counts.received),
        (200, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.counts.truncated, 200);
    assert_eq!(r.lost, 200, "a cut echo answers nothing");
    let st = stop_clean(s);
    assert_eq!(st.truncated, 200, "the server counted its side");
}

#[test]
fn a_reply_older_than_the_window_is_stale_not_new() {
    let s = server(Fault::ReplayFirstLater, false);
    let mut o = opts(s.local_addrs()[0]);
    o.mode = Mode::Flood;
    o.window = Some(256);
    o.count = Some(REPLAY_AFTER + 100);
    let r = run(&o);
    assert_eq!(r.counts.received, r.counts.sent, "{}", r.table());
    assert_eq!(
        (r.counts.stale, r.counts.duplicated),
        (1, 0),
        "{}",
        r.table()
    );
    stop_clean(s);
}

#[test]
fn load_usage_errors_are_one_line_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["load", "127.0.0.1:9", "--rate", "0"], "rate 0 must be"),
        (
            &["load", "127.0.0.1:9", "--rate", "1e12"],
            "must be 1..100M",
        ),
        (&["load", "127.0.0.1:9", "--rate", "fast"], "not a rate"),
        (
            &["load", "127.0.0.1:9", "--size", "65508"],
            "--size 65508 must be 32..65507",
        ),
        (
            &["load", "[::1]:9", "--size", "65528"],
            "32..65527 for IPv6",
        ),
        (
            &["load", "127.0.0.1:9", "--size", "8"],
            "the header takes 32",
        ),
        (
            &["load", "127.0.0.1:9", "--sockperf", "--size", "40"],
            "the header takes 46",
        ),
        (
            &["load", "no-such-host.invalid:9000"],
            "cannot resolve 'no-such-host.invalid'",
        ),
        (&["load", "127.0.0.1"], "needs a port"),
        (&["load", "127.0.0.1:0"], "port 0"),
        (
            &["load", "127.0.0.1:9", "--mode", "ping", "--rate", "10"],
            "do not go with --mode ping",
        ),
        (
            &["load", "127.0.0.1:9", "--gso", "64", "--size", "1400"],
            "64 KiB",
        ),
        (
            &["load", "127.0.0.1:9", "--count", "0"],
            "--count must be at least 1",
        ),
        (
            &["load", "127.0.0.1:9", "--bind", "[::1]:0"],
            "different families",
        ),
        (&["report", "/nonexistent/a.json"], "/nonexistent/a.json"),
    ];
    assert_usage_errors(cases);
}

#[test]
fn load_against_a_closed_port_counts_refusals_and_exits_1() {
    let closed = util::unused_addr("127.0.0.1");
    let (code, out, err) = util::run(&util::words(&format!(
        "load {} --rate 2000 -t 0.3 --warmup 0 --drain 0.1 --json -q",
        closed
    )));
    // The result is still written; the exit code says it failed its
    // purpose (no replies at all).
    assert_eq!(code, 1, "{err}");
    let v = util::json(&out);
    assert_eq!(v["received"], 0);
    assert!(v["rtt_us"].is_null(), "no replies: no RTT, not 0.0: {v}");
    assert!(v["sent"].as_u64().unwrap() > 0);
    assert_eq!(v["lost"], v["sent"]);
    assert!(v["errors"]["ECONNREFUSED"].as_u64().unwrap() > 0, "{v}");
    assert!(err.contains("no replies"), "{err}");
}

#[test]
fn load_json_report_merge_and_histogram_file() {
    let echo = Server::echo();
    let addr = echo.addr;
    let dir = std::env::temp_dir().join(format!("udpring-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (i, mode) in ["ping", "flood"].iter().enumerate() {
        let (code, out, err) = util::run(&util::words(&format!(
            "load {} --mode {} --count 500 --warmup 0 --json -q --flows 2",
            addr, mode
        )));
        assert_eq!(code, 0, "{err}");
        let v = util::json(&out);
        for k in [
            "sent",
            "received",
            "lost",
            "reordered",
            "duplicated",
            "invalid",
            "pps_sent",
            "pps_received",
            "gbps_received",
        ] {
            assert!(!v[k].is_null(), "{k} missing in {v}");
        }
        for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(v["rtt_us"][k].as_f64().unwrap() > 0.0, "rtt_us.{k} in {v}");
        }
        assert_eq!(
            (v["sent"].as_u64(), v["received"].as_u64()),
            (Some(500), Some(500)),
            "{v}"
        );
        let f = dir.join(format!("r{i}.json"));
        std::fs::write(&f, out).unwrap();
        files.push(f);
    }
    let hgrm = dir.join("merged.hgrm");
    let (code, out, err) = util::run(&[
        "report",
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
        "--allow-mixed",
        "--json",
        "--hist-out",
        hgrm.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let m = util::json(&out);
    assert_eq!(m["sent"], 1000);
    assert_eq!(m["runs"], 2);
    assert_eq!(m["mode"], "ping,flood");
    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        text.contains("Percentile") && text.contains("Total count = 1000"),
        "{text}"
    );
    let (code, table, _) = util::run(&["report", files[0].to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(table.contains("rtt us  p50"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
    drop(echo);
}
