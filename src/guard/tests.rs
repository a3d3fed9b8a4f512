//! The guard's unit tests.

use super::*;

fn state(g: &Guard, own: &[u16]) -> GuardState {
    let host = HostAddrs {
        broadcast: vec!["10.0.0.255".parse().unwrap()],
    };
    GuardState::new(g, own.to_vec(), host)
}

fn check(s: &mut GuardState, src: &str, dst: Option<&str>) -> Result<(), Refusal> {
    check_hops(s, src, dst, Some(64))
}

fn check_hops(
    s: &mut GuardState,
    src: &str,
    dst: Option<&str>,
    hops: Option<u8>,
) -> Result<(), Refusal> {
    let mut ev = false;
    s.check(
        src.parse().unwrap(),
        dst.map(|d| d.parse().unwrap()),
        hops,
        &mut ev,
    )
}

#[test]
fn a_server_refuses_what_another_server_sent_and_a_client_takes_it() {
    let mut s = state(&Guard::default(), &[9000]);
    for hops in [200, 199, 180, 160] {
        assert_eq!(
            check_hops(&mut s, "10.0.0.9:9100", None, Some(hops)),
            Err(Refusal::Marked),
            "TTL {hops}: the mark after {} routers",
            200 - hops
        );
    }
    for hops in [1, 30, 64, 63, 128, 100, 159, 201, 255, 254, 230] {
        assert_eq!(
            check_hops(&mut s, "10.0.0.9:9100", None, Some(hops)),
            Ok(()),
            "TTL {hops}: a system's default after some routers"
        );
    }
    assert_eq!(check_hops(&mut s, "10.0.0.9:9100", None, None), Ok(()));
    let mut c = state(&Guard::client(), &[9000]);
    assert_eq!(check_hops(&mut c, "10.0.0.9:9100", None, Some(200)), Ok(()));
    assert!(Guard::default().marks() && Guard::default().reads_marks());
    assert!(!Guard::client().marks() && !Guard::client().reads_marks());
    assert!(!Guard::off().marks() && !Guard::off().reads_marks());
}

#[test]
fn refuses_each_reason_and_passes_the_rest() {
    let mut s = state(&Guard::default(), &[9000]);
    assert_eq!(check(&mut s, "10.0.0.9:5555", None), Ok(()));
    assert_eq!(check(&mut s, "10.0.0.9:0", None), Err(Refusal::BadSource));
    assert_eq!(check(&mut s, "0.0.0.0:5", None), Err(Refusal::BadSource));
    assert_eq!(check(&mut s, "224.0.0.1:5", None), Err(Refusal::BadSource));
    assert_eq!(
        check(&mut s, "255.255.255.255:5", None),
        Err(Refusal::BadSource)
    );
    assert_eq!(check(&mut s, "10.0.0.255:5", None), Err(Refusal::BadSource));
    assert_eq!(check(&mut s, "127.0.0.1:9000", None), Err(Refusal::Loop));
    assert_eq!(check(&mut s, "10.0.0.5:9000", None), Err(Refusal::Loop));
    assert_eq!(check(&mut s, "[fd00::5]:9000", None), Err(Refusal::Loop));
    assert_eq!(
        check(&mut s, "10.0.0.9:9000", None),
        Err(Refusal::Loop),
        "a twin service on another host: half of a loop"
    );
    assert_eq!(
        check(&mut s, "10.0.0.9:5555", Some("10.0.0.255")),
        Err(Refusal::Broadcast)
    );
    assert_eq!(
        check(&mut s, "10.0.0.9:5555", Some("255.255.255.255")),
        Err(Refusal::Broadcast)
    );
    assert_eq!(check(&mut s, "10.0.0.9:5555", Some("10.0.0.5")), Ok(()));
    assert_eq!(
        check(&mut s, "10.0.0.9:9000", Some("239.1.2.3")),
        Ok(()),
        "to a group on our port: our own multicast heard back, or a peer"
    );
    for p in [7, 19, 53, 123, 1900, 11211] {
        assert_eq!(
            check(&mut s, &format!("10.0.0.9:{p}"), None),
            Err(Refusal::Port),
            "port {p}"
        );
    }
    let mut c = state(&Guard::client(), &[9000]);
    assert_eq!(
        check(&mut c, "10.0.0.9:53", None),
        Ok(()),
        "a client hears DNS"
    );
    let mut off = state(&Guard::off(), &[9000]);
    assert_eq!(check(&mut off, "127.0.0.1:9000", None), Ok(()));
}

#[test]
fn subnet_broadcasts_come_from_the_netmask() {
    let b = |a: &str, m: &str| subnet_broadcast(a.parse().unwrap(), m.parse().unwrap());
    assert_eq!(
        b("10.201.0.2", "255.255.255.0"),
        Some("10.201.0.255".parse().unwrap())
    );
    assert_eq!(
        b("192.168.1.77", "255.255.255.192"),
        Some("192.168.1.127".parse().unwrap())
    );
    assert_eq!(b("10.0.0.1", "255.255.255.254"), None, "/31");
    assert_eq!(b("10.0.0.1", "255.255.255.255"), None, "/32");
}

#[test]
fn allowlist_and_prefixes() {
    let g = Guard {
        allow: vec![
            "10.0.0.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        ..Guard::default()
    };
    let mut s = state(&g, &[9000]);
    assert_eq!(check(&mut s, "10.0.0.9:5555", None), Ok(()));
    assert_eq!(check(&mut s, "[::ffff:10.0.0.9]:5555", None), Ok(()));
    assert_eq!(
        check(&mut s, "10.0.1.9:5555", None),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(check(&mut s, "[2001:db8:1::1]:5555", None), Ok(()));
    assert_eq!(
        check(&mut s, "[2001:db9::1]:5555", None),
        Err(Refusal::NotAllowed)
    );
    // With the guard off, an allowlist would not be enforced: refused,
    // not ignored (so is a rate limit).
    let off = Guard {
        allow: g.allow.clone(),
        ..Guard::off()
    };
    assert!(off.validate().unwrap_err().contains("not enforced"));
    let off = Guard {
        per_source_rate: Some(RateLimit {
            per_second: 10.0,
            burst: 1,
        }),
        ..Guard::off()
    };
    assert!(off.validate().is_err());
    assert_eq!(Guard::off().validate(), Ok(()));
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("nonsense".parse::<Cidr>().is_err());
    assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    let c: Cidr = "192.168.0.0/17".parse().unwrap();
    assert!(c.contains("192.168.127.255".parse().unwrap()));
    assert!(!c.contains("192.168.128.0".parse().unwrap()));
    assert!(
        "0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
}

#[test]
fn rate_limit_per_source_with_a_bounded_table() {
    let g = Guard {
        per_source_rate: Some(RateLimit {
            per_second: 0.001,
            burst: 3,
        }),
        rate_table: 16,
        ..Guard::default()
    };
    let mut s = state(&g, &[9000]);
    for _ in 0..3 {
        assert_eq!(check(&mut s, "10.0.0.9:5555", None), Ok(()));
    }
    assert_eq!(check(&mut s, "10.0.0.9:5555", None), Err(Refusal::Rate));
    assert_eq!(
        check(&mut s, "10.0.0.8:5555", None),
        Ok(()),
        "others have their own"
    );
    // Thousands of forged sources: the table stays at its size, and
    // evictions are reported.
    let mut evicted = 0;
    for i in 0..5000u32 {
        let ip = Ipv4Addr::from(0x0a01_0000 + i);
        let mut ev = false;
        let _ = s.check(SocketAddr::new(ip.into(), 5555), None, None, &mut ev);
        evicted += ev as u32;
    }
    assert!(evicted >= 5000 - 16, "{evicted} evictions");
    assert_eq!(s.limiter.as_ref().unwrap().table.len(), 16);
}
