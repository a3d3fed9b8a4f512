//! The topologies of tools/netns.sh, built and torn down per test, and the
//! ways a test runs things inside their namespaces.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

/// `topology!(lan, "tag")`: the topology for a test, or `return` from
/// the test (having said why) when this process cannot build one.
#[macro_export]
macro_rules! topology {
    ($kind:ident, $tag:expr) => {
        match $crate::topo::Topology::$kind($tag) {
            Some(t) => t,
            None => return,
        }
    };
}

/// A topology, torn down on drop.
pub struct Topology {
    pub name: String,
}

impl Topology {
    /// Builds the PMTU topology, or returns None (having said why) when this
    /// process cannot.
    pub fn pmtu(tag: &str) -> Option<Topology> {
        Topology::build("pmtu-up", tag)
    }

    /// Builds the LAN (h1, h2, h3 on a bridge; h1, h3 on a second one).
    pub fn lan(tag: &str) -> Option<Topology> {
        Topology::build("lan-up", tag)
    }

    /// Builds hosts A and B on one veth pair with one queue per end,
    /// checksum offload and UDP segmentation off (tools/netns.sh xdp-up).
    pub fn xdp(tag: &str) -> Option<Topology> {
        Topology::build("xdp-up", tag)
    }

    /// [`Topology::xdp`] with two queues per end.
    pub fn xdp2(tag: &str) -> Option<Topology> {
        Topology::build_env("xdp-up", tag, &[("XDP_QUEUES", "2")])
    }

    fn build(kind: &str, tag: &str) -> Option<Topology> {
        Topology::build_env(kind, tag, &[])
    }

    fn build_env(kind: &str, tag: &str, env: &[(&str, &str)]) -> Option<Topology> {
        let require = std::env::var("UDPRING_REQUIRE_NETNS").as_deref() == Ok("1");
        if !nix::unistd::geteuid().is_root() {
            assert!(!require, "UDPRING_REQUIRE_NETNS=1 but not root");
            eprintln!("skipping: network namespace tests need root (not root)");
            return None;
        }
        let name = format!("ur{}{tag}", std::process::id() % 100_000);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../netns.sh");
        let _ = Command::new("bash").args([script, "down", &name]).status();
        let out = Command::new("bash")
            .args([script, kind, &name])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let topo = Topology { name };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !require,
                "UDPRING_REQUIRE_NETNS=1 but the topology failed: {err}"
            );
            eprintln!("skipping: could not build the topology: {err}");
            return None;
        }
        Some(topo)
    }

    /// Runs `f` on a thread inside namespace `ns` (a, r or b); threads it
    /// starts (engine workers) are in that namespace too.
    pub fn run_in<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}-{ns}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// Waits (at most 10 s each) until something in `ns` has UDP port
    /// `port` bound and, with `group`, joined that IPv4 group: for peers
    /// that say nothing when they are ready (Twisted's programs), where a
    /// fixed sleep did not hold on a loaded 2-core box.
    pub fn wait_ready(&self, ns: &str, port: u16, group: Option<std::net::Ipv4Addr>) {
        self.run_in(ns, move || {
            crate::util::wait_udp_bound(port);
            let Some(g) = group else { return };
            // /proc's igmp table prints a group as its address read as a
            // native (little-endian) u32.
            let hex = format!("{:08X}", u32::from_le_bytes(g.octets()));
            let start = std::time::Instant::now();
            while !std::fs::read_to_string("/proc/thread-self/net/igmp")
                .unwrap_or_default()
                .split_whitespace()
                .any(|w| w == hex)
            {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "nothing joined {g} in 10 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
    }

    /// `PROGRAM` (arguments to follow) as a command that runs inside
    /// namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{ns}", self.name), program]);
        c
    }

    /// `udpring ARGS` as a command that runs inside namespace `ns`.
    pub fn command(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = self.exec(ns, env!("CARGO_BIN_EXE_udpring"));
        c.args(args);
        c
    }

    /// Runs `udpring ARGS` inside namespace `ns` and waits for it.
    pub fn udpring(&self, ns: &str, args: &[&str]) -> std::process::Output {
        self.command(ns, args).output().unwrap()
    }

    /// Starts `udpring ARGS` in namespace `ns` in the background. With
    /// `--json` the banner goes to stderr (stdout is JSON only), so stderr
    /// is piped too.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> KillOnDrop {
        let json = args.contains(&"--json");
        let child = self
            .command(ns, args)
            .stdout(Stdio::piped())
            .stderr(if json { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }

    /// Starts `udpring mcast ...` (listen, pong) in `ns` and waits until
    /// it says it started (`udpring mcast KIND: GROUP (local ...)` on
    /// stderr): by then its socket is bound and joined, so nothing sent
    /// after this returns arrives before it listens (a fixed sleep did
    /// not hold on a loaded 2-core box).
    pub fn mcast(&self, ns: &str, args: &[&str]) -> KillOnDrop {
        let mut k = KillOnDrop(
            self.command(ns, args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut said = String::new();
        loop {
            let Some(l) = read_line(k.0.stderr.as_mut().unwrap()) else {
                panic!("{args:?} ended before it started: {said}");
            };
            said.push_str(&l);
            said.push('\n');
            if l.starts_with("udpring mcast ") && l.contains(" (local ") {
                return k;
            }
        }
    }

    /// Starts `udpring ARGS` in `ns` and waits until it says it listens
    /// (on stdout, or on stderr with `--json`).
    pub fn server(&self, ns: &str, args: &[&str]) -> KillOnDrop {
        self.server_noted(ns, args).0
    }

    /// [`Topology::server`], also returning the notes printed before the
    /// banner (`udpring: note: ...`) and the banner, one per line.
    pub fn server_noted(&self, ns: &str, args: &[&str]) -> (KillOnDrop, String) {
        let mut k = self.spawn(ns, args);
        let mut notes = String::new();
        let json = args.contains(&"--json");
        // Read one byte at a time so nothing past the banner is buffered away.
        let mut line = String::new();
        loop {
            line.clear();
            let mut byte = [0u8; 1];
            loop {
                let n = if json {
                    std::io::Read::read(k.0.stderr.as_mut().unwrap(), &mut byte)
                } else {
                    std::io::Read::read(k.0.stdout.as_mut().unwrap(), &mut byte)
                }
                .unwrap();
                if n == 0 || byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0] as char);
            }
            if line.starts_with("udpring: note:") {
                notes.push_str(&line);
                notes.push('\n');
                continue;
            }
            break;
        }
        assert!(line.contains("listening on"), "{args:?}: {notes}{line}");
        notes.push_str(&line);
        (k, notes)
    }

    /// Starts `udpring echo` on [::]:7007 in B (IPv4 and IPv6) until dropped.
    pub fn echo_in_b(&self) -> KillOnDrop {
        let child = self
            .command(
                "b",
                &[
                    "echo",
                    "--bind",
                    "[::]:7007",
                    "--workers",
                    "1",
                    "-q",
                    "--duration",
                    "60",
                ],
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{line}");
        child
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../netns.sh");
        let _ = Command::new("bash")
            .args([script, "down", &self.name])
            .status();
    }
}

/// Taken by the tests that send a paced flow of thousands of datagrams a
/// second and count what arrived, for as long as they run: two at once on
/// a 2-core box share it with four busy processes, and a receiver left
/// waiting for a CPU overflows (a congested-link echo once lost 12% so).
pub fn paced_flow() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed holding it leaves it poisoned, not unusable.
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process, killed on drop.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Waits for the process to end by itself and returns its output.
    pub fn finish(mut self) -> std::process::Output {
        let child = std::mem::replace(
            &mut self.0,
            Command::new("true").spawn().expect("spawn true"),
        );
        child.wait_with_output().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One line from a child's pipe, without its newline (None at the end),
/// read a byte at a time so that nothing after it is taken from the pipe.
pub fn read_line(r: &mut impl std::io::Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte).unwrap() == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

/// A command's standard output, parsed as one JSON document.
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    crate::util::vocab::check_any(&v);
    v
}

/// Sends one UDP datagram with a forged source from a raw socket
/// (`IPPROTO_RAW`: the test writes the IPv4 header; the kernel fills in
/// the header checksum). Must run inside the namespace (see `run_in`).
pub fn forge_udp4(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, payload: &[u8]) {
    use socket2::{Domain, Protocol, Socket, Type};
    let raw = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("a raw socket (root, inside the test's namespace)");
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, libc::IPPROTO_UDP as u8, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    p.extend_from_slice(payload);
    raw.send_to(&p, &std::net::SocketAddr::V4(dst).into())
        .expect("send the forged datagram");
}

/// Sends one UDP datagram from port `src_port` of this host (the kernel
/// picks the source address by route) to `dst`, from a raw socket: a
/// datagram "from" a port a server holds, which no UDP socket could send.
/// IPv4 or IPv6 (the kernel computes the IPv6 UDP checksum). Must run
/// inside the namespace (see `run_in`).
pub fn forge_from_port(src_port: u16, dst: std::net::SocketAddr, payload: &[u8]) {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if dst.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let raw = Socket::new(domain, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (root, inside the test's namespace)");
    if dst.is_ipv6() {
        // IPV6_CHECKSUM: the kernel fills the UDP checksum at offset 6.
        let off: libc::c_int = 6;
        // SAFETY: a valid descriptor and a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&raw),
                libc::IPPROTO_IPV6,
                libc::IPV6_CHECKSUM,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "IPV6_CHECKSUM");
    }
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // A raw socket's destination port must be 0 (or its protocol).
    let to = std::net::SocketAddr::new(dst.ip(), 0);
    raw.send_to(&p, &to.into())
        .expect("send the forged datagram");
}

/// The UDP counters of `/proc/net/snmp` as the calling thread's network
/// namespace sees them (`/proc/thread-self`: run inside `run_in`).
pub fn udp_snmp() -> std::collections::HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    lines[0]
        .split_whitespace()
        .zip(lines[1].split_whitespace())
        .skip(1)
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// Runs a shell command inside namespace `ns` (e.g. `tc`), failing the
/// test if it fails.
pub fn sh_in(topo: &Topology, ns: &str, cmd: &str) {
    let ok = topo
        .exec(ns, "sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "in {ns}: {cmd}");
}
