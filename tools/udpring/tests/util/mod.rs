//! Helpers shared by the command's integration tests: running `udpring`
//! and reading its banner and its JSON document, background servers whose
//! output is read for as long as they run, peers that may be missing, and
//! the JSON vocabulary. The engine's helpers (sockets, engines per
//! backend) come from the engine's own tests/util.
#![allow(dead_code)]

#[path = "../../../../tests/util/mod.rs"]
mod engine;
pub mod vocab;

#[allow(unused_imports)]
pub use engine::*;

use std::net::SocketAddr;

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
pub struct EchoProcess(pub std::process::Child, pub SocketAddr);

impl EchoProcess {
    pub fn start() -> EchoProcess {
        let mut child = udpring()
            .args(["echo", "--bind", "127.0.0.1:0", "-w", "1", "-q"])
            .args(["--duration", "30"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = banner_then_drain(child.stdout.take().unwrap());
        EchoProcess(child, addr)
    }
}

impl Drop for EchoProcess {
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
