//! udpring with programs it did not write, on the LAN: the seeds' Twisted
//! programs (tools/peers/twisted: Twisted's UDP howto in Python 3 syntax)
//! against `load`, `echo`, `mcast ping --payload` and `mcast pong
//! --expect --answer`; plain-socket responders over IPv6; and a group
//! loaded with payloads matched by ID. Twisted is a peer: without it the
//! Twisted halves skip, saying so (`pip install twisted`; `.ci/run`
//! installs it).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::topo::{KillOnDrop, Topology, forge_from_port, json_of};

/// `text` as the hex the flags take.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Whether Twisted imports; without it the test skips or, with
/// `UDPRING_REQUIRE_PEERS=1`, fails.
fn have_twisted() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import twisted"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("UDPRING_REQUIRE_PEERS").as_deref() != Ok("1"),
            "Twisted is not installed and UDPRING_REQUIRE_PEERS=1"
        );
        eprintln!("skipping: Twisted is not installed (pip install twisted)");
    }
    ok
}

/// Runs one of the seeds' Twisted programs in namespace `ns`.
fn twisted(topo: &Topology, ns: &str, program: &str) -> KillOnDrop {
    twisted_on(topo, ns, program, None)
}

/// Runs one of the seeds' Twisted programs in namespace `ns`, on the given
/// reactor (`selectreactor`, ...) instead of the platform's default.
fn twisted_on(topo: &Topology, ns: &str, program: &str, reactor: Option<&str>) -> KillOnDrop {
    let path = format!("{}/../peers/twisted/{program}", env!("CARGO_MANIFEST_DIR"));
    let run = match reactor {
        None => format!("exec(open({path:?}).read())"),
        Some(r) => {
            format!("from twisted.internet import {r}; {r}.install(); exec(open({path:?}).read())")
        }
    };
    let child = Command::new("ip")
        .args(["netns", "exec", &format!("{}-{ns}", topo.name)])
        .args(["python3", "-u", "-c", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// A responder joined to `group` on `iface` that answers `ask` with
/// `answer` by unicast (IPv4 or IPv6), until killed.
const PY_RESPONDER: &str = r#"
import socket, struct, sys
group, port, iface, ask, answer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode(), sys.argv[5].encode()
v6 = ":" in group
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", port))
if v6:
    mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", socket.if_nametoindex(iface))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
print("joined", flush=True)
while True:
    d, a = s.recvfrom(2048)
    if d == ask:
        s.sendto(answer, a)
"#;

fn py_responder(
    topo: &Topology,
    ns: &str,
    group: &str,
    port: &str,
    ask: &str,
    answer: &str,
) -> KillOnDrop {
    py_joined(topo, ns, PY_RESPONDER, &[group, port, "e0", ask, answer])
}

/// `mcast ping --payload ASK --expect ANSWER --json` from h1 (text, as
/// hex): its result.
fn ping_payload(topo: &Topology, group: &str, ask: &str, answer: &str) -> serde_json::Value {
    ping_hex(topo, group, &hex(ask), &hex(answer))
}

/// `mcast ping --payload HEX --expect HEX -c 10 --json` from h1: its result.
fn ping_hex(topo: &Topology, group: &str, payload: &str, expect: &str) -> serde_json::Value {
    let out = topo.udpring(
        "h1",
        &[
            "mcast",
            "ping",
            group,
            "--payload",
            payload,
            "--expect",
            expect,
            "-c",
            "10",
            "--rate",
            "20",
            // 0.5 s of pings, then 2 s for late replies (not the default
            // 0.5 s): a stall of a loaded box is not taken for a loss.
            "--duration",
            "2.5",
            "--json",
        ],
    );
    let v = json_of(&out);
    assert!(out.status.success(), "{group}: {v}");
    v
}

/// Every responder of `v` answered each of the 10 pings once, with an RTT.
fn each_answered_all(v: &serde_json::Value, want: &[&str]) {
    let rs = v["responders"].as_array().unwrap();
    let addrs: Vec<&str> = rs.iter().map(|r| r["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, want, "{v}");
    for r in rs {
        assert_eq!(
            crate::util::counts(r, ["received", "lost", "duplicated"]),
            [Some(10), Some(0), Some(0)],
            "{r}"
        );
        assert!(r["rtt_us"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(v["late"], 0, "{v}");
}

#[test]
fn mcast_ping_with_a_payload_measures_the_seeds_twisted_servers_and_python_responders() {
    let topo = crate::topology!(lan, "t");
    if have_twisted() {
        let _servers: Vec<KillOnDrop> = ["h2", "h3"]
            .iter()
            .map(|h| twisted(&topo, h, "MulticastServer.py"))
            .collect();
        for h in ["h2", "h3"] {
            topo.wait_ready(h, 8005, Some("228.0.0.5".parse().unwrap()));
        }
        let v = ping_payload(&topo, "228.0.0.5:8005", "Client: Ping", "Server: Pong");
        each_answered_all(&v, &["10.201.0.2:8005", "10.201.0.3:8005"]);
    }
    // IPv6 (Twisted's multicast is IPv4 only): plain-socket responders.
    let _py: Vec<KillOnDrop> = ["h2", "h3"]
        .iter()
        .map(|h| py_responder(&topo, h, "ff15::8:8:8", "8006", "who", "me"))
        .collect();
    let v = ping_payload(&topo, "[ff15::8:8:8%e0]:8006", "who", "me");
    each_answered_all(&v, &["[fd00:201::2]:8006", "[fd00:201::3]:8006"]);
    // A responder whose answer does not start with --expect: invalid, and
    // no responder made of it.
    let _wrong = py_responder(&topo, "h2", "ff15::9:9:9", "8007", "who", "someone else");
    let out = topo.udpring(
        "h1",
        &[
            "mcast",
            "ping",
            "[ff15::9:9:9%e0]:8007",
            "--payload",
            &hex("who"),
            "--expect",
            &hex("me"),
            "-c",
            "5",
            "--rate",
            "20",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "no responder answered");
    let v = json_of(&out);
    assert_eq!(v["invalid"], 5, "{v}");
    assert_eq!(v["responders"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn mcast_pong_answers_the_seeds_twisted_client_and_nothing_unicast_or_guarded() {
    let topo = crate::topology!(lan, "q");
    let ping = hex("Client: Ping");
    let pong = topo.mcast(
        "h2",
        &[
            "mcast",
            "pong",
            "228.0.0.5:8005",
            "--expect",
            &ping,
            "--answer",
            &hex("Server: Pong"),
            "--duration",
            "5",
            "--json",
        ],
    );
    // A unicast "Client: Ping" to h2 (from a plain socket) and one forged
    // from port 53 of h1 to the group (a reflector port: refused by the
    // guard before the handler sees it): neither is answered.
    topo.run_in("h1", || {
        let s = std::net::UdpSocket::bind("10.201.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(b"Client: Ping", "10.201.0.2:8005").unwrap();
        let mut b = [0u8; 64];
        assert!(
            s.recv_from(&mut b).is_err(),
            "a unicast ping is never answered"
        );
        forge_from_port(53, "228.0.0.5:8005".parse().unwrap(), b"Client: Ping");
    });
    let mut answered = 0;
    if have_twisted() {
        let mut client = twisted(&topo, "h1", "MulticastClient.py");
        std::thread::sleep(Duration::from_millis(2000));
        let _ = client.0.kill();
        let heard = String::from_utf8_lossy(&client.finish().stdout).into_owned();
        assert!(
            heard.contains("Datagram b'Server: Pong' received from ('10.201.0.2', 8005)"),
            "the Twisted client hears the answer: {heard}"
        );
        answered = 1;
    }
    let v = json_of(&pong.finish());
    assert_eq!(
        v["sent"], answered,
        "only the Twisted client's ping is answered: {v}"
    );
    // A pong keeps no table of sources, so lists none (not an empty one).
    assert!(v.get("sources").is_none(), "{v}");
    assert_eq!(v["received"], 1 + answered, "{v}");
    assert_eq!(
        v["not_answered"]["not_to_group"], 1,
        "the unicast ping: {v}"
    );
    assert_eq!(
        v["guard"]["guard_port"], 1,
        "the ping forged from port 53: {v}"
    );
}

#[test]
fn load_with_a_payload_to_a_group_matches_every_responders_replies_by_id() {
    let topo = crate::topology!(lan, "i");
    for group in ["239.7.7.8:5011", "[ff15::7:7:8%e0]:5011"] {
        // Two responders that echo whatever starts with "Q": the payload
        // is "Q", a 2-byte ID that load writes, and padding.
        // A reply is lost only if it comes later than --drain after the
        // last send: 2 s, not 0.5, so a stall of a loaded CI box is not
        // taken for a loss (this test is about matching, not timing).
        let _pongs: Vec<KillOnDrop> = ["h2", "h3"]
            .iter()
            .map(|h| {
                topo.mcast(
                    h,
                    &["mcast", "pong", group, "--expect", "51", "--duration", "15"],
                )
            })
            .collect();
        let out = topo.udpring(
            "h1",
            &crate::util::words(&format!(
                "load {group} --payload 510000abcdef --match id:1:2 --rate 2000 --count 500 \
                 --warmup 0 --drain 2 --json -q"
            )),
        );
        let v = json_of(&out);
        let rs = v["responders"].as_array().unwrap();
        assert_eq!(rs.len(), 2, "{group}: {}", v);
        for r in rs {
            assert_eq!(
                crate::util::counts(r, ["received", "lost", "duplicated"]),
                [Some(500), Some(0), Some(0)],
                "{group}: {}: {v}",
                r["addr"]
            );
            assert!(r["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
        }
        assert_eq!(v["received"], 1000, "{group}: {}", v);
        assert_eq!(
            crate::util::counts(&v, ["duplicated", "timeouts", "unmatched"]),
            [Some(0), Some(0), Some(0)],
            "{group}: {}",
            v
        );
        assert_eq!(v["lost"], 0, "{group}");
    }
}

/// Runs one of the seeds' Twisted programs in `ns` until it prints
/// `want` (or 5 s pass), then stops it: what it printed.
fn twisted_until(
    topo: &Topology,
    ns: &str,
    program: &str,
    reactor: Option<&str>,
    want: &str,
) -> String {
    let mut p = twisted_on(topo, ns, program, reactor);
    let out = p.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                printed += &line;
                printed.push('\n');
                if line.contains(want) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    drop(p);
    printed
}

#[test]
fn the_seeds_twisted_echo_and_helloer_with_load_and_echo() {
    let topo = crate::topology!(lan, "w");
    if !have_twisted() {
        return;
    }
    // The seeds' Echo on port 9999 of h2, loaded by udpring.
    let _echo = twisted(&topo, "h2", "Echo.py");
    topo.wait_ready("h2", 9999, None);
    let out = topo.udpring(
        "h1",
        &crate::util::words("load 10.201.0.2:9999 --mode ping --count 200 --warmup 0 --json -q"),
    );
    let v = json_of(&out);
    assert_eq!(
        crate::util::counts(&v, ["sent", "received", "lost"]),
        [Some(200), Some(200), Some(0)],
        "{}",
        v
    );
    // The seeds' Helloer sends "hello" to 192.168.1.1:1234 on a connected
    // socket: here that address is h2's (inside the test's namespaces).
    crate::topo::sh_in(&topo, "h2", "ip addr add 192.168.1.1/32 dev e0");
    crate::topo::sh_in(&topo, "h1", "ip route add 192.168.1.1/32 dev e0");
    let echo = topo.server(
        "h2",
        &crate::util::words("echo --bind 192.168.1.1:1234 --workers 1 --duration 20"),
    );
    let heard = twisted_until(&topo, "h1", "Helloer.py", None, "received");
    assert!(
        heard.contains("received b'hello' from 192.168.1.1:1234"),
        "Helloer hears udpring echo: {heard}"
    );
    // Nobody there: its connectionRefused, from the ICMP error. On the
    // select reactor: Twisted 26's default (epoll) takes the socket error
    // (EPOLLERR) for a lost connection and never calls connectionRefused
    // (a plain socket gets ECONNREFUSED here).
    drop(echo);
    let heard = twisted_until(
        &topo,
        "h1",
        "Helloer.py",
        Some("selectreactor"),
        "No one listening",
    );
    assert!(heard.contains("No one listening"), "{heard}");
}

#[test]
fn the_seeds_first_multicast_pair_with_mcast_ping_and_pong() {
    let topo = crate::topology!(lan, "u");
    if !have_twisted() {
        return;
    }
    // MulticastServerUDP on h2 and h3 answers "UniqueID" with "data".
    let servers: Vec<KillOnDrop> = ["h2", "h3"]
        .iter()
        .map(|h| twisted(&topo, h, "MulticastServerUDP.py"))
        .collect();
    for h in ["h2", "h3"] {
        topo.wait_ready(h, 8005, Some("224.0.0.1".parse().unwrap()));
    }
    let v = ping_payload(&topo, "224.0.0.1:8005", "UniqueID", "data");
    each_answered_all(&v, &["10.201.0.2:8005", "10.201.0.3:8005"]);
    drop(servers);
    // MulticastClientUDP on h1 is answered by udpring's pong on h2.
    let _pong = topo.mcast(
        "h2",
        &[
            "mcast",
            "pong",
            "224.0.0.1:8005",
            "--expect",
            &hex("UniqueID"),
            "--answer",
            &hex("data"),
            "--duration",
            "10",
        ],
    );
    let heard = twisted_until(&topo, "h1", "MulticastClientUDP.py", None, "Received");
    assert!(heard.contains("Received:b'data'"), "{heard}");
}

/// An mDNS responder (RFC 6762) for one host, joined to 224.0.0.251 or
/// ff02::fb on e0, port 5353: it answers a PTR query for
/// `_services._dns-sd._udp.local` (DNS-SD's service enumeration) with
/// `_http._tcp.local`, by unicast to the asker (a query from a port other
/// than 5353 is a "legacy unicast" one: the answer carries its ID and
/// question, RFC 6762 section 6.7).
const PY_MDNS: &str = r#"
import socket, struct, sys
v6 = sys.argv[1] == "6"
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", 5353))
if v6:
    mreq = socket.inet_pton(socket.AF_INET6, "ff02::fb") + struct.pack("@I", socket.if_nametoindex("e0"))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("224.0.0.251") + socket.inet_aton("0.0.0.0"))
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
want = name("_services._dns-sd._udp.local")
print("joined", flush=True)
while True:
    q, a = s.recvfrom(2048)
    if len(q) < 12 or q[2] & 0x80:
        continue
    qid = q[:2]
    end = 12 + len(want)
    if q[12:end] != want or q[end:end + 2] != b"\x00\x0c":
        continue
    question = q[12:end] + b"\x00\x0c\x00\x01"
    rdata = name("_http._tcp.local")
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 12, 1, 10, len(rdata)) + rdata
    s.sendto(qid + b"\x84\x00" + struct.pack(">HHHH", 1, 1, 0, 0) + question + answer, a)
"#;

/// An SSDP responder (UPnP device architecture): joined to
/// 239.255.255.250:1900, it answers an `M-SEARCH` by unicast with `200 OK`
/// and its description's `LOCATION`.
const PY_SSDP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 1900))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("239.255.255.250") + socket.inet_aton("0.0.0.0"))
me = sys.argv[1]
print("joined", flush=True)
while True:
    q, a = s.recvfrom(2048)
    if q.startswith(b"M-SEARCH * HTTP/1.1\r\n") and b"ssdp:discover" in q:
        s.sendto(b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=60\r\nST: upnp:rootdevice\r\n"
                 b"USN: uuid:" + me.encode() + b"::upnp:rootdevice\r\nLOCATION: http://" + me.encode()
                 + b"/desc.xml\r\n\r\n", a)
"#;

/// Starts `script` (which prints "joined") with `args` in namespace `ns`.
fn py_joined(topo: &Topology, ns: &str, script: &str, args: &[&str]) -> KillOnDrop {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &format!("{}-{ns}", topo.name)])
        .args(["python3", "-c", script])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "joined", "{ns}: {script}");
    KillOnDrop(child)
}

/// The mDNS service-enumeration query of the README's recipe: ID 0, one
/// question, PTR, class IN with the unicast-response bit.
const MDNS_QUERY: &str =
    "000000000001000000000000095f7365727669636573075f646e732d7364045f756470056c6f63616c00000c8001";

#[test]
fn discovery_ssdp_and_mdns_responders_each_reported_with_an_rtt() {
    let topo = crate::topology!(lan, "pd");
    let hosts = ["h2", "h3"];
    // SSDP: the README's M-SEARCH, answers that start with "HTTP/1.1 200".
    let _ssdp: Vec<KillOnDrop> = hosts
        .iter()
        .map(|h| py_joined(&topo, h, PY_SSDP, &[h]))
        .collect();
    let search = "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
                  MAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";
    let v = ping_payload(&topo, "239.255.255.250:1900", search, "HTTP/1.1 200");
    each_answered_all(&v, &["10.201.0.2:1900", "10.201.0.3:1900"]);
    // mDNS over IPv4 and IPv6: the README's query, answers with its ID (0)
    // and the flags of an authoritative response.
    for (v6, group, want) in [
        (
            "4",
            "224.0.0.251:5353",
            Some(["10.201.0.2:5353", "10.201.0.3:5353"]),
        ),
        ("6", "[ff02::fb%e0]:5353", None),
    ] {
        let _mdns: Vec<KillOnDrop> = hosts
            .iter()
            .map(|h| py_joined(&topo, h, PY_MDNS, &[v6]))
            .collect();
        let v = ping_hex(&topo, group, MDNS_QUERY, "00008400");
        match want {
            Some(want) => each_answered_all(&v, &want),
            // ff02::fb is link-scoped: the pinger sends from its link-local
            // address, and the responders answer from theirs.
            None => {
                let rs = v["responders"].as_array().unwrap();
                assert_eq!(rs.len(), 2, "{group}: {v}");
                for r in rs {
                    assert!(r["addr"].as_str().unwrap().starts_with("[fe80::"), "{r}");
                    assert_eq!(r["received"], 10, "{group}: {r}");
                    assert!(r["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
                }
            }
        }
        if v6 == "4" {
            // The same responders loaded with DNS queries: every answer
            // matched to its query by the DNS ID, per responder.
            let q = std::env::temp_dir().join(format!("{}-mdns.txt", topo.name));
            std::fs::write(&q, "_services._dns-sd._udp.local PTR\n").unwrap();
            let out = topo.udpring(
                "h1",
                &crate::util::words(&format!(
                    "load {group} --dns-queries {} --rate 500 --count 200 --warmup 0 --drain 2 \
                     --json -q",
                    q.display()
                )),
            );
            let _ = std::fs::remove_file(&q);
            let v = json_of(&out);
            let rs = v["responders"].as_array().unwrap();
            assert_eq!(rs.len(), 2, "{}", v);
            for r in rs {
                assert_eq!(
                    crate::util::counts(r, ["received", "lost", "duplicated"]),
                    [Some(200), Some(0), Some(0)],
                    "{}: {v}",
                    r["addr"]
                );
            }
            assert_eq!(v["dns_rcodes"]["NOERROR"], 400, "{}", v);
        }
    }
}
