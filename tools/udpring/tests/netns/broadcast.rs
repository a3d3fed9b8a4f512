//! Broadcast with the command on the LAN: the seed chapter's
//! `udp_broadcast.py` client and server with `mcast listen` and `mcast
//! ping --payload`, and `mcast ping`/`pong` on a subnet's broadcast address
//! and on 255.255.255.255 out of a chosen interface.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::topo::{KillOnDrop, Topology, json_of};

/// The seed chapter's broadcast server: binds ('', PORT) and prints what
/// each datagram says, read as ASCII (a binary datagram kills it). It says
/// "bound" first.
const SEED_SERVER: &str = r#"
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(('', int(sys.argv[1])))
print('bound', flush=True)
while True:
    data, address = sock.recvfrom(65535)
    text = data.decode('ascii')
    print('The client at {} says: {!r}'.format(address, text), flush=True)
"#;

/// The seed chapter's broadcast client: one datagram, SO_BROADCAST set.
const SEED_CLIENT: &str = r#"
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.sendto('Broadcast datagram!'.encode('ascii'), (sys.argv[1], int(sys.argv[2])))
"#;

fn python_in(topo: &Topology, ns: &str, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{}-{ns}", topo.name)])
        .args(["python3", "-c", script])
        .args(args);
    c
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_seed_chapters_broadcast_client_and_server_with_mcast_listen_and_ping() {
    let topo = crate::topology!(lan, "bs");
    let listen = topo.mcast(
        "h2",
        &[
            "mcast",
            "listen",
            "10.201.0.255:1060",
            "--duration",
            "3",
            "--json",
        ],
    );
    let mut server = KillOnDrop(
        python_in(&topo, "h3", SEED_SERVER, &["1060"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = server.0.stdout.take().unwrap();
    let mut first = [0u8; 6];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"bound\n");
    // The seed's client to udpring's listener (and the seed's server).
    let sent = python_in(&topo, "h1", SEED_CLIENT, &["10.201.0.255", "1060"])
        .status()
        .unwrap();
    assert!(sent.success());
    // udpring's text to the seed's server (and udpring's listener). Nobody
    // answers: exit 1, the ping still sent.
    let ping = topo.udpring(
        "h1",
        &[
            "mcast",
            "ping",
            "10.201.0.255:1060",
            "--payload",
            &hex("Broadcast datagram!"),
            "-c",
            "1",
            "--duration",
            "0.5",
            "--json",
        ],
    );
    assert_eq!(json_of(&ping)["sent"], 1, "{ping:?}");
    let v = json_of(&listen.finish());
    assert_eq!(v["received"], 2, "{v}");
    let sources: Vec<&str> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["addr"].as_str().unwrap())
        .collect();
    assert!(
        sources.len() == 2 && sources.iter().all(|s| s.starts_with("10.201.0.1:")),
        "{v}"
    );
    drop(server);
    let mut said = String::new();
    out.read_to_string(&mut said).unwrap();
    assert_eq!(
        said.matches("says: 'Broadcast datagram!'").count(),
        2,
        "the seed's server heard its client and udpring: {said}"
    );
}

/// `mcast ping TARGET EXTRA.. -c 5` from h1: the responders' addresses,
/// each having answered all five.
fn responders(topo: &Topology, target: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["mcast", "ping", target, "-c", "5", "--rate", "20"];
    args.extend(extra);
    args.extend(["--duration", "2", "--json"]);
    let out = topo.udpring("h1", &args);
    let v = json_of(&out);
    let rs = v["responders"].as_array().unwrap();
    for r in rs {
        assert_eq!(r["received"], 5, "{target}: {r}");
    }
    rs.iter()
        .map(|r| r["addr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn mcast_ping_and_pong_on_a_subnet_broadcast_and_on_the_limited_one() {
    let topo = crate::topology!(lan, "bp");
    let pong = |h, target| topo.mcast(h, &["mcast", "pong", target, "--duration", "10"]);
    let _p = [
        pong("h2", "10.201.0.255:5010"),
        pong("h3", "10.201.0.255:5010"),
        pong("h2", "255.255.255.255:5011"),
        pong("h3", "255.255.255.255:5011"),
    ];
    assert_eq!(
        responders(&topo, "10.201.0.255:5010", &[]),
        ["10.201.0.2:5010", "10.201.0.3:5010"]
    );
    // The limited broadcast leaves by the interface given: e0 reaches h2
    // and h3, e1 (the second bridge) h3 alone.
    assert_eq!(
        responders(&topo, "255.255.255.255:5011", &["--iface", "e0"]),
        ["10.201.0.2:5011", "10.201.0.3:5011"]
    );
    assert_eq!(
        responders(&topo, "255.255.255.255:5011", &["--iface", "e1"]),
        ["10.201.1.3:5011"]
    );
    // Neither is a group: no source to pick; a unicast address is neither.
    for (args, needle) in [
        (
            &[
                "mcast",
                "listen",
                "10.201.0.255:5012",
                "--source",
                "10.201.0.1",
            ][..],
            "broadcast address",
        ),
        (
            &["mcast", "listen", "10.201.0.7:5012"][..],
            "nor a broadcast",
        ),
    ] {
        let out = topo.udpring("h1", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
