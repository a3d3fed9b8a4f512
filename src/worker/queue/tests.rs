use super::*;
use crate::sys::RawAddr;

fn train(pool: &mut Pool, len: u32, seg: u16) -> Transmit {
    // The lending's own reference stays until `refs_back` drops it.
    let slot = pool.alloc_send().unwrap().slot();
    Transmit {
        len,
        segment: std::num::NonZeroU16::new(seg),
        ..train_at(slot)
    }
}

/// Slots the queued sends read, each once.
fn distinct_slots(q: &SendQueue) -> usize {
    let mut slots: Vec<u32> = q.as_slice().iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    slots.len()
}

/// Takes every send off the queue, dropping its reference.
fn give_back(pool: &mut Pool, q: &mut SendQueue) {
    while let Some(t) = q.pop_front() {
        pool.unref(t.slot);
    }
}

fn refs_back(pool: &mut Pool, q: &mut SendQueue, slot: u32) {
    give_back(pool, q);
    pool.unref(slot);
    assert_eq!(pool.counts().out, 0, "every reference came back");
}

#[test]
fn a_train_stays_whole_with_gso_and_is_cut_without() {
    let mut pool = Pool::new(4096, 1, 2, false).unwrap();
    let mut q = SendQueue::new(8, true);
    let t = train(&mut pool, 1000, 300);
    q.push(&mut pool, t);
    assert_eq!(q.len(), 1);
    assert_eq!(q.as_slice()[0].datagrams(), 4, "300+300+300+100");
    refs_back(&mut pool, &mut q, t.slot);

    q.disable_gso();
    let t = train(&mut pool, 1000, 300);
    q.push(&mut pool, t);
    let parts: Vec<(u32, u32, bool)> = q
        .as_slice()
        .iter()
        .map(|x| (x.off, x.len, x.segment.is_none()))
        .collect();
    assert_eq!(
        parts,
        [
            (0, 300, true),
            (300, 300, true),
            (600, 300, true),
            (900, 100, true)
        ],
        "an odd last segment keeps its own length"
    );
    refs_back(&mut pool, &mut q, t.slot);
}

#[test]
fn each_piece_is_a_datagram_even_with_gso_and_all_or_none_fit() {
    let mut pool = Pool::new(4096, 1, 2, false).unwrap();
    let mut q = SendQueue::new(5, true);
    let size = NonZeroU32::new(300).unwrap();
    let t = Transmit {
        ts_id: Some(9),
        ..train(&mut pool, 1000, 0)
    };
    assert!(q.try_push_pieces(&mut pool, t, size));
    let parts: Vec<_> = q
        .as_slice()
        .iter()
        .map(|x| (x.off, x.len, x.segment, x.ts_id))
        .collect();
    assert_eq!(
        parts,
        [
            (0, 300, None, Some(9)),
            (300, 300, None, None),
            (600, 300, None, None),
            (900, 100, None, None)
        ],
        "one timestamp request, on the first"
    );
    let u = train(&mut pool, 600, 0);
    assert!(!q.try_push_pieces(&mut pool, u, size), "2 do not fit in 1");
    assert_eq!(q.len(), 4, "and none was queued");
    pool.unref(u.slot);
    refs_back(&mut pool, &mut q, t.slot);
}

#[test]
fn pieces_of_a_train_are_trains_with_gso_and_datagrams_without() {
    let mut pool = Pool::new(4096, 1, 2, false).unwrap();
    let mut q = SendQueue::new(9, true);
    // Trains of 700 bytes (300 + 300 + 100) out of 1500 bytes: two
    // whole trains, and 100 bytes left, a plain datagram.
    let piece = NonZeroU32::new(700).unwrap();
    let t = Transmit {
        ts_id: Some(3),
        ..train(&mut pool, 1500, 300)
    };
    assert!(q.try_push_pieces(&mut pool, t, piece));
    let parts: Vec<_> = q
        .as_slice()
        .iter()
        .map(|x| (x.off, x.len, x.segment.map(|s| s.get()), x.ts_id))
        .collect();
    assert_eq!(
        parts,
        [
            (0, 700, Some(300), Some(3)),
            (700, 700, Some(300), None),
            (1400, 100, None, None)
        ]
    );
    refs_back(&mut pool, &mut q, t.slot);

    // GSO off: every segment its own datagram, 3 + 3 + 1 of them; a
    // timestamp ID on the first only; all or none fit.
    q.disable_gso();
    let t = Transmit {
        ts_id: Some(4),
        ..train(&mut pool, 1500, 300)
    };
    assert!(q.try_push_pieces(&mut pool, t, piece));
    let parts: Vec<_> = q
        .as_slice()
        .iter()
        .map(|x| (x.off, x.len, x.segment.is_none(), x.ts_id))
        .collect();
    assert_eq!(
        parts,
        [
            (0, 300, true, Some(4)),
            (300, 300, true, None),
            (600, 100, true, None),
            (700, 300, true, None),
            (1000, 300, true, None),
            (1300, 100, true, None),
            (1400, 100, true, None)
        ]
    );
    let u = train(&mut pool, 1400, 300);
    assert!(
        !q.try_push_pieces(&mut pool, u, piece),
        "6 datagrams do not fit in the 2 left"
    );
    assert_eq!(q.len(), 7, "and none was queued");
    pool.unref(u.slot);
    refs_back(&mut pool, &mut q, t.slot);
}

#[test]
fn a_full_queue_refuses_and_takes_no_reference() {
    let mut pool = Pool::new(4096, 1, 3, false).unwrap();
    let mut q = SendQueue::new(3, false);
    let a = train(&mut pool, 100, 0);
    assert!(q.try_push(&mut pool, a));
    let b = train(&mut pool, 1000, 400);
    assert!(
        !q.try_push(&mut pool, b),
        "3 segments do not fit in 2 entries"
    );
    assert_eq!(q.len(), 1);
    pool.unref(b.slot);
    refs_back(&mut pool, &mut q, a.slot);
}

#[test]
fn a_train_of_one_segment_is_a_plain_datagram() {
    let mut pool = Pool::new(4096, 1, 1, false).unwrap();
    let mut q = SendQueue::new(8, true);
    for (len, seg) in [(300, 300), (10, 300), (0, 300)] {
        let t = train(&mut pool, len, seg);
        q.push(&mut pool, t);
        assert_eq!(q.as_slice()[0].segment, None);
        assert_eq!(q.as_slice()[0].datagrams(), 1);
        refs_back(&mut pool, &mut q, t.slot);
    }
}

/// Taking sends off the front keeps the rest in order and counts only
/// what is queued; a push into full storage drops the consumed ones
/// instead of growing it; every reference comes back.
#[test]
fn the_front_goes_without_moving_the_rest() {
    let mut pool = Pool::new(4096, 1, 1, false).unwrap();
    let mut q = SendQueue::new(6, false);
    let slot = pool.alloc_send().unwrap().slot();
    let t = |off: u32| Transmit {
        off,
        len: 1,
        ..train_at(slot)
    };
    for off in 0..6 {
        assert!(q.try_push(&mut pool, t(off)));
    }
    assert!(!q.try_push(&mut pool, t(99)), "full: 6 queued");
    q.consume(4);
    assert_eq!(q.len(), 2);
    let offs = |q: &SendQueue| q.as_slice().iter().map(|x| x.off).collect::<Vec<_>>();
    assert_eq!(offs(&q), [4, 5]);
    let cap = q.q.capacity();
    for off in 6..10 {
        assert!(
            q.try_push(&mut pool, t(off)),
            "the consumed ones do not count"
        );
    }
    assert!(!q.try_push(&mut pool, t(99)));
    assert_eq!(offs(&q), [4, 5, 6, 7, 8, 9]);
    assert_eq!(q.q.capacity(), cap, "compacted, not grown");
    assert_eq!(q.pop_front().map(|x| x.off), Some(4));
    q.consume(100);
    assert!(q.is_empty());
    assert_eq!((q.q.len(), q.head), (0, 0), "storage reused once empty");
    for _ in 0..10 {
        pool.unref(slot);
    }
    pool.unref(slot);
    assert_eq!(pool.counts().out, 0, "every reference came back");
}

fn train_at(slot: u32) -> Transmit {
    Transmit::new(0, slot, 0, 0, RawAddr::zeroed())
}

mod model {
    //! The queue against a model: random sequences of pushes (single
    //! datagrams, trains, pieces of either), refusals for want of room,
    //! GSO turned off midway, and sends taken off the front in batches.
    //! After every step, the datagrams the queue will put on the wire
    //! (each transmit expanded as the kernel cuts it) are those the
    //! model expects, in order; a refused push changed nothing; each
    //! queued transmit holds one slot reference; a timestamp ID rides
    //! on the first send of its push only.

    use std::collections::VecDeque;
    use std::num::{NonZeroU16, NonZeroU32};

    use proptest::prelude::*;

    use super::super::*;
    use super::{distinct_slots, give_back, train_at};

    #[derive(Clone, Debug)]
    enum Op {
        /// One send of `len` bytes, a train when `seg` is given.
        Push {
            len: u32,
            seg: Option<u16>,
        },
        /// `len` bytes cut into pieces of `piece`, each a datagram
        /// or (with `seg`) a train.
        Pieces {
            len: u32,
            piece: u32,
            seg: Option<u16>,
        },
        DisableGso,
        /// The backend submits this many from the front.
        Consume(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let seg = proptest::option::of(1u16..700);
        prop_oneof![
            4 => (0u32..3000, seg.clone()).prop_map(|(len, seg)| Op::Push { len, seg }),
            3 => (0u32..3000, 1u32..1500, seg)
                .prop_map(|(len, piece, seg)| Op::Pieces { len, piece, seg }),
            1 => Just(Op::DisableGso),
            3 => (0usize..12).prop_map(Op::Consume),
        ]
    }

    /// What the kernel puts on the wire for `len` bytes at `off` sent
    /// with segment size `seg`: (offset, length) of each datagram.
    fn cut(off: u32, len: u32, seg: Option<u16>) -> Vec<(u32, u32)> {
        match seg {
            Some(s) if len > u32::from(s) => (0..len.div_ceil(u32::from(s)))
                .map(|i| {
                    let o = i * u32::from(s);
                    (off + o, u32::from(s).min(len - o))
                })
                .collect(),
            _ => vec![(off, len)],
        }
    }

    /// One queued send as the model sees it.
    #[derive(Clone, Debug, PartialEq)]
    struct Send {
        slot: u32,
        /// Its datagrams on the wire.
        wire: Vec<(u32, u32)>,
        ts: Option<u32>,
    }

    /// The sends one push makes while GSO is `gso`: a send per piece
    /// (one piece for a plain push), each cut by the queue when GSO is
    /// off, by the kernel when it is on.
    fn sends(
        slot: u32,
        len: u32,
        piece: Option<u32>,
        seg: Option<u16>,
        gso: bool,
        ts: u32,
    ) -> Vec<Send> {
        let pieces: Vec<(u32, u32)> = match piece {
            None => vec![(0, len)],
            Some(p) => (0..len.div_ceil(p))
                .map(|i| (i * p, p.min(len - i * p)))
                .collect(),
        };
        let mut out = Vec::new();
        for (off, l) in pieces {
            let wire = cut(off, l, seg);
            if gso || wire.len() == 1 {
                out.push(Send {
                    slot,
                    wire,
                    ts: None,
                });
            } else {
                out.extend(wire.into_iter().map(|w| Send {
                    slot,
                    wire: vec![w],
                    ts: None,
                }));
            }
        }
        if let Some(first) = out.first_mut() {
            first.ts = Some(ts);
        }
        out
    }

    /// The queue's sends, each expanded as the kernel would cut it.
    fn observed(q: &SendQueue) -> Vec<Send> {
        q.as_slice()
            .iter()
            .map(|t| Send {
                slot: t.slot,
                wire: cut(t.off, t.len, t.segment.map(NonZeroU16::get)),
                ts: t.ts_id,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn the_queue_sends_what_the_model_expects(
            ops in proptest::collection::vec(op(), 1..60),
            cap in 1usize..40,
            gso in any::<bool>(),
        ) {
            let mut pool = Pool::new(4096, 1, 64, false).unwrap();
            let mut q = SendQueue::new(cap, gso);
            let mut model: VecDeque<Send> = VecDeque::new();
            let mut gso = gso;
            for (k, op) in ops.into_iter().enumerate() {
                let ts = k as u32;
                let (len, piece, seg) = match op {
                    Op::Push { len, seg } => (len, None, seg),
                    Op::Pieces { len, piece, seg } => (len, Some(piece), seg),
                    Op::DisableGso => {
                        q.disable_gso();
                        gso = false;
                        continue;
                    }
                    Op::Consume(n) => {
                        let n = n.min(q.len());
                        for t in &q.as_slice()[..n] {
                            pool.unref(t.slot);
                        }
                        q.consume(n);
                        model.drain(..n);
                        prop_assert_eq!(observed(&q), Vec::from(model.clone()));
                        continue;
                    }
                };
                // As Core does: a slot lent for the push, given back after.
                let slot = pool.alloc_send().unwrap().slot();
                let t = Transmit {
                    len,
                    segment: seg.and_then(NonZeroU16::new),
                    ts_id: Some(ts),
                    ..train_at(slot)
                };
                let want = sends(slot, len, piece, seg, gso, ts);
                let room = model.len() + want.len() <= cap;
                let queued = match piece {
                    None => q.try_push(&mut pool, t),
                    Some(p) => q.try_push_pieces(&mut pool, t, NonZeroU32::new(p).unwrap()),
                };
                prop_assert_eq!(queued, room, "room for {} sends", want.len());
                if room {
                    model.extend(want);
                }
                pool.unref(slot);
                prop_assert_eq!(observed(&q), Vec::from(model.clone()));
                // One reference per queued send, on its slot.
                prop_assert_eq!(pool.counts().out as usize, distinct_slots(&q));
            }
            give_back(&mut pool, &mut q);
            prop_assert_eq!(pool.counts().out, 0, "every reference came back");
        }
    }
}

mod coalescing {
    //! [`SendQueue::coalesce`] against what the wire must carry: random
    //! queues of datagrams (four destinations, sizes on both sides of
    //! [`COALESCE_MAX`], some asking for a TX timestamp, some pushed as
    //! trains), with or without GSO and with few or many send slots free.
    //! After coalescing, the datagrams each transmit puts on the wire (cut
    //! as the kernel cuts a train) are the ones queued, byte for byte, to
    //! the same destinations in the same order; a train holds at most 64
    //! datagrams of one size but its last; nothing with a timestamp or
    //! over the size joined one; every slot reference comes back.

    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn dst(i: u8) -> RawAddr {
        let a: SocketAddr = format!("127.0.0.{}:{}", 1 + i % 2, 9000 + u16::from(i / 2))
            .parse()
            .unwrap();
        RawAddr::from_socket_addr(a, false)
    }

    /// Queues `len` bytes of `fill` to `to` from a fresh send slot.
    fn queue(pool: &mut Pool, q: &mut SendQueue, to: u8, len: u32, fill: u8, ts: bool, seg: bool) {
        let mut lent = pool.alloc_send().unwrap();
        lent.set_window(0, len);
        lent.bytes_mut().fill(fill);
        let t = Transmit {
            len,
            dst: dst(to),
            ts_id: ts.then_some(u32::from(fill)),
            segment: NonZeroU16::new(if seg { 100 } else { 0 }),
            ..train_at(lent.slot())
        };
        q.push(pool, t);
        pool.release(lent);
    }

    /// (destination, bytes) of every datagram the queue puts on the wire.
    fn wire(pool: &Pool, q: &SendQueue) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        for t in q.as_slice() {
            let to = (0..4).find(|&i| dst(i).same(&t.dst)).unwrap();
            let seg = t.segment.map_or(t.len, |s| u32::from(s.get()));
            let mut o = 0;
            while o < t.len {
                let l = seg.min(t.len - o);
                out.push((to, pool.bytes_of(t.slot, t.off + o, l)));
                o += l;
            }
        }
        out
    }

    proptest! {
        #[test]
        fn coalescing_puts_the_same_datagrams_on_the_wire(
            sends in proptest::collection::vec(
                (0u8..4, prop_oneof![1u32..=64, 500u32..=530], proptest::bool::weighted(0.1),
                 proptest::bool::weighted(0.05)),
                1..120,
            ),
            gso in any::<bool>(),
            spare in 0usize..4,
        ) {
            // Room for every datagram's slot, and `spare` more for trains.
            let mut pool = Pool::new(2048, 1, sends.len() + spare, false).unwrap();
            let mut q = SendQueue::new(4096, gso);
            for (k, &(to, len, ts, seg)) in sends.iter().enumerate() {
                queue(&mut pool, &mut q, to, len, k as u8, ts, seg);
            }
            let before = wire(&pool, &q);
            let n = q.len();
            let made = q.coalesce(&mut pool);
            prop_assert_eq!(wire(&pool, &q), before);
            if !gso {
                prop_assert_eq!((made, q.len()), (0, n));
            }
            prop_assert!(made <= spare.max(1) * n, "a train per free slot, at most");
            for t in q.as_slice().iter().filter(|t| t.coalesced) {
                let seg = u32::from(t.segment.unwrap().get());
                prop_assert!(seg <= COALESCE_MAX && t.ts_id.is_none());
                prop_assert!(t.len.div_ceil(seg) as usize <= COALESCE_SEGMENTS);
                prop_assert!(t.len > seg, "a train of one is not made");
            }
            // Only the queued sends' slots are out.
            prop_assert_eq!(pool.counts().out as usize, distinct_slots(&q));
            give_back(&mut pool, &mut q);
            prop_assert_eq!(pool.counts().out, 0, "every reference came back");
        }
    }

    /// 100 datagrams of 64 B to one peer make two trains (64 + 36): the
    /// kernel's segment limit; in 2 KiB slots, trains of what a slot holds.
    #[test]
    fn a_run_is_cut_at_64_datagrams() {
        let mut pool = Pool::new(8192, 1, 102, false).unwrap();
        let mut q = SendQueue::new(4096, true);
        for k in 0..100 {
            queue(&mut pool, &mut q, 0, 64, k, false, false);
        }
        assert_eq!(q.coalesce(&mut pool), 2);
        let trains: Vec<u64> = q.as_slice().iter().map(|t| t.datagrams()).collect();
        assert_eq!(trains, [64, 36]);
        give_back(&mut pool, &mut q);
        let mut pool = Pool::new(2048, 1, 106, false).unwrap();
        for k in 0..100 {
            queue(&mut pool, &mut q, 0, 64, k, false, false);
        }
        let per = pool.send_cap() as u64 / 64;
        assert_eq!(q.coalesce(&mut pool), 100usize.div_ceil(per as usize));
        assert!(q.as_slice().iter().all(|t| t.datagrams() <= per));
        assert_eq!(q.as_slice().iter().map(|t| t.datagrams()).sum::<u64>(), 100);
        q.set_coalesce(false);
        assert_eq!(q.coalesce(&mut pool), 0, "off means off");
        q.set_coalesce(true);
        give_back(&mut pool, &mut q);
        for k in 0..10 {
            queue(&mut pool, &mut q, 0, 64, k, false, false);
        }
        for t in q.iter_mut() {
            t.alone = true;
        }
        assert_eq!(q.coalesce(&mut pool), 0, "asked to go each by itself");
        give_back(&mut pool, &mut q);
        assert_eq!(pool.counts().out, 0);
    }
}
