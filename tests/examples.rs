//! The examples, run as their users would run them, on loopback: their
//! answers checked, their stop clean.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An example's binary (cargo test builds the examples beside the tests).
fn example(name: &str) -> Command {
    let mut p = std::env::current_exe().unwrap();
    p.pop(); // the test binary
    if p.ends_with("deps") {
        p.pop();
    }
    p.push("examples");
    p.push(name);
    assert!(p.exists(), "{} is built by cargo test", p.display());
    Command::new(p)
}

struct Running {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    addrs: Vec<SocketAddr>,
    banner: String,
}

/// Starts an example and reads the addresses of its first line
/// ("... listening on ADDR (control ADDR)").
fn run(name: &str, args: &[&str]) -> Running {
    let mut cmd = example(name);
    cmd.args(args);
    spawn(cmd)
}

/// Starts `cmd` (an example, or a program that execs one) and reads its
/// first line and the addresses it names.
fn spawn(mut cmd: Command) -> Running {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    // The rest is read by the test that runs it.
    BufRead::read_line(&mut out, &mut banner).unwrap();
    let addrs = addrs_in(&banner);
    Running {
        child,
        out,
        addrs,
        banner,
    }
}

/// The addresses a banner line names ("... listening on ADDR (control ADDR)").
fn addrs_in(line: &str) -> Vec<SocketAddr> {
    line.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.parse().ok())
        .collect()
}

impl Running {
    /// SIGTERM, then the rest of its output; it must exit 0.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{status:?}: {rest}");
        rest
    }
}

/// A test that fails before `stop` leaves no example running.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn ask(s: &UdpSocket, to: SocketAddr, q: &str) -> String {
    s.send_to(q.as_bytes(), to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("{q}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// systemd's protocol, played by Python: two UDP sockets bound here, put
/// at descriptors 3 and 4, `LISTEN_PID` its own pid and `LISTEN_FDS=2`,
/// then `exec` of the example (the pid stays).
const ACTIVATE: &str = r#"
import os, socket, sys
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for fd, s in zip((3, 4), socks):
    if s.fileno() != fd:
        os.dup2(s.fileno(), fd)
    os.set_inheritable(fd, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "2"
os.execv(sys.argv[1], [sys.argv[1]])
"#;

#[test]
fn socket_activation_serves_the_sockets_it_is_handed() {
    // Without an activator: a socket of its own, served the same way.
    let own = run("socket_activation", &["127.0.0.1:0"]);
    let c = sock();
    assert_eq!(ask(&c, own.addrs[0], "one"), "one");
    let tail = own.stop();
    assert!(tail.contains("1 echoed, 0 slots out"), "{tail}");
    if Command::new("python3").arg("--version").output().is_err() {
        assert_ne!(
            std::env::var("UDPRING_REQUIRE_PEERS").as_deref(),
            Ok("1"),
            "python3 plays the activator and UDPRING_REQUIRE_PEERS=1"
        );
        eprintln!("skipping the activator: python3 is not installed");
        return;
    }
    let bin = example("socket_activation").get_program().to_owned();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ACTIVATE]).arg(&bin);
    let svc = spawn(cmd);
    assert!(svc.banner.contains("(2 handed in)"), "{}", svc.banner);
    assert_eq!(svc.addrs.len(), 2, "{}", svc.banner);
    for (i, to) in svc.addrs.iter().enumerate() {
        assert_eq!(ask(&c, *to, &format!("via {i}")), format!("via {i}"));
    }
    let tail = svc.stop();
    assert!(tail.contains("2 echoed, 0 slots out"), "{tail}");
}

#[test]
fn async_stream_answers_from_its_tasks() {
    let svc = run("async_stream", &["127.0.0.1:0", "2"]);
    let to = svc.addrs[0];
    for i in 0..20 {
        // Many source ports: both workers' streams serve.
        assert_eq!(
            ask(&sock(), to, &format!("hello {i}")),
            format!("HELLO {i}")
        );
    }
    let tail = svc.stop();
    assert!(
        tail.contains("20 received, 20 answered, 0 dropped"),
        "{tail}"
    );
}

#[test]
fn sequenced_fanout_numbers_each_subscribers_copies() {
    let (a, b) = (sock(), sock());
    let subs = [
        a.local_addr().unwrap().to_string(),
        b.local_addr().unwrap().to_string(),
    ];
    let fan = run("sequenced_fanout", &["127.0.0.1:0", &subs[0], &subs[1]]);
    let src = sock();
    let mut buf = [0u8; 64];
    for i in 0..3u32 {
        src.send_to(b"news", fan.addrs[0]).unwrap();
        for s in [&a, &b] {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..4], &i.to_be_bytes(), "its own sequence");
            assert_eq!(&buf[4..n], b"news");
        }
    }
    let tail = fan.stop();
    assert!(tail.contains("3 accepted, 6 copies"), "{tail}");
}

#[test]
fn kv_stores_expires_and_deletes() {
    let kv = run("kv", &["127.0.0.1:0", "2"]);
    let to = kv.addrs[0];
    let c = sock();
    assert_eq!(ask(&c, to, "SET a one"), "OK");
    assert_eq!(ask(&c, to, "GET a"), "VALUE one");
    assert_eq!(ask(&c, to, "SET b two 100"), "OK");
    assert_eq!(ask(&c, to, "GET b"), "VALUE two");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(ask(&c, to, "GET b"), "NOTFOUND", "expired");
    assert_eq!(ask(&c, to, "DEL a"), "DELETED");
    assert_eq!(ask(&c, to, "GET a"), "NOTFOUND");
    assert!(ask(&c, to, "FLY away").starts_with("ERROR"));
    // Junk gets no more bytes than it sent.
    assert_eq!(ask(&c, to, "FLY"), "ERR");
    assert!(ask(&c, to, "SET x 1 soon").starts_with("ERROR"));
    // Both workers share the table: from many source ports, one answer.
    for i in 0..20 {
        let s = sock();
        assert_eq!(ask(&s, to, &format!("SET k{i} v{i}")), "OK");
        assert_eq!(
            ask(&sock(), to, &format!("GET k{i}")),
            format!("VALUE v{i}")
        );
    }
    // One address asking far faster than its share: answered up to its
    // burst and rate, the rest refused and counted.
    let flood = sock();
    for _ in 0..2000 {
        flood.send_to(b"GET k1", to).unwrap();
    }
    // The stop comes at once on the signal: let the workers read the
    // flood first (what is still queued at a stop is not the rate's).
    read_by_now(to.port());
    let tail = kv.stop();
    assert!(tail.contains("20 keys left"), "{tail}");
    let over: u64 = tail
        .split(" over the per-source rate")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{tail}"));
    assert!(over > 0, "{tail}");
}

/// Waits (2 s at most) until the UDP sockets on `port` have nothing
/// queued, by the kernel's `rx_queue` in /proc/net/udp: then the engine
/// has read every datagram sent to it so far.
fn read_by_now(port: u16) {
    // A line: "sl local_address rem_address st tx_queue:rx_queue ...",
    // the local address ending in ":PORT" in hex.
    let tag = format!(":{port:04X}");
    let queued_here = |line: &str| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 4
            && f[1].ends_with(&tag)
            && f[4]
                .split(':')
                .nth(1)
                .is_some_and(|rx| rx.chars().any(|c| c != '0'))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let queued = ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .any(|t| t.lines().any(queued_here));
        if !queued || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// No answer within a moment to `q` from `to`.
fn unanswered(s: &UdpSocket, to: SocketAddr, q: &[u8]) -> bool {
    s.send_to(q, to).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    let silent = s.recv_from(&mut buf).is_err();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    silent
}

#[test]
fn relay_sends_to_live_subscribers_only() {
    let relay = run("relay", &["127.0.0.1:0", "127.0.0.1:0"]);
    let (data, control) = (relay.addrs[0], relay.addrs[1]);
    let (a, b, outsider) = (sock(), sock(), sock());
    // The token comes back to the address that asked, answering a
    // padded request with fewer bytes than it.
    let token = |s: &UdpSocket| {
        let t = ask(s, control, &format!("{:<32}", "SUB"));
        assert!(t.starts_with("TOKEN ") && t.len() <= 32, "{t}");
        t["TOKEN ".len()..].to_string()
    };
    let (ta, tb) = (token(&a), token(&b));
    assert_ne!(ta, tb, "a token per address");
    assert_eq!(ask(&a, control, &format!("SUB {ta}")), "SUBSCRIBED");
    assert_eq!(ask(&b, control, &format!("SUB {tb}")), "SUBSCRIBED");
    // Another address's token, a short SUB, anything else: no answer,
    // and no subscription.
    assert!(unanswered(
        &outsider,
        control,
        format!("SUB {ta}").as_bytes()
    ));
    assert!(unanswered(&outsider, control, b"SUB"));
    assert!(unanswered(&outsider, control, b"JOIN"));
    let src = sock();
    src.send_to(b"first", data).unwrap();
    let mut buf = [0u8; 64];
    for s in [&a, &b] {
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
    }
    assert_eq!(ask(&b, control, &format!("UNSUB {tb}")), "UNSUBSCRIBED");
    src.send_to(b"second", data).unwrap();
    let (n, _) = a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"second");
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(b.recv_from(&mut buf).is_err(), "unsubscribed");
    outsider
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(outsider.recv_from(&mut buf).is_err(), "never subscribed");
    let tail = relay.stop();
    assert!(tail.contains("1 subscribers left"), "{tail}");
}

#[test]
fn the_tokio_bridge_answers_every_request_and_accounts_for_all() {
    let bridge = run("tokio_bridge", &["127.0.0.1:0"]);
    let to = bridge.addrs[0];
    let c = sock();
    assert_eq!(ask(&c, to, "hello"), "HELLO");
    // A window of requests in flight, all answered.
    let mut buf = [0u8; 64];
    for round in 0..10 {
        for i in 0..50 {
            c.send_to(format!("r{round}-{i}").as_bytes(), to).unwrap();
        }
        for _ in 0..50 {
            let (n, _) = c.recv_from(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"R"), "{:?}", &buf[..n]);
        }
    }
    let tail = bridge.stop();
    assert!(tail.contains("received: 501"), "{tail}");
    assert!(tail.contains("answered: 501"), "{tail}");
    assert!(tail.contains("dropped_full: 0"), "{tail}");
}
