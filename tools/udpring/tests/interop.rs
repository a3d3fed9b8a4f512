//! Clients udpring did not write, against `udpring echo`: a few lines of
//! Python `socket` (IPv4 and IPv6), and sockperf's ping-pong client against
//! `udpring echo --sockperf`.
//!
//! A missing peer tool makes a test print why it skips; with
//! `UDPRING_REQUIRE_PEERS=1` (set by `.ci/run`, which installs them) it fails.

mod util;

use util::have;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

struct Echo {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_echo(bind: &str, extra: &[&str]) -> Echo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_udpring"))
        .args(["echo", "--bind", bind, "--workers", "1", "-q"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = util::banner_then_drain(child.stdout.take().unwrap());
    Echo { child, addr }
}

const PY_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(5)
for i in range(3):
    msg = ('hello %d' % i).encode() * (i + 1)
    s.sendto(msg, (host, port))
    data, addr = s.recvfrom(65535)
    assert data == msg, (data, msg)
    assert addr[1] == port, addr
print('ok 3')
"#;

#[test]
fn python_socket_client_gets_its_echoes_v4_and_v6() {
    if !have("python3") {
        return;
    }
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let echo = spawn_echo(bind, &[]);
        let out = Command::new("python3")
            .args([
                "-c",
                PY_CLIENT,
                &echo.addr.ip().to_string(),
                &echo.addr.port().to_string(),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ok 3"),
            "{bind}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sockperf_ping_pong_against_udpring_echo_sockperf() {
    if !have("sockperf") {
        return;
    }
    let echo = spawn_echo("127.0.0.1:0", &["--sockperf"]);
    let out = Command::new("timeout")
        .args([
            "30",
            "sockperf",
            "ping-pong",
            "-i",
            "127.0.0.1",
            "-p",
            &echo.addr.port().to_string(),
        ])
        .args(["-t", "1", "-m", "64"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sockperf failed: {text}");
    let valid = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .unwrap_or_else(|| panic!("{text}"));
    let field = |name: &str| -> u64 {
        valid
            .split(name)
            .nth(1)
            .and_then(|s| {
                s.trim_start_matches('=')
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {valid}"))
    };
    let (sent, received) = (field("SentMessages"), field("ReceivedMessages"));
    assert!(received > 100, "round trips counted: {valid}");
    assert!(received <= sent && received + 10 >= sent, "{valid}");
    assert!(text.contains("Summary: Latency is"), "{text}");
}

#[test]
fn udpring_load_sockperf_mode_against_sockperf_server() {
    if !have("sockperf") {
        return;
    }
    let port = util::unused_port();
    let mut server = Command::new("sockperf")
        .args(["server", "-i", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    util::wait_udp_bound(port);
    let out = Command::new(env!("CARGO_BIN_EXE_udpring"))
        .args([
            "load",
            &format!("127.0.0.1:{port}"),
            "--sockperf",
            "--mode",
            "ping",
        ])
        .args(["--count", "300", "--warmup", "0", "--json", "-q"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = util::json(&text);
    assert_eq!(v["sent"], 300, "{v}");
    assert_eq!(
        v["received"], 300,
        "sockperf server echoes our header behind its own: {v}"
    );
    assert_eq!(v["invalid"], 0);
}
