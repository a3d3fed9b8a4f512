//! Helpers shared by the integration tests: loopback sockets on port 0,
//! engines per backend, and waiting for a worker to go idle.
#![allow(dead_code)]

pub mod counting;
pub mod vocab;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udpring::{Backend, Config, Engine, Stats};

/// Loopback with port 0, IPv4 or IPv6.
pub fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    }
}

/// Whether this kernel can run `backend`; says why not when it cannot.
pub fn can_run(backend: Backend) -> bool {
    match (backend, udpring::uring_support()) {
        (Backend::Uring, Err(why)) => {
            eprintln!("skipping the uring backend: {why}");
            false
        }
        _ => true,
    }
}

/// One test per backend, each its own named test so that a failing
/// backend does not hide the others: `per_backend!(fn name(backend) {...})`
/// makes `name::uring`, `name::mmsg` and `name::simple`.
#[macro_export]
macro_rules! per_backend {
    ($(#[$meta:meta])* fn $name:ident($b:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn on($b: udpring::Backend) $body

            #[test]
            fn uring() {
                if $crate::common::can_run(udpring::Backend::Uring) {
                    on(udpring::Backend::Uring);
                }
            }
            #[test]
            fn mmsg() {
                on(udpring::Backend::Mmsg);
            }
            #[test]
            fn simple() {
                on(udpring::Backend::Simple);
            }
        }
    };
}

/// A config for one worker of `backend` on loopback.
pub fn config(backend: Backend, v6: bool) -> Config {
    let mut c = Config::new(loopback(v6));
    c.backend = Some(backend);
    c.workers = 1;
    c
}

/// A client socket on loopback with a generous receive buffer and a timeout.
pub fn client(v6: bool) -> UdpSocket {
    client_on(loopback(v6))
}

/// [`client`] bound to `bind` (a loopback address, port 0 for any).
pub fn client_on(bind: SocketAddr) -> UdpSocket {
    let domain = if bind.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None).unwrap();
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&bind.into()).unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Waits (bounded) until per-worker counters satisfy `done` (workers
/// publish counters once per loop, a moment after their sends).
pub fn wait_workers(engine: &Engine, done: impl Fn(&[Stats]) -> bool) -> Vec<Stats> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = engine.worker_stats();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the engine and checks that every slot came back.
pub fn stop_clean(engine: Engine) -> Stats {
    let s = engine.stop().expect("engine stops cleanly");
    assert_eq!(s.slots_out, 0, "slots still out after stop: {s:?}");
    assert!(s.slots_total > 0);
    assert_eq!(s.invalid_completions, 0, "invalid completions: {s:?}");
    s
}

/// Deterministic payload of `n` bytes, different per `tag`.
pub fn pattern(n: usize, tag: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect()
}

/// Reads the first line a udpring command prints ("... listening on ADDR
/// ...") and returns ADDR.
pub fn listening_addr(out: &mut impl std::io::BufRead) -> SocketAddr {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in first line: {line:?}"))
}

/// Reads the "listening on ADDR" banner from `r`, then keeps reading it to
/// its end on a thread of its own: a command whose reader goes away stops
/// (tests/closed_output.rs), so a server's stream is read for as long as
/// it runs.
pub fn banner_then_drain(r: impl std::io::Read + Send + 'static) -> SocketAddr {
    let mut r = std::io::BufReader::new(r);
    let addr = listening_addr(&mut r);
    keep_reading(r);
    addr
}

/// Reads `r` to its end on a thread of its own (see [`banner_then_drain`]).
pub fn keep_reading(mut r: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
}

/// Whether peer `tool` is installed; without it the test skips, saying so,
/// or fails when `UDPRING_REQUIRE_PEERS=1` (set by `.ci/run`, which
/// installs every peer).
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("UDPRING_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{tool} is not installed and UDPRING_REQUIRE_PEERS=1");
        }
        eprintln!("skipping: {tool} is not installed (apt-get install {tool})");
    }
    found
}

/// The `udpring` command, without a backend forced from the environment.
pub fn udpring() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_udpring"));
    c.env_remove("UDPRING_BACKEND");
    c
}

/// Runs `udpring ARGS`: exit code, stdout, stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = udpring().args(args).output().expect("run udpring");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `out` as the one JSON document it must be, checked against the
/// vocabulary (tools/json-vocabulary.json).
pub fn json(out: &str) -> serde_json::Value {
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    vocab::check_any(&v);
    v
}

/// `udpring echo` on 127.0.0.1 (one worker, quiet, 30 s at most), killed
/// and reaped on drop; `.1` is its address.
pub struct Echo(pub std::process::Child, pub SocketAddr);

impl Echo {
    pub fn start() -> Echo {
        let mut child = udpring()
            .args(["echo", "--bind", "127.0.0.1:0", "-w", "1", "-q"])
            .args(["--duration", "30"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = banner_then_drain(child.stdout.take().unwrap());
        Echo(child, addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A background `udpring` with `--json` whose banner (on stderr) names its
/// address; its document is read at the end.
pub struct JsonServer(pub std::process::Child, pub SocketAddr);

impl JsonServer {
    pub fn start(args: &[&str]) -> JsonServer {
        let mut child = udpring()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let addr = banner_then_drain(child.stderr.take().unwrap());
        JsonServer(child, addr)
    }

    /// Waits for its end (it was given a duration) and returns its document.
    pub fn finish(mut self) -> serde_json::Value {
        let out = std::mem::replace(
            &mut self.0,
            std::process::Command::new("true")
                .spawn()
                .expect("a placeholder child"),
        )
        .wait_with_output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {text}"))
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
