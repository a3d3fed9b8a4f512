//! The XDP program on one interface, shared by the workers: which
//! interface, loaded and attached once per engine, detached when the
//! engine (or the process) ends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use crate::config::Config;
use crate::sys;
use crate::sys::xdp::XdpMode;
use crate::sys::xdp::bpf::{self, Match};
use crate::sys::xdp::netlink::{LinkInfo, Netlink};

/// The program attached to one interface, shared by the workers.
pub(crate) struct XdpAttach {
    /// The interface.
    pub ifindex: u32,
    /// Its name.
    pub iface: String,
    /// Its MAC address, MTU and receive queues.
    pub link: LinkInfo,
    /// Where the program runs.
    pub mode: XdpMode,
    /// What did not go as asked (generic mode, copy mode), for the user.
    pub notes: Mutex<Vec<String>>,
    pub(super) map: OwnedFd,
    _prog: OwnedFd,
    /// Closing it detaches the program.
    _link: OwnedFd,
}

pub(super) fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                " (the xdp backend needs root: CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW)"
            }
            Some(libc::EAFNOSUPPORT) => " (this kernel has no AF_XDP sockets: CONFIG_XDP_SOCKETS)",
            Some(libc::ENOSYS) => " (this kernel has no bpf(2))",
            Some(libc::EBUSY) | Some(libc::EEXIST) => {
                " (an XDP program is attached there already, another udpring's or the \
                 system's, and udpring does not replace one: `ip link show` names it; one \
                 xdp engine per interface)"
            }
            _ => "",
        };
        io::Error::new(e.kind(), format!("xdp backend: {what}: {e}{hint}"))
    }
}

/// The interface a socket bound to `bind` receives on, by `cfg.xdp_iface`
/// or the address's own interface.
fn interface_of(cfg: &Config, bind: SocketAddr) -> io::Result<(u32, String)> {
    if let Some(name) = &cfg.xdp_iface {
        let i = sys::mcast::if_index(name)
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("xdp backend: {e}")))?;
        return Ok((i, name.clone()));
    }
    let ip = sys::canonical_ip(bind.ip());
    if ip.is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "xdp backend: {bind} is a wildcard address, which names no interface: \
                 bind an address of the interface, or name it (--iface, Config::xdp_iface)"
            ),
        ));
    }
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let found = sa
            .as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| sa.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())));
        if found == Some(ip) {
            let i = sys::mcast::if_index(&a.interface_name)
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
            return Ok((i, a.interface_name));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("xdp backend: no interface has the address {ip}; name one with --iface"),
    ))
}

/// The receive queues of the interface the xdp backend would attach to.
pub(crate) fn queues(cfg: &Config) -> io::Result<u32> {
    let (ifindex, _) = interface_of(cfg, cfg.bind)?;
    Netlink::new()
        .and_then(|mut n| n.link(ifindex))
        .map(|l| l.rx_queues)
        .map_err(context("reading the interface"))
}

impl XdpAttach {
    /// Loads the program for `bind` and attaches it to its interface.
    /// `v6only`: an IPv6 wildcard socket that does not take IPv4.
    pub fn attach(cfg: &Config, bind: SocketAddr, v6only: bool) -> io::Result<XdpAttach> {
        let (ifindex, iface) = interface_of(cfg, bind)?;
        if ifindex == 1 || iface == "lo" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "xdp backend: loopback has no receive queue for an AF_XDP socket; \
                 use an interface (a veth pair, a NIC)",
            ));
        }
        let link = Netlink::new()
            .and_then(|mut n| n.link(ifindex))
            .map_err(context("reading the interface"))?;
        let map = bpf::xskmap(link.rx_queues).map_err(context("creating the XSKMAP"))?;
        let prog = bpf::load_xdp(&bpf::port_filter(&Match::of(bind, v6only), map.as_raw_fd()))
            .map_err(context("loading the program"))?;
        let (l, mode, why) = bpf::attach(&prog, ifindex, cfg.xdp_mode)
            .map_err(context(&format!("attaching the program to {iface}")))?;
        let notes = why
            .map(|w| format!("{iface}: generic XDP: {w}"))
            .into_iter()
            .collect();
        Ok(XdpAttach {
            ifindex,
            iface,
            link,
            mode,
            notes: Mutex::new(notes),
            map,
            _prog: prog,
            _link: l,
        })
    }

    pub(super) fn note(&self, s: String) {
        if let Ok(mut n) = self.notes.lock()
            && !n.contains(&s)
        {
            n.push(s);
        }
    }
}
