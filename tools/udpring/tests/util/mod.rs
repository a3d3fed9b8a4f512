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
    listening(out).0
}

/// The address of the "listening on ADDR" banner, and the banner.
pub fn listening(out: &mut impl std::io::BufRead) -> (SocketAddr, String) {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in first line: {line:?}"));
    (addr, line)
}

/// [`unused_addr`]'s port on 127.0.0.1.
pub fn unused_port() -> u16 {
    unused_addr("127.0.0.1").port()
}

/// Reads the port a helper script prints on its first line.
pub fn listening_port(r: &mut impl std::io::BufRead) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a port: {line:?}"))
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

/// Each `(args, needle)` must exit with 2 and print one line, prefixed
/// "udpring: error: ", that contains `needle`.
pub fn assert_usage_errors(cases: &[(&[&str], &str)]) {
    for (args, needle) in cases {
        let (code, _out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: exit code, stderr: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got: {err}"
        );
        assert!(err.contains(needle), "{args:?}: '{needle}' not in: {err}");
        assert!(err.starts_with("udpring: error: "), "{args:?}: {err}");
    }
}

/// `out` as the one JSON document it must be, checked against the
/// vocabulary (tools/udpring/json-vocabulary.json).
pub fn json(out: &str) -> serde_json::Value {
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    vocab::check_any(&v);
    v
}

/// Parses `--json-stream` output: one JSON document per line, each
/// checked against the vocabulary.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(json).collect()
}

/// Runs `udpring ARGS` (which include `--json`), asserts it succeeded,
/// and returns its one JSON document, checked against the vocabulary.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "udpring {args:?}: {err}");
    json(&out)
}

/// The counts named `keys` of a JSON object, for one assertion over many
/// (`None` where a key is missing or not a count).
pub fn counts<const N: usize>(v: &serde_json::Value, keys: [&str; N]) -> [Option<u64>; N] {
    keys.map(|k| v[k].as_u64())
}

/// Sends `sig` to `child`.
pub fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &std::process::Child) {
    signal(child, nix::sys::signal::Signal::SIGTERM);
}

/// Waits (at most 10 s) until some socket is bound to UDP `port`, as
/// /proc/net/udp and udp6 list them: a peer that prints nothing when it
/// is ready is ready then. Reading the tables takes no port from it (a
/// probing bind could).
pub fn wait_udp_bound(port: u16) {
    let start = std::time::Instant::now();
    let bound = || {
        // thread-self: the tables of this thread's network namespace (one
        // entered by setns, in the netns tests), not the process's.
        ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
            .iter()
            .any(|t| {
                std::fs::read_to_string(t)
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .any(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|local| local.rsplit(':').next())
                            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                            == Some(port)
                    })
            })
    };
    while !bound() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "nothing bound UDP port {port} in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits at most `limit` for `child` to end; panics (having killed it)
/// when it does not: a hang. Returns its status and how long it took.
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> (std::process::ExitStatus, std::time::Duration) {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A background `udpring ARGS` that first says "listening on ADDR" (on
/// standard error with `--json`, else on standard output). Both streams
/// are read as it runs (a command whose reader goes away stops); killed
/// and reaped on drop.
pub struct Server {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Its first line, which names `addr`.
    pub banner: String,
    out: Collected,
    err: Collected,
}

/// A stream read to its end on a thread of its own, line by line, what it
/// said so far readable at any time.
struct Collected {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn collect(r: impl std::io::Read + Send + 'static) -> Collected {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let t = text.clone();
    let reader = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(r);
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut r, &mut line).is_ok_and(|n| n > 0) {
            t.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    Collected {
        text,
        reader: Some(reader),
    }
}

impl Collected {
    fn now(&self) -> String {
        self.text.lock().unwrap().clone()
    }
    fn finish(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.now()
    }
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = udpring()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let json_out = args.iter().any(|a| *a == "--json" || *a == "--json-stream");
        let ((addr, banner), out, err) = if json_out {
            let mut r = std::io::BufReader::new(err);
            (listening(&mut r), collect(out), collect(r))
        } else {
            let mut r = std::io::BufReader::new(out);
            (listening(&mut r), collect(r), collect(err))
        };
        Server {
            child,
            addr,
            banner,
            out,
            err,
        }
    }

    /// `udpring echo` on 127.0.0.1 (one worker, quiet, 30 s at most).
    pub fn echo() -> Server {
        Server::start(&[
            "echo",
            "--bind",
            "127.0.0.1:0",
            "-w",
            "1",
            "-q",
            "--duration",
            "30",
        ])
    }

    /// What it said on standard error so far (after its banner, with
    /// `--json`).
    pub fn seen_err(&self) -> String {
        self.err.now()
    }

    /// Waits for its end (it was given a duration): exit code, the rest
    /// of standard output, standard error.
    pub fn finish(mut self) -> (i32, String, String) {
        let status = self.child.wait().unwrap();
        let out = self.out.finish();
        let err = self.err.finish();
        (status.code().unwrap_or(-1), out, err)
    }

    /// Waits for its end and returns its one JSON document (checked
    /// against the vocabulary); it must have succeeded.
    pub fn json(self) -> serde_json::Value {
        let (code, out, err) = self.finish();
        assert_eq!(code, 0, "{err}");
        json(&out)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python 3 script, run with `args`: its output. The caller has checked
/// `have("python3")`.
pub fn python(script: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3")
}

/// A UDP responder in Python on 127.0.0.1: for each request `q` from `a`
/// it runs `body` (Python, indented by 4, with `s` the socket); it stops
/// after 10 s without a request, or when dropped. Its address.
pub struct PyResponder {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl PyResponder {
    pub fn start(body: &str) -> PyResponder {
        let script = format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind((\"127.0.0.1\", 0))\n\
             print(s.getsockname()[1], flush=True)\n\
             s.settimeout(10)\n\
             while True:\n\
             \x20   try:\n\
             \x20       q, a = s.recvfrom(65536)\n\
             \x20   except socket.timeout:\n\
             \x20       break\n\
             {body}\n"
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let port = listening_port(&mut std::io::BufReader::new(child.stdout.take().unwrap()));
        PyResponder {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for PyResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command line's words: `words("echo --bind 127.0.0.1:0 -q")`, or
/// with values, `words(&format!("load {target} -n 400 --json"))`.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A finished command's standard output as its one JSON document (checked
/// against the vocabulary); it must have succeeded.
pub fn ok_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

/// A scratch folder in the temporary directory, removed on drop.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("udpring-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    /// `name` inside it, as a string (for arguments).
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed and reaped on drop, with a directory removed.
pub struct Peer(pub std::process::Child, pub Option<std::path::PathBuf>);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(d) = &self.1 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The kernel's packet counters of this network namespace
/// (`/proc/net/snmp` and `snmp6` as `Udp:NoPorts`, `Icmp6OutDestUnreachs`,
/// and `softnet:dropped`, the backlog's drops over all CPUs): to say in a
/// failure where a datagram the test expected went.
pub fn kernel_counters() -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = snmp.lines().collect();
    for pair in lines.chunks(2) {
        if let [names, values] = pair {
            let (proto, names) = names.split_once(' ').unwrap_or_default();
            let values = values.split_whitespace().skip(1);
            for (n, v) in names.split_whitespace().zip(values) {
                m.insert(format!("{proto}{n}"), v.parse().unwrap_or(0));
            }
        }
    }
    for l in std::fs::read_to_string("/proc/net/snmp6")
        .unwrap_or_default()
        .lines()
    {
        if let Some((n, v)) = l.split_once(char::is_whitespace) {
            m.insert(n.to_string(), v.trim().parse().unwrap_or(0));
        }
    }
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    let dropped = softnet
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum();
    m.insert("softnet:dropped".into(), dropped);
    m
}

/// The counters that moved between two [`kernel_counters`] snapshots.
pub fn counters_moved(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> String {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.wrapping_sub(*before.get(k).unwrap_or(&0));
            (d != 0).then(|| format!("{k} +{d}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
