//! The XDP program: a port filter assembled here, instruction by
//! instruction, and loaded with `bpf(2)`. No compiler, libbpf or object file
//! is involved: the build stays `cargo build`.
//!
//! The program redirects a frame into the XSKMAP entry of the receive queue
//! it arrived on when it is UDP to one of the given ports, over IPv4
//! (without options, not a fragment) or IPv6 (UDP as the first next
//! header), after an Ethernet header and at most one VLAN tag. Everything
//! else is passed to the kernel: ARP, ICMP, other ports, IPv4 with options,
//! fragments, IPv6 extension headers. A queue without a socket in the map
//! passes too (`bpf_redirect_map`'s fallback action).
//!
//! It is attached through a BPF link: closing the link's descriptor (the
//! process ending, however it ends) detaches it, so nothing stays behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `bpf(2)` commands.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `link_create` flags: the driver's own hook, or the generic one.
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
/// `bpf_redirect_map`.
const HELPER_REDIRECT_MAP: i32 = 51;
/// XDP verdict: hand the frame to the kernel.
const XDP_PASS: i32 = 2;

/// `union bpf_attr`, zero-padded: every command reads its fields from here.
#[repr(C, align(8))]
struct Attr([u8; 160]);

impl Attr {
    fn new() -> Self {
        Attr([0; 160])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

/// Calls `bpf(cmd, attr)`; a non-negative result is a descriptor or zero.
fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live 160-byte buffer, the size passed; the pointers
    // inside it (set by the callers) point to memory that outlives the call.
    // The kernel copies what it needs and keeps no pointer into it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_of(r: libc::c_long) -> OwnedFd {
    // SAFETY: `bpf` returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// One eBPF instruction: opcode, registers (dst in the low nibble), offset,
/// immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Registers by name.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;

/// A jump's target, resolved when the program is finished.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Pass,
    NoVlan,
    V4,
    V6,
    Port,
    Redirect,
}

/// A tiny assembler: instructions, with jumps to labels patched at the end.
struct Asm {
    insns: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn new() -> Self {
        Asm {
            insns: Vec::new(),
            jumps: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        });
    }
    fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }
    /// dst = imm (64-bit).
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.raw(0xb7, dst, 0, 0, imm);
    }
    /// dst = src (64-bit).
    fn mov(&mut self, dst: u8, src: u8) {
        self.raw(0xbf, dst, src, 0, 0);
    }
    /// dst += imm.
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.raw(0x07, dst, 0, 0, imm);
    }
    /// dst += src.
    fn add(&mut self, dst: u8, src: u8) {
        self.raw(0x0f, dst, src, 0, 0);
    }
    /// dst &= imm.
    fn and_imm(&mut self, dst: u8, imm: i32) {
        self.raw(0x57, dst, 0, 0, imm);
    }
    /// dst = *(u32 *)(src + off).
    fn ldx_w(&mut self, dst: u8, src: u8, off: i16) {
        self.raw(0x61, dst, src, off, 0);
    }
    /// dst = *(u16 *)(src + off).
    fn ldx_h(&mut self, dst: u8, src: u8, off: i16) {
        self.raw(0x69, dst, src, off, 0);
    }
    /// dst = *(u8 *)(src + off).
    fn ldx_b(&mut self, dst: u8, src: u8, off: i16) {
        self.raw(0x71, dst, src, off, 0);
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.raw(code, dst, src, 0, imm);
    }
    /// if dst == imm goto.
    fn jeq_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.jump(0x15, dst, 0, imm, to);
    }
    /// if dst != imm goto.
    fn jne_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.jump(0x55, dst, 0, imm, to);
    }
    /// if (u32)dst != imm goto (a 32-bit compare: no sign extension).
    fn jne32_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.jump(0x56, dst, 0, imm, to);
    }
    /// if dst > src goto (unsigned).
    fn jgt(&mut self, dst: u8, src: u8, to: Label) {
        self.jump(0x2d, dst, src, 0, to);
    }
    /// goto.
    fn ja(&mut self, to: Label) {
        self.jump(0x05, 0, 0, 0, to);
    }
    /// dst = the map whose descriptor is `fd` (a two-slot `ld_imm64`).
    fn ld_map(&mut self, dst: u8, fd: RawFd) {
        // src_reg 1: BPF_PSEUDO_MAP_FD, the immediate is a map descriptor.
        self.raw(0x18, dst, 1, 0, fd);
        self.raw(0, 0, 0, 0, 0);
    }
    fn call(&mut self, helper: i32) {
        self.raw(0x85, 0, 0, 0, helper);
    }
    fn exit(&mut self) {
        self.raw(0x95, 0, 0, 0, 0);
    }
    /// Checks that `need` bytes from the packet pointer `base` are inside
    /// the frame (`r3` holds `data_end`); clobbers `r4`.
    fn bound(&mut self, base: u8, need: i32) {
        self.mov(R4, base);
        self.add_imm(R4, need);
        self.jgt(R4, R3, Label::Pass);
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, to) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|&(_, i)| i)
                .expect("every label used is placed");
            // Offsets count from the instruction after the jump.
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}

/// A 16-bit value as a little-endian load of its network-order bytes reads it.
fn be16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// What the program redirects: UDP to `port`, over the families asked, to
/// the address given (a wildcard bind: any address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// The destination port.
    pub port: u16,
    /// IPv4: `None` not at all, `Some(None)` to any address.
    pub v4: Option<Option<std::net::Ipv4Addr>>,
    /// IPv6: likewise.
    pub v6: Option<Option<std::net::Ipv6Addr>>,
}

impl Match {
    /// What a socket bound to `bind` receives (`v6only`: an IPv6 wildcard
    /// without IPv4).
    pub fn of(bind: std::net::SocketAddr, v6only: bool) -> Match {
        use std::net::SocketAddr::{V4, V6};
        let port = bind.port();
        match bind {
            V4(a) if a.ip().is_unspecified() => Match {
                port,
                v4: Some(None),
                v6: None,
            },
            V4(a) => Match {
                port,
                v4: Some(Some(*a.ip())),
                v6: None,
            },
            V6(a) if a.ip().is_unspecified() => Match {
                port,
                v4: (!v6only).then_some(None),
                v6: Some(None),
            },
            V6(a) => match a.ip().to_ipv4_mapped() {
                Some(m) => Match {
                    port,
                    v4: Some(Some(m)),
                    v6: None,
                },
                None => Match {
                    port,
                    v4: None,
                    v6: Some(Some(*a.ip())),
                },
            },
        }
    }
}

/// A 32-bit word of an address as a little-endian load of its bytes reads it.
fn word(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// The port filter (see the module doc) for `m`, redirecting into the
/// XSKMAP `map`.
pub(crate) fn port_filter(m: &Match, map: RawFd) -> Vec<Insn> {
    let mut a = Asm::new();
    a.mov(R6, R1);
    a.ldx_w(R2, R1, 0); // data
    a.ldx_w(R3, R1, 4); // data_end
    a.bound(R2, 14);
    a.ldx_h(R5, R2, 12); // EtherType
    a.mov_imm(R7, 14);
    a.jne_imm(R5, be16(0x8100), Label::NoVlan);
    a.bound(R2, 18);
    a.ldx_h(R5, R2, 16); // the tagged frame's EtherType
    a.mov_imm(R7, 18);
    a.label(Label::NoVlan);
    a.add(R2, R7); // r2: the IP header
    if m.v4.is_some() {
        a.jeq_imm(R5, be16(0x0800), Label::V4);
    }
    if m.v6.is_some() {
        a.jeq_imm(R5, be16(0x86dd), Label::V6);
    }
    a.ja(Label::Pass);

    if m.v4.is_some() {
        a.label(Label::V4);
        a.bound(R2, 28);
        if let Some(Some(ip)) = m.v4 {
            a.ldx_w(R5, R2, 16);
            a.jne32_imm(R5, word(&ip.octets()), Label::Pass);
        }
        a.ldx_b(R5, R2, 0);
        a.jne_imm(R5, 0x45, Label::Pass); // IPv4 without options
        a.ldx_b(R5, R2, 9);
        a.jne_imm(R5, 17, Label::Pass); // UDP
        a.ldx_h(R5, R2, 6);
        a.and_imm(R5, be16(0x3fff)); // more-fragments or an offset: a fragment
        a.jne_imm(R5, 0, Label::Pass);
        a.ldx_h(R5, R2, 22); // destination port
        a.ja(Label::Port);
    }
    if m.v6.is_some() {
        a.label(Label::V6);
        a.bound(R2, 48);
        if let Some(Some(ip)) = m.v6 {
            let o = ip.octets();
            for k in 0..4 {
                a.ldx_w(R5, R2, 24 + 4 * k as i16);
                a.jne32_imm(R5, word(&o[4 * k..4 * k + 4]), Label::Pass);
            }
        }
        a.ldx_b(R5, R2, 6);
        a.jne_imm(R5, 17, Label::Pass); // UDP right after the fixed header
        a.ldx_h(R5, R2, 42);
    }
    a.label(Label::Port);
    a.jeq_imm(R5, be16(m.port), Label::Redirect);
    a.ja(Label::Pass);

    a.label(Label::Redirect);
    a.ldx_w(R2, R6, 16); // rx_queue_index
    a.ld_map(R1, map);
    a.mov_imm(R3, XDP_PASS); // when the queue has no socket
    a.call(HELPER_REDIRECT_MAP);
    a.exit();

    a.label(Label::Pass);
    a.mov_imm(R0, XDP_PASS);
    a.exit();
    a.finish()
}

/// An XSKMAP of `entries` receive queues.
pub(crate) fn xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, BPF_MAP_TYPE_XSKMAP)
        .u32(4, 4)
        .u32(8, 4)
        .u32(12, entries);
    bpf(BPF_MAP_CREATE, &mut attr).map(fd_of)
}

/// Puts the AF_XDP socket `xsk` at `queue` in the XSKMAP `map`.
pub(crate) fn xskmap_set(map: &OwnedFd, queue: u32, xsk: RawFd) -> io::Result<()> {
    let key = queue;
    let value: u32 = xsk as u32;
    let mut attr = Attr::new();
    attr.u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, &value as *const u32 as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Loads `insns` as an XDP program. On a refusal the error carries the
/// verifier's log.
pub(crate) fn load_xdp(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"GPL"; // bpf_redirect_map is offered to GPL programs
    let mut log = vec![0u8; 64 * 1024];
    let name = b"udpring_ports\0";
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    attr.0[48..48 + name.len()].copy_from_slice(name);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd_of(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(io::Error::new(
                e.kind(),
                format!(
                    "loading the XDP program: {e}; the verifier: {}",
                    tail.join(" | ")
                ),
            ))
        }
    }
}

/// Where the program runs: the driver's own hook, or the generic one (in
/// the kernel's receive path, after an skb is built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// The driver runs the program (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// The kernel runs it for drivers without XDP (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl XdpMode {
    /// `native` or `generic`.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// Attaches `prog` to interface `ifindex` through a link, in the driver's
/// hook if it has one, else the generic hook. Returns the link (closing it
/// detaches the program), the mode, and why not native when it fell back.
pub(crate) fn attach(
    prog: &OwnedFd,
    ifindex: u32,
    mode: Option<XdpMode>,
) -> io::Result<(OwnedFd, XdpMode, Option<String>)> {
    let link = |flags: u32| {
        let mut attr = Attr::new();
        attr.u32(0, prog.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, BPF_XDP)
            .u32(12, flags);
        bpf(BPF_LINK_CREATE, &mut attr).map(fd_of)
    };
    match mode {
        Some(XdpMode::Native) => link(XDP_FLAGS_DRV_MODE).map(|l| (l, XdpMode::Native, None)),
        Some(XdpMode::Generic) => link(XDP_FLAGS_SKB_MODE).map(|l| (l, XdpMode::Generic, None)),
        None => match link(XDP_FLAGS_DRV_MODE) {
            Ok(l) => Ok((l, XdpMode::Native, None)),
            Err(native) => link(XDP_FLAGS_SKB_MODE).map(|l| {
                (
                    l,
                    XdpMode::Generic,
                    Some(format!("the driver has no XDP hook ({native})")),
                )
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_filter_jumps_land_inside_and_every_path_exits() {
        let any = Match::of("[::]:9000".parse().unwrap(), false);
        assert_eq!((any.v4, any.v6), (Some(None), Some(None)));
        let one = Match::of("10.0.0.2:53".parse().unwrap(), false);
        assert_eq!((one.v4, one.v6), (Some(Some([10, 0, 0, 2].into())), None));
        let p = port_filter(&any, 3);
        let q = port_filter(&one, 3);
        assert!(
            q.iter()
                .any(|i| i.code == 0x56 && i.imm == word(&[10, 0, 0, 2]))
        );
        assert!(
            !q.iter().any(|i| i.code == 0x15 && i.imm == be16(0x86dd)),
            "no IPv6"
        );
        for prog in [&p, &q] {
            for (i, insn) in prog.iter().enumerate() {
                if matches!(insn.code, 0x05 | 0x15 | 0x55 | 0x56 | 0x2d) {
                    let t = i as isize + 1 + insn.off as isize;
                    assert!(
                        t > i as isize && (t as usize) < prog.len(),
                        "jump {i} to {t}"
                    );
                }
            }
            assert_eq!(prog.last().unwrap().code, 0x95, "ends in exit");
            // The map reference is a pseudo map-fd ld_imm64 and its second half.
            let at = prog.iter().position(|i| i.code == 0x18).unwrap();
            assert_eq!((prog[at].regs >> 4, prog[at].imm), (1, 3));
            assert_eq!(
                prog[at + 1],
                Insn {
                    code: 0,
                    regs: 0,
                    off: 0,
                    imm: 0
                }
            );
        }
        // Ports are compared in network order as a 16-bit load reads them.
        assert!(p.iter().any(|i| i.code == 0x15 && i.imm == be16(9000)));
        assert!(q.iter().any(|i| i.code == 0x15 && i.imm == be16(53)));
    }

    #[test]
    fn port_filter_passes_the_kernel_verifier_in_every_shape() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("UDPRING_REQUIRE_NETNS").as_deref() != Ok("1"),
                "UDPRING_REQUIRE_NETNS=1 but not root"
            );
            eprintln!("skipping: loading a BPF program needs root");
            return;
        }
        let map = xskmap(4).unwrap();
        for (bind, v6only) in [
            ("0.0.0.0:9000", false),
            ("10.0.0.2:9000", false),
            ("192.168.200.250:1", false),
            ("[::]:9000", false),
            ("[::]:9000", true),
            ("[fd00::ff:2]:53", false),
            ("[::ffff:10.0.0.2]:53", false),
        ] {
            let m = Match::of(bind.parse().unwrap(), v6only);
            load_xdp(&port_filter(&m, map.as_raw_fd())).unwrap_or_else(|e| panic!("{bind}: {e}"));
        }
    }
}
