use super::*;

/// `b` builds no Config, and says why starting with `why`.
fn refused(b: ConfigBuilder, why: &str) {
    let e = b.build().unwrap_err();
    assert!(e.to_string().starts_with(why), "{e}");
}

#[test]
fn the_builder_sets_fields_and_refuses_what_does_not_hold_together() {
    let c = Config::builder("127.0.0.1:0".parse().unwrap())
        .workers(2)
        .gro(true)
        .build()
        .unwrap();
    assert_eq!((c.workers, c.gro, c.pin), (2, true, false));
    assert_eq!(c.effective_slot_size(), GRO_SLOT_SIZE);
    let e = Config::builder("127.0.0.1:0".parse().unwrap())
        .batch(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::OutOfRange {
            field: "batch",
            value: 0,
            min: 1,
            max: 1024
        }
    );
    assert_eq!(e.to_string(), "batch must be 1..1024, not 0");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    refused(
        Config::builder(addr)
            .backend(Some(Backend::Mmsg))
            .send_zero_copy_min(Some(1024)),
        "send_zero_copy_min: zero-copy sends are the uring backend's",
    );
    assert!(
        Config::builder(addr)
            .backend(Some(Backend::Uring))
            .send_zero_copy_min(Some(1024))
            .build()
            .is_ok()
    );
    assert!(
        Config::new("127.0.0.1:0".parse().unwrap())
            .validate()
            .is_ok()
    );
    // GRO with slots smaller than a train: refused (every longer train
    // would be cut, its tail uncounted).
    refused(
        Config::builder(addr).gro(true).slot_size(4096),
        "slot_size: with gro a slot holds a whole GRO train",
    );
    assert!(
        Config::builder(addr)
            .gro(true)
            .slot_size(GRO_SLOT_SIZE)
            .build()
            .is_ok()
    );
    // IPV6_V6ONLY asked of IPv4 sockets only: refused, not ignored.
    refused(
        Config::builder(addr).only_v6(Some(true)),
        "only_v6: IPV6_V6ONLY is for IPv6",
    );
    // Reflecting a TOS that is never read: refused, not a silent no-op.
    refused(
        Config::builder(addr).reflect_tos(true),
        "reflect_tos: needs recv_tos",
    );
    assert!(
        Config::builder(addr)
            .reflect_tos(true)
            .recv_tos(true)
            .build()
            .is_ok()
    );
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    assert!(Config::builder(v6).only_v6(Some(false)).build().is_ok());
    assert!(
        Config::builder(addr)
            .also_bind(vec![v6])
            .only_v6(Some(true))
            .build()
            .is_ok()
    );
    const _: () = assert!(
        DEFAULT_SLOT_SIZE - HEADROOM >= 4096,
        "a 4096-byte DNS answer fits the default slot"
    );
}
