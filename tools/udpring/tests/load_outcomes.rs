//! What a load run makes of answers that are not a plain echo's: replies
//! a service altered (told from loss by capacity in the hint), ICMP
//! errors in a closed loop (the request ends at once, as in `udpring
//! ping`, and the verdict names the closed port), and answers from another
//! port than the one asked. All on loopback.

mod util;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use util::{have, json, run};

/// A responder's body that answers only requests with an even ID (offset
/// 0, 2 bytes).
const HALF: &str = r#"
    if int.from_bytes(q[0:2], "big") % 2 == 0:
        s.sendto(q, a)
"#;

/// A service that answers every request but alters every other answer:
/// the loss is the service's doing, and the hint says so (and what it
/// must return) instead of blaming its capacity. The same run against a
/// service that drops what it does not answer still gets the capacity
/// hint.
#[test]
fn loss_from_altered_replies_is_told_from_loss_from_capacity() {
    if !have("python3") {
        return;
    }
    let hint = |args: &str| {
        let (code, out, err) = run(&util::words(args));
        assert_eq!(code, 0, "{err}");
        let v = json(&out);
        (v["warnings"][0].as_str().unwrap_or("").to_string(), v)
    };
    let every_other = |alter: &str| {
        util::PyResponder::start(&format!(
            "    n = globals().get('n', 0) + 1\n    globals()['n'] = n\n    \
             s.sendto(q if n % 2 else {alter}, a)"
        ))
    };
    let run_args = "-n 200 --rate 2000 --warmup 0 --timeout 0.05 --drain 0.1 --json -q";
    // udpring's header, every other reply reversed: invalid.
    let py = every_other("q[::-1]");
    let (h, v) = hint(&format!("load {} {run_args}", py.addr));
    assert_eq!(v["invalid"].as_u64(), Some(100), "{v}");
    assert!(
        h.starts_with("hint: 50.000% lost, and 100 replies came back"),
        "{h}"
    );
    assert!(
        h.contains("(100 invalid)") && h.contains("--match header"),
        "{h}"
    );
    // A 2-byte ID at byte 2, every other reply cut before it: unmatched.
    let py = every_other("q[:2]");
    let id = "--payload 00000000 --match id:2:2";
    let (h, v) = hint(&format!("load {} {id} {run_args}", py.addr));
    assert_eq!(v["unmatched"].as_u64(), Some(100), "{v}");
    assert!(h.contains("(100 with no request's ID)"), "{h}");
    assert!(
        h.contains("copy each request's 2-byte ID back at byte 2"),
        "{h}"
    );
    // Every other request not answered at all: the capacity hint.
    let py = util::PyResponder::start(HALF);
    let (h, _) = hint(&format!(
        "load {} --payload 00000000 --match id:0:2 {run_args}",
        py.addr
    ));
    assert!(h.starts_with("hint: 50.000% lost: at 2000/s"), "{h}");
}

/// A closed-loop run against a port nothing listens on for its first
/// half second (a service restarting): each request is ended by its ICMP
/// port unreachable, not held for --timeout (1 s), so the flow finds the
/// service within a housekeeping pass of its start and no request times
/// out; a refused flow waits for that pass (20 ms) instead of sending as
/// fast as the ICMP comes back. With nothing there at all the verdict
/// names the closed port.
#[test]
fn a_closed_loop_takes_port_unreachable_as_the_answer() {
    let port = util::unused_port();
    let late_echo = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let until = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    let target = format!("127.0.0.1:{port}");
    let (code, out, err) = run(&util::words(&format!(
        "load {target} --mode ping -t 1.2 --warmup 0 --json -q"
    )));
    late_echo.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let refused = v["errors"]["ECONNREFUSED"].as_u64().unwrap_or(0);
    assert!(
        (5..=40).contains(&refused),
        "~25 refused at 20 ms apart: {v}"
    );
    assert_eq!(v["timeouts"].as_u64(), Some(0), "none held for 1 s: {v}");
    assert!(v["received"].as_u64().unwrap() > 100, "{v}");
    let hint = v["warnings"][0].as_str().unwrap_or("");
    assert!(hint.contains("ICMP"), "{hint}");
    // Nothing there at all.
    let (code, _, err) = run(&util::words(&format!(
        "load {target} --mode ping -t 0.3 --warmup 0"
    )));
    assert_eq!(code, 1);
    assert!(
        err.contains("ICMP port unreachable (ECONNREFUSED): nothing listens on that port"),
        "{err}"
    );
}

/// A service that answers from another port than the one asked (as TFTP
/// does): nothing counts as a reply, and the error says where the answers
/// came from instead of asking whether anything listens. (`load` sees
/// them only with unconnected flows; connected, the kernel drops them.)
#[test]
fn answers_from_another_port_are_named_in_the_error() {
    if !have("python3") {
        return;
    }
    let py = util::PyResponder::start(
        "    o = globals().get('o') or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
         globals()['o'] = o\n    o.sendto(q, a)",
    );
    let (code, _, err) = run(&util::words(&format!(
        "load {} -n 50 --warmup 0 --drain 0.2 --unconnected -q",
        py.addr
    )));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no replies from")
            && err.contains("but 50 datagrams came from other addresses"),
        "{err}"
    );
    let (code, _, err) = run(&util::words(&format!(
        "ping {} -c 1 --timeout 0.02 --attempts 2",
        py.addr
    )));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("looked down for 1 of 1 requests (2 replies came from other addresses"),
        "{err}"
    );
}
