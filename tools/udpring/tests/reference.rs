//! `udpring reference`: the C-equivalent sender and sink count what they
//! did, agree with each other on loopback, and refuse bad input.

mod util;

use util::{Server, run, vocab};

/// `udpring reference KIND` on loopback for 1.5 s, with `--json`.
fn server(kind: &str) -> Server {
    server_with(kind, &[])
}

fn server_with(kind: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "reference",
        kind,
        "--bind",
        "127.0.0.1:0",
        "--duration",
        "1.5",
        "--json",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn the_reference_sender_and_sink_agree() {
    // The last one into a sink that never sleeps (--spin).
    for (gso, mmsg, spin) in [
        ("1", "1", false),
        ("8", "1", false),
        ("1", "32", false),
        ("8", "4", false),
        ("8", "4", true),
    ] {
        let sink = server_with("sink", if spin { &["--spin"] } else { &[] });
        let (code, out, err) = run(&util::words(&format!(
            "reference send {} -t 0.3 -s 100 --gso {} --mmsg {} --json",
            sink.addr, gso, mmsg
        )));
        assert_eq!(code, 0, "{err}");
        let s = util::json(&out);
        // Each call carries `mmsg` messages of `gso` datagrams (sendmmsg
        // may take fewer than asked, never more).
        let per_call = gso.parse::<u64>().unwrap() * mmsg.parse::<u64>().unwrap();
        let calls = s["calls"].as_u64().unwrap();
        assert!(
            calls > 0 && s["sent"].as_u64().unwrap() <= calls * per_call,
            "gso {gso} mmsg {mmsg}: {s}"
        );
        if mmsg != "1" {
            assert!(
                s["sent"].as_u64().unwrap() > calls * per_call / 2,
                "sendmmsg sent most of each batch: {s}"
            );
        }
        vocab::check("reference", &s);
        let r = sink.json();
        vocab::check("reference", &r);
        let (sent, got) = (s["sent"].as_u64().unwrap(), r["received"].as_u64().unwrap());
        assert!(sent > 1000, "{s}");
        // What the sink's socket dropped (its buffer full: the flood is open
        // loop and the sink may not get a CPU; beside two CPU hogs it lost
        // a fifth) is counted by the kernel in buffers, here trains of
        // `gso` datagrams. Other losses on loopback (the backlog queue) are
        // not the socket's: a tenth is allowed for them.
        let dropped = r["kernel_drops"].as_u64().unwrap() * gso.parse::<u64>().unwrap();
        assert!(
            got + dropped <= sent && (got + dropped) * 10 >= sent * 9,
            "gso {gso} mmsg {mmsg} spin {spin}: the sink counted {got} and its socket dropped \
             {dropped} of {sent}: {r}"
        );
        if gso == "8" {
            assert!(
                r["received_bufs"].as_u64().unwrap() < got,
                "trains arrive whole (GRO): {r}"
            );
        }
    }
}

#[test]
fn the_reference_refuses_bad_input() {
    for args in [
        &[
            "reference",
            "send",
            "127.0.0.1:9",
            "-s",
            "2000",
            "--gso",
            "64",
        ][..],
        &["reference", "send", "127.0.0.1:0"][..],
        &["reference", "send", "127.0.0.1:9", "--gso", "65"][..],
        &["reference", "send", "127.0.0.1:9", "--mmsg", "0"][..],
        &["reference", "send", "127.0.0.1:9", "--mmsg", "1025"][..],
        &["reference", "flood", "127.0.0.1:9", "--mmsg", "2"][..],
        &["reference", "echo", "--spin"][..],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn the_reference_echo_returns_trains_whole_to_the_reference_flood() {
    let echo = server("echo");
    let (code, out, err) = run(&util::words(&format!(
        "reference flood {} -t 0.3 -s 200 --gso 10 --json",
        echo.addr
    )));
    assert_eq!(code, 0, "{err}");
    let f = util::json(&out);
    vocab::check("reference", &f);
    let e = echo.json();
    vocab::check("reference", &e);
    let (sent, back, echoed) = (
        f["sent"].as_u64().unwrap(),
        f["received"].as_u64().unwrap(),
        e["sent"].as_u64().unwrap(),
    );
    assert!(back > 0 && back <= echoed && echoed <= sent, "{f} {e}");
    assert!(
        e["sent_bufs"].as_u64().unwrap() * 2 < echoed,
        "trains echoed as trains: {e}"
    );
}
