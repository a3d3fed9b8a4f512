//! Interface and socket controls on a host with two
//! links (h1 and h3 of the LAN are on br0 by e0 and on br1 by e1):
//! `--bind-device` keeps traffic on the named link, a link-local target
//! takes `%iface`; a host with IPv6 turned off says so when asked to use it.

use std::process::Command;

use crate::topo::{Topology, json_of};

/// A counter of `dev` in namespace `ns` (`tx_packets`, ...).
fn stat(topo: &Topology, ns: &str, dev: &str, what: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{}-{ns}", topo.name)])
        .args(["cat", &format!("/sys/class/net/{dev}/statistics/{what}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn bind_device_keeps_traffic_on_the_named_link_and_link_local_takes_a_scope() {
    let topo = crate::topology!(lan, "sc");
    let _echo = topo.server(
        "h3",
        &crate::util::words("echo --bind [::]:7200 --dual-stack -w 1 -q --duration 20"),
    );
    // To h3's address on br1, bound to e1: it goes, and only by e1.
    let (e0, e1) = (
        stat(&topo, "h1", "e0", "tx_packets"),
        stat(&topo, "h1", "e1", "tx_packets"),
    );
    let out = topo.udpring(
        "h1",
        &crate::util::words(
            "load 10.201.1.3:7200 --bind-device e1 --mode ping -n 50 --warmup 0 --json -q",
        ),
    );
    let v = json_of(&out);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["received"], 50, "{v}");
    let sent_e1 = stat(&topo, "h1", "e1", "tx_packets") - e1;
    let sent_e0 = stat(&topo, "h1", "e0", "tx_packets") - e0;
    assert!(sent_e1 >= 50, "e1 carried {sent_e1}");
    assert!(
        sent_e0 < 5,
        "e0 carried {sent_e0} (neighbour discovery at most)"
    );
    // The same target bound to e0, where that subnet has no route: Linux
    // then takes the destination as on that link (and h3 answers ARP for
    // any of its addresses), so the datagrams leave by e0, not by the e1
    // the routing table would pick.
    let (e0, e1) = (
        stat(&topo, "h1", "e0", "tx_packets"),
        stat(&topo, "h1", "e1", "tx_packets"),
    );
    let out = topo.udpring("h1", &crate::util::words("load 10.201.1.3:7200 --bind-device e0 --mode ping -n 20 --timeout 0.5 --warmup 0 --json -q"));
    let v = json_of(&out);
    assert!(stat(&topo, "h1", "e0", "tx_packets") - e0 >= 20, "{v}");
    assert!(
        stat(&topo, "h1", "e1", "tx_packets") - e1 < 5,
        "e1 was used though bound to e0"
    );
    // A link-local target, scoped by interface name.
    let ll = Command::new("ip")
        .args([
            "-n",
            &format!("{}-h3", topo.name),
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            "e1",
        ])
        .args(["scope", "link"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ll.stdout);
    let addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on h3 e1: {text}"))
        .to_string();
    let target = format!("[{addr}%e1]:7200");
    let out = topo.udpring(
        "h1",
        &[
            "load", &target, "--mode", "ping", "-n", "20", "--warmup", "0", "--json", "-q",
        ],
    );
    let v = json_of(&out);
    assert!(out.status.success(), "{target}: {v}");
    assert_eq!(v["received"], 20, "{v}");
    // --mark: the firewall sees the mark (a mangle rule in h1 counts the
    // datagrams that carry it).
    let ns = format!("{}-h1", topo.name);
    let ipt = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &ns, "iptables"])
            .args(args)
            .output()
            .unwrap()
    };
    let rule = [
        "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "-m", "mark", "--mark", "42",
    ];
    assert!(ipt(&rule).status.success());
    let counted = || -> u64 {
        let out = ipt(&["-t", "mangle", "-L", "OUTPUT", "-v", "-x", "-n"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains("mark match 0x2a"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no rule: {text}"))
    };
    let before = counted();
    for mark in [&["--mark", "42"][..], &[][..]] {
        let mut args = vec!["load", "10.201.1.3:7200", "--mode", "ping", "-n", "10"];
        args.extend_from_slice(&["--warmup", "0", "--json", "-q"]);
        args.extend_from_slice(mark);
        let out = topo.udpring("h1", &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(counted() - before, 10, "only the marked run's datagrams");
    // An unknown interface is a usage error, before anything is sent.
    let out = topo.udpring(
        "h1",
        &["load", &format!("[{addr}%nosuch9]:7200"), "-n", "1"],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = topo.udpring(
        "h1",
        &["load", "10.201.1.3:7200", "--bind-device", "nosuch9"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_host_with_ipv6_off_says_so_when_asked_to_send_over_it() {
    let topo = crate::topology!(pmtu, "v6off");
    crate::topo::sh_in(
        &topo,
        "a",
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1",
    );
    for (cmd, says) in [
        ("load [::1]:9 -t 0.2", "connect to [::1]:9"),
        ("ping [::1]:9 -c 1", "send to [::1]:9"),
        ("pmtu [::1]:9", "connect to [::1]:9"),
    ] {
        let err = failed_in_a(&topo, cmd);
        assert!(
            err.contains(says) && err.contains("no IPv6 address to send from (is IPv6 off?"),
            "{cmd}: {err}"
        );
    }
}

/// A send the kernel refuses for a reason its errno hides ("Permission
/// denied" to root, "Invalid argument") says the likely reason: a
/// broadcast address, a blackhole route, a firewall's drop.
#[test]
fn a_refused_send_says_what_refused_it() {
    let topo = crate::topology!(pmtu, "refused");
    crate::topo::sh_in(&topo, "a", "ip route add blackhole 10.77.0.0/16");
    crate::topo::sh_in(
        &topo,
        "a",
        "iptables -A OUTPUT -p udp -d 10.200.2.1 --dport 9 -j DROP && \
         iptables -A OUTPUT -p udp -d 239.0.0.0/8 -j DROP",
    );
    // Each hint is the one for the errno the kernel gave.
    for (cmd, why) in [
        ("ping 10.200.1.255:9 -c 1", "a broadcast address"),
        ("load 10.200.1.255:9 -t 0.2", "a broadcast address"),
        ("ping 10.77.0.1:9 -c 1", "a `blackhole` route"),
        ("ping 10.200.2.1:9 -c 1", "a firewall rule"),
        ("load 10.200.2.1:9 -t 0.2", "a firewall rule"),
        ("reference send 10.200.2.1:9 -t 0.2", "a firewall rule"),
        ("mcast send 239.1.2.3:9 --iface a0 -c 3", "a firewall rule"),
    ] {
        let err = failed_in_a(&topo, cmd);
        assert!(err.contains(why), "{cmd}: {err}");
    }
}

/// `udpring CMD` in A, which must fail its purpose (exit 1): its standard
/// error.
fn failed_in_a(topo: &Topology, cmd: &str) -> String {
    let out = topo.udpring("a", &crate::util::words(cmd));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
    err
}
