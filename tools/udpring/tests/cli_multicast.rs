//! The multicast and relay commands (`mcast`, `fanout`, and `load` to a
//! group): bad input is one line with exit code 2, and a relay on
//! loopback forwards every datagram to every destination. Loopback and
//! `lo` only.

mod util;

use util::*;

/// The group of the usage cases (none of them sends).
const GROUP: &str = "239.1.1.1:5000";

#[test]
fn multicast_and_fanout_bad_input_is_one_line_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["mcast", "listen", "10.1.2.3:5000"],
            "not a multicast group",
        ),
        (&["mcast", "listen", "239.1.1.1"], "not GROUP:PORT"),
        (
            &[
                "fanout",
                "--listen",
                "0.0.0.0:6005",
                "--join",
                "239.1.1.5",
                "--to",
                "239.1.1.5:6005",
            ],
            "a group this relay receives on its port",
        ),
        (&["mcast", "listen", "239.1.1.1:0"], "give a port"),
        (
            &["mcast", "listen", "239.1.1.1:5000", "--source", "fe80::1"],
            "does not go with group",
        ),
        (
            &["mcast", "listen", "239.1.1.1:5000", "--iface", "nosuch0"],
            "no interface nosuch0",
        ),
        (
            &["mcast", "send", "[ff15::1%nosuch0]:5000"],
            "no interface nosuch0",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--join",
                "10.0.0.1",
            ],
            "not a multicast group",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--join",
                "239.1.1.1@ff02::1",
            ],
            "does not go with group",
        ),
        (
            &["fanout", "--listen", "127.0.0.1:0", "--to", "[::1]:9"],
            "cannot send to IPv6",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--iface",
                "nosuch0",
            ],
            "no interface nosuch0",
        ),
        (&["fanout", "--listen", "127.0.0.1:0"], "--to"),
    ];
    assert_usage_errors(cases);
    // What would send to a group, were its refusal to regress, names
    // `--iface lo`: a group's traffic otherwise leaves by the multicast
    // route. Each is COMMAND GROUP --iface lo REST.
    let sending: &[(&[&str], &[&str], &str)] = &[
        (&["mcast", "send"], &["--size", "70000"], "--size 70000"),
        (&["mcast", "ping"], &["--rate", "0"], "--rate 0"),
        (
            &["mcast", "ping"],
            &["--payload", "70", "--rate", "0"],
            "--rate 0",
        ),
        (
            &["mcast", "ping"],
            &["--payload", "7g"],
            "--payload: 'g' is not a hex digit",
        ),
        (
            &["mcast", "ping"],
            &["--expect", "70"],
            "--expect and --timeout go with --payload",
        ),
        (
            &["mcast", "ping"],
            &["--payload", "70", "--timeout", "0.2"],
            "at most the interval between pings (0.100 s",
        ),
        (
            &["mcast", "ping"],
            &["--payload", "70", "-s", "100"],
            "cannot be used with",
        ),
        (&["mcast", "pong"], &["--answer", "70"], "--expect"),
        (
            &["load"],
            &["--payload", "70", "--match", "flow", "--mode", "ping"],
            "--match flow cannot tell which request a group's replies answer",
        ),
        (&["mcast", "pong"], &["--expect", ""], "--expect: 0 bytes"),
    ];
    let on_lo: Vec<(Vec<&str>, &str)> = sending
        .iter()
        .map(|(cmd, rest, needle)| ([*cmd, &[GROUP, "--iface", "lo"], *rest].concat(), *needle))
        .collect();
    let on_lo: Vec<(&[&str], &str)> = on_lo.iter().map(|(a, n)| (a.as_slice(), *n)).collect();
    assert_usage_errors(&on_lo);
}

#[test]
fn fanout_on_loopback_relays_to_every_destination_and_counts_refusals() {
    let a = client(false);
    let b = client(false);
    let closed = util::unused_addr("127.0.0.1");
    let to = format!(
        "{},{},{closed}",
        a.local_addr().unwrap(),
        b.local_addr().unwrap()
    );
    let fan = Server::start(&util::words(&format!(
        "fanout --listen 127.0.0.1:0 --to {to} --duration 1.5 -q --json --workers 1"
    )));
    let relay = fan.addr;
    let src = client(false);
    for i in 0..50u8 {
        src.send_to(&[i], relay).unwrap();
    }
    let mut buf = [0u8; 8];
    for c in [&a, &b] {
        let mut got: Vec<u8> = (0..50)
            .map(|_| c.recv_from(&mut buf).map(|_| buf[0]).unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..50).collect::<Vec<u8>>());
    }
    let v = fan.json();
    assert_eq!(v["received"], 50, "{v}");
    assert_eq!(v["destinations"][0]["forwarded"], 50);
    assert!(v["destinations"][2]["refused"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["slots_out"], 0);
}
