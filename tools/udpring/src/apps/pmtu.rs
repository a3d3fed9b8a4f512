//! `udpring pmtu`: path MTU discovery by two methods.
//!
//! - **ICMP** (like tracepath): probes leave with don't-fragment
//!   (`IP_PMTUDISC_DO`); a router that cannot forward one answers
//!   "fragmentation needed" / "packet too big" with its MTU, which arrives
//!   in the socket error queue (and in `IP_MTU`); the probe is retried at
//!   that size. A probe counts as through when the target answers it: an
//!   echo, or "port unreachable" from the target itself. If neither an
//!   answer nor an ICMP error comes back, the method cannot tell (routers
//!   that drop ICMP make a black hole) and says so instead of guessing.
//! - **Packetization layer** (in the spirit of RFC 8899, DPLPMTUD): probes
//!   go out with `IP_PMTUDISC_PROBE` (don't fragment, ignore what ICMP
//!   taught the kernel) and pass only when an echo server returns them.
//!   Binary search between a floor known to work (1280 for IPv6, a
//!   configured floor for IPv4) and the interface MTU, each size tried a few
//!   times so that a lost probe is not taken for too big. Needs an echo at
//!   the target; does not need ICMP.
//!
//! Sizes are IP packet sizes (payload + 28 bytes for IPv4, + 48 for IPv6),
//! as tracepath prints them.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;

use std::time::{Duration, Instant};
use udpring::ErrorEvent;

use crate::apps::header::{HEADER_LEN, Header};

/// Which method to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// ICMP-driven, like tracepath.
    Icmp,
    /// Packetization layer: echoes decide.
    Plpmtud,
    /// ICMP first; if it cannot tell, packetization layer.
    Auto,
}

impl Method {
    /// The name the command line takes and JSON writes: `icmp`, `plpmtud`,
    /// `auto`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Icmp => "icmp",
            Method::Plpmtud => "plpmtud",
            Method::Auto => "auto",
        }
    }
}

/// Options.
#[derive(Clone, Debug)]
pub struct PmtuOpts {
    /// The target (an echo server for `Plpmtud`).
    pub target: SocketAddr,
    /// Method.
    pub method: Method,
    /// How long to wait for an answer to one probe.
    pub timeout: Duration,
    /// Tries per size before a size counts as too big (or, for ICMP, as
    /// unanswered).
    pub tries: u32,
    /// IPv4 floor for the packetization method (IPv6 always uses 1280).
    pub floor_v4: u32,
}

impl PmtuOpts {
    /// Defaults: auto, 300 ms per probe, 3 tries, IPv4 floor 1200
    /// (RFC 8899's BASE_PLPMTU).
    pub fn new(target: SocketAddr) -> Self {
        PmtuOpts {
            target,
            method: Method::Auto,
            timeout: Duration::from_millis(300),
            tries: 3,
            floor_v4: 1200,
        }
    }
}

/// The outcome.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PmtuResult {
    /// The path MTU, or `None` when the method used could not tell.
    pub pmtu: Option<u32>,
    /// The method that produced the answer (or last tried).
    pub method: Method,
    /// Probes sent.
    pub probes: u32,
    /// Seconds taken.
    pub duration_s: f64,
    /// Why there is no answer, when there is none.
    pub error: Option<String>,
    /// ICMP answers (errors and refusals) seen.
    pub icmp_seen: u32,
    /// The echo returned probes cut to this many bytes of payload (its
    /// buffer is smaller than the probes): they reached it whole all the
    /// same (IP neither fragments a don't-fragment probe nor cuts one), so
    /// they count as passed; `None` when every echo was whole.
    pub echo_cut_at: Option<u32>,
}

fn overhead(v6: bool) -> u32 {
    if v6 { 48 } else { 28 }
}

/// What came back for one probe.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The target echoed it.
    Through,
    /// The target answered "port unreachable": the probe got there, but
    /// nothing listens.
    Refused,
    /// Too big; the MTU to try next, if the kernel said.
    TooBig(Option<u32>),
    /// Nothing came back in time.
    Silence,
}

struct Prober {
    sock: UdpSocket,
    v6: bool,
    token: u64,
    seq: u64,
    probes: u32,
    icmp_seen: u32,
    /// Shortest cut echo seen (payload bytes).
    cut: Option<u32>,
    buf: Vec<u8>,
}

impl Prober {
    fn new(target: SocketAddr, probe_mode: bool) -> io::Result<Self> {
        let sock = UdpSocket::bind(udpring::os::unspecified_like(target, 0))?;
        let v6 = target.is_ipv6();
        udpring::os::set_recv_errors(&sock, v6)?;
        let mode = if probe_mode {
            udpring::os::PathMtu::Probe
        } else {
            udpring::os::PathMtu::Discover
        };
        udpring::os::set_path_mtu(&sock, v6, mode)?;
        sock.connect(target).map_err(|e| {
            let e = udpring::os::explain_unreachable(target, e);
            io::Error::new(e.kind(), format!("connect to {target}: {e}"))
        })?;
        let token = udpring::random_u64();
        Ok(Prober {
            sock,
            v6: target.is_ipv6(),
            token,
            seq: 0,
            probes: 0,
            icmp_seen: 0,
            cut: None,
            buf: vec![0; 65536],
        })
    }

    /// What the kernel believes the path MTU is now.
    fn kernel_mtu(&self) -> io::Result<u32> {
        udpring::os::path_mtu(&self.sock, self.v6)
    }

    /// Sends one probe of `mtu` bytes (IP size) and waits for its fate.
    fn probe(&mut self, mtu: u32, timeout: Duration) -> io::Result<Answer> {
        let payload = (mtu.saturating_sub(overhead(self.v6)) as usize).max(HEADER_LEN);
        self.seq += 1;
        let seq = self.seq;
        let mut data = vec![0x55u8; payload];
        Header::new_unchecked(&mut data[..]).fill(self.token, 0, seq, 0);
        self.probes += 1;
        if let Err(e) = self.sock.send(&data) {
            return match e.raw_os_error() {
                Some(libc::EMSGSIZE) => {
                    // Refused locally: the kernel knows a smaller MTU.
                    self.drain_errors();
                    Ok(Answer::TooBig(self.kernel_mtu().ok()))
                }
                Some(libc::ECONNREFUSED) => {
                    self.icmp_seen += 1;
                    Ok(Answer::Refused)
                }
                _ => Err(e),
            };
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Answer::Silence);
            }
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut p = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            poll(&mut p, PollTimeout::from(ms)).map_err(io::Error::from)?;
            let revents = p[0].revents().unwrap_or(PollFlags::empty());
            if revents.contains(PollFlags::POLLERR) {
                if let Some(a) = self.drain_errors() {
                    return Ok(a);
                }
                continue;
            }
            if revents.contains(PollFlags::POLLIN) {
                match self.sock.recv(&mut self.buf) {
                    Ok(n) => {
                        if let Ok(h) = Header::new_checked(&self.buf[..n])
                            && h.token() == self.token
                            && h.seq() == seq
                        {
                            // An echo cut short: the server's buffer is
                            // smaller than the probe, which still reached it
                            // whole (a don't-fragment datagram is never
                            // cut on the path). It passed; say so.
                            if n < payload {
                                let n = n as u32;
                                self.cut = Some(self.cut.map_or(n, |c| c.min(n)));
                            }
                            return Ok(Answer::Through);
                        }
                        // An old probe's echo or something else: keep waiting.
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        self.icmp_seen += 1;
                        self.drain_errors();
                        return Ok(Answer::Refused);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                        if let Some(a) = self.drain_errors() {
                            return Ok(a);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        if let Some(a) = self.drain_errors() {
                            return Ok(a);
                        }
                    }
                }
            }
        }
    }

    /// Reads the error queue; returns what the last entry says of the probe.
    fn drain_errors(&mut self) -> Option<Answer> {
        let mut answer = None;
        while let Some(e) = udpring::os::read_error(&self.sock) {
            self.icmp_seen += 1;
            answer = match e {
                ErrorEvent::MessageTooLong { mtu, .. } | ErrorEvent::PacketTooBig { mtu, .. } => {
                    Some(Answer::TooBig(mtu))
                }
                // Port unreachable from the target itself: the probe got there.
                ErrorEvent::ConnectionRefused { .. } => Some(Answer::Refused),
                _ => answer,
            };
        }
        answer
    }
}

/// ICMP-driven: start at what the kernel believes (the interface MTU at
/// first), step down as ICMP says, stop when the target answers.
fn icmp(opts: &PmtuOpts, p: &mut Prober) -> io::Result<Result<u32, String>> {
    let mut mtu = p.kernel_mtu()?;
    let mut silent = 0;
    loop {
        match p.probe(mtu, opts.timeout)? {
            // An echo, or "port unreachable" from the target: it got there.
            Answer::Through | Answer::Refused => return Ok(Ok(mtu)),
            Answer::TooBig(next) => {
                silent = 0;
                let next = next.or_else(|| p.kernel_mtu().ok()).unwrap_or(0);
                if next == 0 || next >= mtu {
                    return Ok(Err(format!(
                        "probe of {mtu} refused, but no smaller MTU was given"
                    )));
                }
                mtu = next;
            }
            Answer::Silence => {
                silent += 1;
                if silent >= opts.tries {
                    return Ok(Err(format!(
                        "no answer and no ICMP error for {} probes of {mtu} bytes: the probes are lost \
                         or ICMP is filtered on the path (a PMTU black hole); cannot tell",
                        opts.tries
                    )));
                }
            }
        }
    }
}

/// Packetization layer: binary search on echoed probes.
fn plpmtud(opts: &PmtuOpts, p: &mut Prober, iface_mtu: u32) -> io::Result<Result<u32, String>> {
    let floor = if p.v6 {
        1280
    } else {
        opts.floor_v4.clamp(68, iface_mtu)
    };
    let mut refused = false;
    let mut passes = |p: &mut Prober, size: u32| -> io::Result<bool> {
        for _ in 0..opts.tries.max(1) {
            match p.probe(size, opts.timeout)? {
                Answer::Through => return Ok(true),
                Answer::Refused => {
                    refused = true;
                    return Ok(false);
                }
                // Said too big (locally, by a cut echo, or by ICMP that
                // slipped through): no point trying the size again.
                Answer::TooBig(_) => return Ok(false),
                Answer::Silence => {}
            }
        }
        Ok(false)
    };
    if !passes(p, floor)? {
        if refused {
            return Ok(Err(format!(
                "{} answered 'port unreachable': nothing listens there; the packetization \
                 method needs an echo server (udpring echo, or any UDP echo)",
                opts.target
            )));
        }
        return Ok(Err(format!(
            "no echo of a {floor}-byte probe: the packetization method needs an echo server at {} \
             (udpring echo, or any UDP echo)",
            opts.target
        )));
    }
    if iface_mtu <= floor {
        return Ok(Ok(floor));
    }
    if passes(p, iface_mtu)? {
        return Ok(Ok(iface_mtu));
    }
    let (mut lo, mut hi) = (floor, iface_mtu);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if passes(p, mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Ok(lo))
}

/// The route's MTU towards the target as the kernel reports it (`IP_MTU`
/// of a connected socket; includes what ICMP has taught it).
fn route_mtu(target: SocketAddr) -> io::Result<u32> {
    let p = Prober::new(target, true)?;
    p.kernel_mtu()
}

/// Finds the path MTU towards `opts.target`.
pub fn discover(opts: &PmtuOpts) -> io::Result<PmtuResult> {
    if opts.target.port() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "port 0: give the target's port",
        ));
    }
    let start = Instant::now();
    let mut probes = 0;
    let mut icmp_seen = 0;
    let finish = |method, r: Result<u32, String>, probes, icmp_seen, cut| PmtuResult {
        pmtu: r.as_ref().ok().copied(),
        method,
        probes,
        duration_s: start.elapsed().as_secs_f64(),
        error: r.err(),
        icmp_seen,
        echo_cut_at: cut,
    };
    if matches!(opts.method, Method::Icmp | Method::Auto) {
        let mut p = Prober::new(opts.target, false)?;
        let r = icmp(opts, &mut p)?;
        probes += p.probes;
        icmp_seen += p.icmp_seen;
        if r.is_ok() || opts.method == Method::Icmp {
            return Ok(finish(Method::Icmp, r, probes, icmp_seen, p.cut));
        }
    }
    // The search's upper bound is the outgoing link's MTU: IP_MTU would
    // report what ICMP has taught the kernel, which this method must not
    // rely on.
    let iface = match local_link_mtu(opts.target) {
        Some(m) => m,
        None => route_mtu(opts.target)?,
    };
    let mut p = Prober::new(opts.target, true)?;
    let r = plpmtud(opts, &mut p, iface)?;
    probes += p.probes;
    icmp_seen += p.icmp_seen;
    Ok(finish(Method::Plpmtud, r, probes, icmp_seen, p.cut))
}

/// The MTU of the interface the route to `target` leaves by.
fn local_link_mtu(target: SocketAddr) -> Option<u32> {
    let s = UdpSocket::bind(udpring::os::unspecified_like(target, 0)).ok()?;
    s.connect(target).ok()?;
    udpring::os::interface_mtu(s.local_addr().ok()?.ip())
}
