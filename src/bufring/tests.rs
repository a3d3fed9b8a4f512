use super::*;

#[test]
fn slots_move_home_when_the_last_reference_goes() {
    let mut p = Pool::new(100, 4, 2, true).unwrap();
    assert_eq!(p.slot_size(), 128);
    assert_eq!(p.counts().out, 0);
    let mut a = p.lend(2, 16, 10).unwrap();
    assert!(
        p.lend(2, 0, 1).is_none(),
        "a lent slot cannot be lent twice"
    );
    assert!(p.lend(9, 0, 1).is_none(), "an unknown id is refused");
    a.bytes_mut().copy_from_slice(b"0123456789");
    p.hold(a.slot());
    let slot = a.slot();
    p.release(a);
    assert_eq!(p.counts().out, 1, "still held by a send");
    p.unref(slot);
    assert_eq!(p.counts().out, 0);
    let s1 = p.alloc_send().unwrap();
    let s2 = p.alloc_send().unwrap();
    assert!(p.alloc_send().is_none(), "send slots exhausted");
    p.release(s1);
    p.release(s2);
    assert_eq!(p.counts().out, 0);
}

#[test]
fn ring_tail_wraps_without_masking() {
    let mut p = Pool::new(64, 2, 0, true).unwrap();
    for _ in 0..40_000u32 {
        let l = p.lend(0, 0, 1).unwrap();
        p.release(l);
        p.publish();
    }
    let RecvHome::Ring(r) = &p.recv else { panic!() };
    assert_eq!(r.tail(), (2u32 + 40_000) as u16);
}

#[test]
fn list_pool_reserves_and_returns() {
    let mut p = Pool::new(64, 3, 0, false).unwrap();
    let s = p.reserve_recv().unwrap();
    assert_eq!(p.recv_home(), 2);
    p.unreserve(s);
    assert_eq!(p.recv_home(), 3);
    assert!(
        Pool::new(64, 3, 0, true).is_err(),
        "ring needs a power of two"
    );
}

mod model {
    //! The pool against a model: random sequences of lendings (receive
    //! slots from the ring or the free list, send slots), extra
    //! references (sends), releases, publishes, and datagrams built in
    //! send slots. After every step: a slot is out exactly while it has
    //! a reference, `out` counts them, a slot already out is never lent
    //! again, the ring's tail has advanced once per receive slot that
    //! came home, and a send slot lent to be built in shows zeros unless
    //! its tag kept the bytes its last builder wrote.

    use proptest::prelude::*;

    use super::super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// The kernel fills receive slot `i` (mod the receive slots).
        Lend(u32),
        /// A send slot for a copy or a build of `len` bytes, tagged.
        Send {
            len: u32,
            tag: u64,
        },
        /// One more reference on the `i`-th out slot (a send).
        Hold(usize),
        /// One reference fewer on the `i`-th out slot.
        Unref(usize),
        Publish,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u32>().prop_map(Op::Lend),
            3 => (0u32..256, prop_oneof![Just(0u64), 1u64..4]).prop_map(|(len, tag)| Op::Send { len, tag }),
            2 => any::<usize>().prop_map(Op::Hold),
            4 => any::<usize>().prop_map(Op::Unref),
            1 => Just(Op::Publish),
        ]
    }

    proptest! {
        #[test]
        fn slots_are_accounted_as_the_model_says(
            ops in proptest::collection::vec(op(), 1..120),
            ring in any::<bool>(),
        ) {
            let (recv, send) = (8u32, 4u32);
            let mut p = Pool::new(256, recv as usize, send as usize, ring).unwrap();
            let total = (recv + send) as usize;
            let mut refs = vec![0u16; total];
            // What each send slot holds as its last builder left it,
            // and its tag.
            let mut bytes = vec![vec![0u8; 256]; total];
            let mut tags = vec![0u64; total];
            let mut came_home = 0u16;
            for op in ops {
                let out: Vec<u32> = (0..total as u32).filter(|&s| refs[s as usize] > 0).collect();
                match op {
                    Op::Lend(i) => {
                        let slot = if ring {
                            i % recv
                        } else {
                            match p.reserve_recv() {
                                Some(s) => s,
                                None => {
                                    prop_assert!((0..recv).all(|s| refs[s as usize] > 0));
                                    continue;
                                }
                            }
                        };
                        let lent = p.lend(slot, 0, 16);
                        prop_assert_eq!(lent.is_some(), refs[slot as usize] == 0, "slot {}", slot);
                        if let Some(l) = lent {
                            refs[slot as usize] = 1;
                            let _ = l; // its reference stays; the model counts it
                        }
                    }
                    Op::Send { len, tag } => {
                        let free = (recv..recv + send).filter(|&s| refs[s as usize] == 0).count();
                        prop_assert_eq!(p.send_free(), free);
                        let Some(mut l) = p.alloc_send() else {
                            prop_assert_eq!(free, 0);
                            continue;
                        };
                        let s = l.slot() as usize;
                        prop_assert_eq!(refs[s], 0, "lent while out");
                        let seen = p.scrub_send(&mut l, len);
                        prop_assert_eq!(seen, tags[s]);
                        let want: Vec<u8> = if tags[s] == 0 {
                            vec![0; len as usize]
                        } else {
                            bytes[s][..len as usize].to_vec()
                        };
                        prop_assert_eq!(l.bytes(), &want[..], "slot {} tag {}", s, tags[s]);
                        // The builder writes its tag's byte over all of it.
                        l.bytes_mut().fill(tag as u8 ^ 0xa5);
                        bytes[s][..len as usize].fill(tag as u8 ^ 0xa5);
                        p.set_tag(s as u32, tag);
                        tags[s] = tag;
                        refs[s] = 1;
                        let _ = l; // its reference stays; the model counts it
                    }
                    Op::Hold(i) if !out.is_empty() => {
                        let s = out[i % out.len()];
                        p.hold(s);
                        refs[s as usize] += 1;
                    }
                    Op::Unref(i) if !out.is_empty() => {
                        let s = out[i % out.len()];
                        p.unref(s);
                        refs[s as usize] -= 1;
                        if refs[s as usize] == 0 && s < recv {
                            came_home += 1;
                        }
                    }
                    Op::Hold(_) | Op::Unref(_) => {}
                    Op::Publish => p.publish(),
                }
                let out = refs.iter().filter(|&&r| r > 0).count();
                prop_assert_eq!(p.counts().out as usize, out);
                let recv_home = (0..recv as usize).filter(|&s| refs[s] == 0).count();
                prop_assert_eq!(p.recv_home(), recv_home);
                if let RecvHome::Ring(r) = &p.recv {
                    prop_assert_eq!(r.tail(), (recv as u16).wrapping_add(came_home));
                }
            }
        }
    }
}
