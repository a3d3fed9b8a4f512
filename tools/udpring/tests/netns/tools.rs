//! The command's multicast tools and fan-out across the LAN's hosts, and
//! Python peers.

use std::net::SocketAddr;
use std::time::Duration;

use udpring::{Config, Engine};

use crate::mcast::{Got, expect_payloads, group_cfg, join, recorder, send_from, settle};
use crate::topo::{KillOnDrop, json_of};

#[test]
fn fanout_to_three_destinations_delivers_each_datagram_once_to_each() {
    use udpring_cli::apps::fanout::{Fanout, Relay, RelayOpts};
    let topo = crate::topology!(lan, "f");
    let mut cfg = Config::new("0.0.0.0:6001".parse().unwrap());
    cfg.workers = 1;
    // The recorders listen to a relay, a udpring server whose datagrams
    // carry the server mark: a server's default guard would refuse them.
    cfg.guard.refuse_marked = false;
    let (r1, g1) = recorder(&topo, "h1", cfg.clone());
    let (r3, g3) = recorder(&topo, "h3", cfg);
    // A second socket on h3, on another port: three destinations, plus one
    // nobody listens on.
    let mut cfg = Config::new("0.0.0.0:6002".parse().unwrap());
    cfg.workers = 1;
    cfg.guard.refuse_marked = false;
    let (r3b, g3b) = recorder(&topo, "h3", cfg);
    let dests: Vec<SocketAddr> = [
        "10.201.0.1:6001",
        "10.201.0.3:6001",
        "10.201.0.3:6002",
        "10.201.0.3:6999",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let counters = Relay::new(RelayOpts::new(dests.clone()));
    let c2 = counters.clone();
    let relay = topo.run_in("h2", move || {
        let mut cfg = udpring_cli::apps::fanout::config("10.201.0.2:6000".parse().unwrap(), None);
        cfg.workers = 1;
        Engine::start(cfg, move |_| Fanout::new(c2.clone())).unwrap()
    });
    const N: u32 = 200;
    topo.run_in("h1", || {
        let s = std::net::UdpSocket::bind("10.201.0.1:0").unwrap();
        for i in 0..N {
            s.send_to(&i.to_be_bytes(), "10.201.0.2:6000").unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while [&g1, &g3, &g3b]
        .iter()
        .any(|g| g.lock().unwrap().len() < N as usize)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    settle(); // and nothing more (no duplicates) arrives after
    let seqs = |g: &Got| -> Vec<u32> {
        let mut v: Vec<u32> = g
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        v.sort_unstable();
        v
    };
    let all: Vec<u32> = (0..N).collect();
    for (name, g) in [("h1", &g1), ("h3", &g3), ("h3:6002", &g3b)] {
        assert_eq!(seqs(g), all, "{name}: every datagram exactly once");
    }
    assert_eq!(counters.table().received, N as u64);
    let s = relay.stop().unwrap();
    let t = counters.table();
    for d in &t.dests {
        assert_eq!(d.forwarded(), N as u64);
    }
    assert!(
        t.dests[3].refused > 0,
        "the closed port is counted as refusing"
    );
    assert_eq!(s.slots_out, 0);
    assert_eq!(
        s.sent,
        4 * N as u64,
        "one send per destination per datagram"
    );
    for r in [r1, r3, r3b] {
        r.stop().unwrap();
    }
}

#[test]
fn mcast_ping_pong_reports_all_three_responders_v4_and_v6() {
    let topo = crate::topology!(lan, "g");
    for group in ["239.4.4.4:5005", "[ff15::4:4:4%e0]:5005"] {
        let pongs: Vec<KillOnDrop> = ["h1", "h2", "h3"]
            .iter()
            .map(|h| topo.mcast(h, &["mcast", "pong", group, "--duration", "15"]))
            .collect();
        let out = topo.udpring(
            "h1",
            &[
                // --duration: 0.2 s of pings, then 1.8 s for late replies.
                "mcast",
                "ping",
                group,
                "-c",
                "20",
                "--rate",
                "100",
                "--duration",
                "2",
                "--json",
            ],
        );
        let v = json_of(&out);
        let peers = v["responders"].as_array().unwrap();
        assert_eq!(
            peers.len(),
            3,
            "{group}: every responder, the pinger's own host included: {v}"
        );
        for p in peers {
            assert_eq!(p["received"], 20, "{group}: {p}");
            assert_eq!(p["lost"], 0, "{group}: {p}");
            assert!(p["rtt_us"]["p50"].as_f64().unwrap() > 0.0, "{group}: {p}");
        }
        assert!(out.status.success(), "{group}");
        drop(pongs);
        // Nobody answers now: the ping failed its purpose, exit 1 (as
        // `ping` and `load` do), the result still printed.
        let out = topo.udpring(
            "h1",
            &["mcast", "ping", group, "-c", "5", "--rate", "100", "--json"],
        );
        assert_eq!(out.status.code(), Some(1), "{group}: no responders");
        let v = json_of(&out);
        assert_eq!(v["responders"].as_array().unwrap().len(), 0, "{v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no responder answered"), "{err}");
    }
}

#[test]
fn mcast_send_and_listen_verify_count_every_datagram_once() {
    let topo = crate::topology!(lan, "v");
    let listen = topo.mcast(
        "h3",
        &crate::util::words("mcast listen 239.5.5.5:5006 --verify --duration 3 --json"),
    );
    let out = topo.udpring(
        "h1",
        &crate::util::words("mcast send 239.5.5.5:5006 -c 300 --rate 1000 --ttl 3"),
    );
    assert!(out.status.success());
    let out = listen.finish();
    let v = json_of(&out);
    let peers = v["sources"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{v}");
    assert_eq!(
        peers[0]["addr"].as_str().unwrap().split(':').next(),
        Some("10.201.0.1")
    );
    let c = &peers[0];
    assert_eq!(
        crate::util::counts(c, ["received", "lost", "duplicated"]),
        [Some(300), Some(0), Some(0)],
        "{v}"
    );
}

const PY_RECV: &str = r#"
import socket, struct, sys
g, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(g), socket.inet_aton("0.0.0.0")))
IP_RECVTTL, IP_TTL = getattr(socket, "IP_RECVTTL", 12), getattr(socket, "IP_TTL", 2)
s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
s.settimeout(3)
print("joined", flush=True)
n, ttl = 0, None
try:
    while n < 50:
        data, anc, flags, addr = s.recvmsg(2048, 64)
        for level, kind, value in anc:
            if level == socket.IPPROTO_IP and kind == IP_TTL:
                ttl = struct.unpack("i", value[:4])[0]
        n += 1
except socket.timeout:
    pass
print(n, ttl)
"#;

const PY_RECV6: &str = r#"
import socket, struct, sys
g, port, ifname = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
mreq = socket.inet_pton(socket.AF_INET6, g) + struct.pack("@I", socket.if_nametoindex(ifname))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
s.settimeout(3)
print("joined", flush=True)
n, hops = 0, None
try:
    while n < 20:
        data, anc, flags, addr = s.recvmsg(2048, 64)
        for level, kind, value in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                hops = struct.unpack("i", value[:4])[0]
        n += 1
except socket.timeout:
    pass
print(n, hops)
"#;

const PY_SEND: &str = r#"
import socket, struct, sys, time
g, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
for i in range(50):
    s.sendto(b"py %d" % i, (g, port))
    time.sleep(0.002)
"#;

/// Runs a Python group member (`script` with `args`) in namespace `ns`,
/// once it says it joined (a fixed sleep did not always hold).
fn python_joined(
    topo: &crate::topo::Topology,
    ns: &str,
    script: &str,
    args: &[&str],
) -> std::process::Child {
    let mut py = topo
        .exec(ns, "python3")
        .args(["-c", script])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = crate::topo::read_line(py.stdout.as_mut().unwrap());
    assert_eq!(first.as_deref(), Some("joined"));
    py
}

#[test]
fn python_receivers_hear_udpring_and_udpring_hears_python_with_the_ttl_set() {
    let topo = crate::topology!(lan, "y");
    // udpring -> Python receivers: what they print is "<datagrams> <ttl>",
    // the TTL (IP_RECVTTL) or hop limit (IPV6_RECVHOPLIMIT) they saw.
    let python_hears = |script: &str, py_args: &[&str], group: &str, count: &str, ttl: &str| {
        let py = python_joined(&topo, "h2", script, py_args);
        let out = topo.udpring(
            "h1",
            &[
                "mcast", "send", group, "-c", count, "--rate", "500", "--ttl", ttl,
            ],
        );
        assert!(out.status.success());
        let out = py.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        python_hears(PY_RECV, &["239.6.6.6", "5007"], "239.6.6.6:5007", "50", "7"),
        "50 7",
        "Python heard all 50 with TTL 7"
    );
    assert_eq!(
        python_hears(
            PY_RECV6,
            &["ff15::6:6:6", "5009", "e0"],
            "[ff15::6:6:6%e0]:5009",
            "20",
            "9"
        ),
        "20 9",
        "Python heard all 20 with hop limit 9"
    );
    // Python -> udpring listen.
    let listen = topo.mcast(
        "h3",
        &crate::util::words("mcast listen 239.6.6.7:5008 --duration 2 --json"),
    );
    let st = topo
        .exec("h1", "python3")
        .args(["-c", PY_SEND, "239.6.6.7", "5008"])
        .status()
        .unwrap();
    assert!(st.success());
    let v = json_of(&listen.finish());
    assert_eq!(v["received"], 50, "{v}");
}

#[test]
fn load_to_a_group_accounts_for_each_responder() {
    let topo = crate::topology!(lan, "r");
    let pongs: Vec<KillOnDrop> = ["h2", "h3"]
        .iter()
        .map(|h| topo.mcast(h, &["mcast", "pong", "239.7.7.7:5010", "--duration", "15"]))
        .collect();
    let out = topo.udpring(
        "h1",
        &crate::util::words(
            // --drain 2: a stall of a loaded box is not taken for a loss.
            "load 239.7.7.7:5010 --rate 2000 --count 500 --warmup 0 --flows 2 --drain 2 --json -q",
        ),
    );
    let v = json_of(&out);
    assert_eq!(v["sent"], 500, "{v}");
    let rs = v["responders"].as_array().unwrap();
    let addrs: Vec<&str> = rs.iter().map(|r| r["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, ["10.201.0.2:5010", "10.201.0.3:5010"], "{v}");
    for r in rs {
        assert_eq!(
            crate::util::counts(r, ["received", "lost", "duplicated"]),
            [Some(500), Some(0), Some(0)],
            "{r} of {v}"
        );
        assert!(r["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        v["received"], 1000,
        "the totals are the sums over responders: {v}"
    );
    assert_eq!(
        crate::util::counts(&v, ["lost", "duplicated", "foreign"]),
        [Some(0), Some(0), Some(0)]
    );
    // Responders are state strangers can create: bounded, the rest counted.
    let out = topo.udpring(
        "h1",
        &crate::util::words(
            "load 239.7.7.7:5010 --rate 2000 --count 200 --warmup 0 --max-responders 1 --json -q",
        ),
    );
    let v = json_of(&out);
    assert_eq!(v["responders"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["untracked_responders"], 200, "{v}");
    drop(pongs);
}

/// A group member that echoes every datagram 200 ms after it came, until
/// 3 s pass without one: a slower responder.
const PY_SLOW_ECHO: &str = r#"
import socket, struct, sys, threading
g, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(g), socket.inet_aton("0.0.0.0")))
s.settimeout(3)
print("joined", flush=True)
try:
    while True:
        data, addr = s.recvfrom(2048)
        threading.Timer(0.2, s.sendto, (data, addr)).start()
except socket.timeout:
    pass
"#;

/// A group's drain ended when every request had its first answer, so a
/// slower responder's last answers were cut off (counted lost) or counted
/// in the totals and not in its own line. The drain now waits for every
/// responder heard from, and the totals are the responders' sums.
#[test]
fn a_group_load_waits_for_its_slower_responder() {
    let topo = crate::topology!(lan, "w");
    let pong = topo.mcast(
        "h2",
        &["mcast", "pong", "239.7.7.8:5011", "--duration", "8"],
    );
    let mut slow = python_joined(&topo, "h3", PY_SLOW_ECHO, &["239.7.7.8", "5011"]);
    // 0.5 s of sending; the slow one is 0.2 s behind the pong.
    let out = topo.udpring(
        "h1",
        &crate::util::words(
            "load 239.7.7.8:5011 --rate 100 --count 50 --warmup 0 --drain 2 --json -q",
        ),
    );
    let v = json_of(&out);
    let rs = v["responders"].as_array().unwrap();
    let addrs: Vec<&str> = rs.iter().map(|r| r["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, ["10.201.0.2:5011", "10.201.0.3:5011"], "{v}");
    for r in rs {
        assert_eq!(
            crate::util::counts(r, ["received", "lost"]),
            [Some(50), Some(0)],
            "{r} of {v}"
        );
    }
    let sum: u64 = rs.iter().map(|r| r["received"].as_u64().unwrap()).sum();
    assert_eq!(v["received"].as_u64(), Some(sum), "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    let _ = slow.kill();
    let _ = slow.wait();
    drop(pong);
}

#[test]
fn two_listeners_share_a_port_and_a_double_join_is_a_typed_error() {
    let topo = crate::topology!(lan, "d");
    let cfg = || group_cfg("0.0.0.0:5014", vec![join("239.9.9.9", None, "e0")]);
    // Two engines (as two processes would) on one port: both hear the group.
    let (e1, g1) = recorder(&topo, "h2", cfg());
    let (e2, g2) = recorder(&topo, "h2", cfg());
    send_from(
        &topo,
        "h1",
        "10.201.0.1:0",
        "239.9.9.9:5014",
        vec!["to both"],
    );
    settle();
    expect_payloads(&g1, &["to both"], "first listener");
    expect_payloads(&g2, &["to both"], "second listener");
    e2.stop().unwrap();
    // Joining a group the socket is already in: AlreadyJoined, said plainly.
    let answers = send_from(
        &topo,
        "h1",
        "10.201.0.1:0",
        "10.201.0.2:5014",
        vec!["join 239.9.9.9"],
    );
    assert!(
        answers[0].contains("already a member of 239.9.9.9"),
        "{answers:?}"
    );
    e1.stop().unwrap();
}
