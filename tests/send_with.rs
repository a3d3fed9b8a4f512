//! Datagrams built in place. `send_with` sends exactly the bytes its
//! closure says it wrote into the lent slot, and never anything an earlier
//! datagram left there; `send_segments_with` a GSO train whose last
//! segment is short; into a full pool the call fails clearly, without
//! calling the closure, and nothing queued before is lost; a slot's tag and
//! bytes are still there when it is lent again, and a copying send clears
//! the tag. `send_each_with` sends each piece as a datagram of its own, all
//! or none; `send_trains_with` each train as a send of its own, all or
//! none.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udpring::{Config, Datagram, Engine, Handler, SendError, Transport};

/// Starts an engine whose one worker runs `handler`, and reads `n`
/// datagrams at `sink` (each within 2 s).
fn start_and_read<H: Handler + Send + 'static>(
    sink: &UdpSocket,
    cfg: Config,
    handler: H,
    n: usize,
) -> (Engine, Vec<Vec<u8>>) {
    let h = Mutex::new(Some(handler));
    let engine = Engine::start(cfg, move |_| h.lock().unwrap().take().unwrap()).unwrap();
    let mut buf = [0u8; 2048];
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let got = (0..n)
        .map(|_| {
            let (len, _) = sink.recv_from(&mut buf).unwrap();
            buf[..len].to_vec()
        })
        .collect();
    (engine, got)
}

/// Whether nothing more arrives at `sink` within 200 ms.
fn nothing_more(sink: &UdpSocket) -> bool {
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    sink.recv_from(&mut [0u8; 2048]).is_err()
}

#[derive(Default)]
struct Seen {
    results: Vec<Result<usize, SendError>>,
    tags: Vec<(u64, bool)>,
}

struct Builder {
    to: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    step: u32,
}

/// `n` bytes of a pattern of its own per `tag`.
fn pattern(n: usize, tag: u8) -> Vec<u8> {
    util::pattern(n, tag)
}

/// Writes `data` at the start of `b`; says how many bytes it wrote.
fn write(b: &mut udpring::SendBuf<'_>, data: &[u8]) -> usize {
    b[..data.len()].copy_from_slice(data);
    data.len()
}

const TIMER: u64 = 1;

impl Handler for Builder {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let mut seen = self.seen.lock().unwrap();
        // One datagram, one train of 100-byte segments with a 50-byte last.
        let one = tx.send_with(300, self.to, |b| {
            b.copy_from_slice(&pattern(300, 1));
            300
        });
        seen.results.push(one);
        let train = tx.send_segments_with(0, 100, 350, self.to, |b| {
            b.copy_from_slice(&pattern(350, 2));
            b.set_tag(7);
            350
        });
        seen.results.push(train);
        // The pool has 4 send slots: two more fit, the third does not and
        // its closure is never run.
        for k in 0..3u8 {
            let mut called = false;
            let r = tx.send_with(10, self.to, |b| {
                called = true;
                b.copy_from_slice(&pattern(10, 3 + k));
                10
            });
            assert_eq!(called, r.is_ok());
            seen.results.push(r);
        }
        tx.call_later(Duration::from_millis(100), TIMER);
    }

    fn on_timer(&mut self, _t: u64, tx: &mut Transport<'_>) {
        // The slots are home again. One of them kept the train's tag and
        // bytes; a send that copies clears the tag of the slot it uses.
        let mut seen = self.seen.lock().unwrap();
        self.step += 1;
        let want = pattern(350, 2);
        if self.step == 2 {
            for _ in 0..4 {
                tx.send_to(&pattern(350, 9), self.to).unwrap();
            }
        } else {
            for _ in 0..4 {
                let mut saw = (0, false);
                tx.send_with(350, self.to, |b| {
                    saw = (b.tag(), b[..] == want[..]);
                    350
                })
                .unwrap();
                seen.tags.push(saw);
            }
        }
        if self.step < 3 {
            drop(seen);
            tx.call_later(Duration::from_millis(100), TIMER);
        }
    }

    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

per_backend!(
    fn sends_exactly_what_was_written_in_place(backend) {
        let sink = util::client(false);
        let mut cfg = util::config(backend, false);
        cfg.send_slots = 4;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let builder = Builder {
            to: sink.local_addr().unwrap(),
            seen: seen.clone(),
            step: 0,
        };
        // 1 + 4 segments + 2 small, then 12 of 350 bytes from the timers.
        let (engine, got) = start_and_read(&sink, cfg, builder, 19);
        let s = util::stop_clean(engine);
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.results,
            vec![Ok(300), Ok(350), Ok(10), Ok(10), Err(SendError::Exhausted)]
        );
        assert_eq!(s.send_exhausted, 1, "the refusal is counted");
        assert_eq!(got[0], pattern(300, 1), "the single datagram, byte for byte");
        let train = pattern(350, 2);
        for (k, seg) in got[1..5].iter().enumerate() {
            let end = (100 * (k + 1)).min(350);
            assert_eq!(seg[..], train[100 * k..end], "segment {k}");
        }
        assert_eq!(got[4].len(), 50, "the odd last segment");
        assert_eq!((got[5].clone(), got[6].clone()), (pattern(10, 3), pattern(10, 4)));
        // The train's slot, and only it, came back with its tag and bytes.
        let kept: Vec<_> = seen.tags[..4].iter().filter(|t| t.0 == 7).collect();
        assert_eq!(kept, vec![&(7, true)], "{:?}", seen.tags);
        assert!(
            seen.tags[4..].iter().all(|t| t.0 == 0),
            "copies cleared every tag: {:?}",
            seen.tags
        );
        assert_eq!(s.sent, 1 + 4 + 2 + 12);
    }
);

/// Trains for a socket with `Config::udp_segment`: of that size (a plain
/// send the socket cuts), of another size (their own control message),
/// and a single datagram shorter than the segment.
struct Mixed(SocketAddr);

impl Handler for Mixed {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.send_segments_with(0, 100, 350, self.0, |b| write(b, &pattern(350, 5)))
            .unwrap();
        tx.send_segments_with(0, 50, 120, self.0, |b| write(b, &pattern(120, 6)))
            .unwrap();
        tx.send_with(80, self.0, |b| write(b, &pattern(80, 7)))
            .unwrap();
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

per_backend!(
    fn a_sockets_own_segment_size_cuts_its_trains(backend) {
        let sink = util::client(false);
        let mut cfg = util::config(backend, false);
        cfg.udp_segment = Some(100);
        let to = sink.local_addr().unwrap();
        let (engine, got) = start_and_read(&sink, cfg, Mixed(to), 8);
        let s = util::stop_clean(engine);
        let mut want: Vec<Vec<u8>> = pattern(350, 5).chunks(100).map(<[u8]>::to_vec).collect();
        want.extend(pattern(120, 6).chunks(50).map(<[u8]>::to_vec));
        want.push(pattern(80, 7));
        assert_eq!(got, want);
        assert_eq!((s.sent, s.sent_bufs), (8, 3));
    }
);

/// `send_each_with`: pieces built in one slot, each its own datagram even
/// where trains would go whole (a socket with `UDP_SEGMENT` of that very
/// size), all of them queued or none.
struct Each(SocketAddr, Arc<Mutex<Vec<Result<usize, SendError>>>>);

impl Handler for Each {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let mut r = self.1.lock().unwrap();
        r.push(tx.send_each_with(0, 100, 350, self.0, |b| write(b, &pattern(350, 8))));
        // Five more do not fit in a queue of six: none is queued.
        r.push(tx.send_each_with(0, 100, 500, self.0, |b| write(b, &pattern(500, 9))));
        r.push(tx.send_each_with(0, 40, 80, self.0, |b| write(b, &pattern(80, 10))));
        r.push(tx.send_each_with(0, 40, 0, self.0, |_| 0));
        // Nothing written of a capacity: no piece.
        r.push(tx.send_each_with(0, 40, 80, self.0, |_| 0));
        r.push(tx.send_each_with(0, 0, 80, self.0, |_| 0));
        r.push(tx.send_each_with(3, 40, 80, self.0, |_| 0));
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

per_backend!(
    fn each_piece_goes_as_its_own_datagram(backend) {
        let sink = util::client(false);
        let mut cfg = util::config(backend, false);
        cfg.udp_segment = Some(100);
        cfg.max_queued_sends = 6;
        let results = Arc::new(Mutex::new(Vec::new()));
        let handler = Each(sink.local_addr().unwrap(), results.clone());
        let (engine, got) = start_and_read(&sink, cfg, handler, 6);
        assert!(nothing_more(&sink), "nothing of the refused batch went");
        let s = util::stop_clean(engine);
        let mut want: Vec<Vec<u8>> = pattern(350, 8).chunks(100).map(<[u8]>::to_vec).collect();
        want.extend(pattern(80, 10).chunks(40).map(<[u8]>::to_vec));
        assert_eq!(got, want, "every piece, byte for byte, the odd last one too");
        assert_eq!(
            *results.lock().unwrap(),
            vec![
                Ok(350),
                Err(SendError::Exhausted),
                Ok(80),
                Ok(0),
                Ok(0),
                Err(SendError::TooLarge),
                Err(SendError::NoSuchSocket)
            ]
        );
        assert_eq!((s.sent, s.sent_bufs), (6, 6), "six sends, not trains");
        assert_eq!(s.send_exhausted, 1, "the refusal is counted");
    }
);

/// `send_trains_with`: trains built in one slot, each its own GSO send (a
/// plain send where the socket's own `UDP_SEGMENT` is that size, a control
/// message otherwise, a plain datagram for a piece of one segment), all
/// of them queued or none.
struct Trains(SocketAddr, Arc<Mutex<Vec<Result<usize, SendError>>>>);

impl Handler for Trains {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let mut r = self.1.lock().unwrap();
        // 250 + 250 + 100 bytes: two trains of 100 + 100 + 50, one datagram.
        r.push(tx.send_trains_with(0, 100, 250, 600, self.0, |b| write(b, &pattern(600, 11))));
        // 120 + 80 bytes of 40-byte segments: 3 and 2 datagrams.
        r.push(tx.send_trains_with(0, 40, 120, 200, self.0, |b| write(b, &pattern(200, 12))));
        // Two more sends do not fit in a queue of six: none is queued.
        r.push(tx.send_trains_with(0, 100, 200, 400, self.0, |b| write(b, &pattern(400, 13))));
        r.push(tx.send_trains_with(0, 100, 200, 0, self.0, |_| 0));
        r.push(tx.send_trains_with(0, 0, 200, 400, self.0, |_| 0));
        r.push(tx.send_trains_with(0, 100, 0, 400, self.0, |_| 0));
        r.push(tx.send_trains_with(3, 100, 200, 400, self.0, |_| 0));
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

per_backend!(
    fn each_train_goes_as_its_own_send(backend) {
        let sink = util::client(false);
        let mut cfg = util::config(backend, false);
        cfg.udp_segment = Some(100);
        cfg.max_queued_sends = 6;
        let results = Arc::new(Mutex::new(Vec::new()));
        let handler = Trains(sink.local_addr().unwrap(), results.clone());
        let (engine, got) = start_and_read(&sink, cfg, handler, 12);
        assert!(nothing_more(&sink), "nothing of the refused trains went");
        let s = util::stop_clean(engine);
        let a = pattern(600, 11);
        let mut want: Vec<Vec<u8>> = [(0, 100), (100, 200), (200, 250), (250, 350)]
            .into_iter()
            .chain([(350, 450), (450, 500), (500, 600)])
            .map(|(x, y)| a[x..y].to_vec())
            .collect();
        want.extend(pattern(200, 12).chunks(40).map(<[u8]>::to_vec));
        assert_eq!(got, want, "every segment, byte for byte, each train's odd last one too");
        assert_eq!(
            *results.lock().unwrap(),
            vec![
                Ok(600),
                Ok(200),
                Err(SendError::Exhausted),
                Ok(0),
                Err(SendError::TooLarge),
                Err(SendError::TooLarge),
                Err(SendError::NoSuchSocket)
            ]
        );
        assert_eq!((s.sent, s.sent_bufs), (12, 5), "five sends: four trains, one datagram");
        assert_eq!(s.send_exhausted, 1, "the refusal is counted");
    }
);

/// With one send slot, every send uses the same bytes. After a copy of
/// someone's 64-byte secret: a datagram built in place that writes 4
/// bytes of a 64-byte capacity goes out as those 4 bytes; one that claims
/// all 64 goes out as its 4 bytes and zeros, never the secret; one that
/// claims more than its capacity sends nothing. A tag keeps the
/// handler's own bytes on purpose, and a copy ends that.
struct Stale(SocketAddr, Arc<Mutex<Vec<Result<usize, SendError>>>>, u32);

const SECRET: &[u8; 64] = b"another client's answer: do not send this to anybody else, ever.";

impl Handler for Stale {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.call_every(Duration::from_millis(20), 0);
    }
    fn on_timer(&mut self, _t: u64, tx: &mut Transport<'_>) {
        // One send a tick: the one slot is home again at the next.
        let mut r = self.1.lock().unwrap();
        let to = self.0;
        self.2 += 1;
        let out = match self.2 {
            1 | 4 | 6 => tx.send_to(SECRET, to).map(|()| 64),
            2 => tx.send_with(64, to, |b| write(b, b"four")),
            3 => tx.send_with(64, to, |b| {
                b[..4].copy_from_slice(b"FOUR");
                b.set_tag(0);
                64
            }),
            5 => tx.send_with(64, to, |b| {
                b[..4].copy_from_slice(b"kept");
                b.set_tag(99);
                4
            }),
            7 => tx.send_with(64, to, |b| {
                // The copy cleared the tag: zeros again, and an answer
                // longer than its capacity goes nowhere.
                assert_eq!((b.tag(), &b[..]), (0, &[0u8; 64][..]));
                65
            }),
            8 => tx.send_with(64, to, |b| {
                assert_eq!(b.tag(), 0);
                b.set_tag(5);
                write(b, b"tagged")
            }),
            9 => tx.send_with(64, to, |b| {
                assert_eq!((b.tag(), &b[..6]), (5, &b"tagged"[..]), "kept on purpose");
                6
            }),
            _ => return,
        };
        r.push(out);
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

per_backend!(
    fn nothing_stale_goes_out_with_one_send_slot(backend) {
        let sink = util::client(false);
        let mut cfg = util::config(backend, false);
        cfg.send_slots = 1;
        let results = Arc::new(Mutex::new(Vec::new()));
        let handler = Stale(sink.local_addr().unwrap(), results.clone(), 0);
        let (engine, got) = start_and_read(&sink, cfg, handler, 8);
        assert!(nothing_more(&sink), "the over-long answer went nowhere");
        let s = util::stop_clean(engine);
        let mut zeros = b"FOUR".to_vec();
        zeros.resize(64, 0);
        let want: Vec<Vec<u8>> = vec![
            SECRET.to_vec(),
            b"four".to_vec(),
            zeros,
            SECRET.to_vec(),
            b"kept".to_vec(),
            SECRET.to_vec(),
            b"tagged".to_vec(),
            b"tagged".to_vec(),
        ];
        assert_eq!(got[..], want[..]);
        assert_eq!(
            *results.lock().unwrap(),
            vec![Ok(64), Ok(4), Ok(64), Ok(64), Ok(4), Ok(64), Err(SendError::TooLarge), Ok(6), Ok(6)]
        );
        assert_eq!(s.sent, 8);
    }
);

/// Forwards the datagram to `a`, rewrites its first byte, forwards it to
/// `b`, and answers with a copy taken after the rewrite and then the first
/// byte changed again.
struct Rewriter {
    a: SocketAddr,
    b: SocketAddr,
}

impl Handler for Rewriter {
    fn on_datagram(&mut self, mut d: Datagram<'_>, tx: &mut Transport<'_>) {
        tx.forward(&d, self.a).unwrap();
        d.payload_mut()[0] = b'B';
        tx.forward(&d, self.b).unwrap();
        tx.reply_with(&d, d.payload()).unwrap();
        d.payload_mut()[0] = b'C';
    }
}

per_backend!(
    /// The documented lazy send: `forward` and `reply` queue the
    /// datagram's own buffer, read when the batch goes after the handler
    /// returns, so both forwards carry the last bytes written there;
    /// `reply_with` copies when called.
    fn a_lent_buffer_is_read_when_the_batch_goes_a_copy_when_made(backend) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut cfg = Config::new("127.0.0.1:0".parse().unwrap());
        cfg.backend = Some(backend);
        cfg.workers = 1;
        let h = Rewriter {
            a: a.local_addr().unwrap(),
            b: b.local_addr().unwrap(),
        };
        let hm = Mutex::new(Some(h));
        let engine = Engine::start(cfg, move |_| hm.lock().unwrap().take().unwrap()).unwrap();
        client.send_to(b"Abc", engine.local_addr()).unwrap();
        let mut buf = [0u8; 16];
        for (who, s) in [("a", &a), ("b", &b), ("the client", &client)] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let n = s.recv(&mut buf).unwrap_or_else(|e| panic!("{backend}: {who}: {e}"));
            let want: &[u8] = if who == "the client" { b"Bbc" } else { b"Cbc" };
            assert_eq!(&buf[..n], want, "{backend}: {who}");
        }
        let s = util::stop_clean(engine);
        assert_eq!(s.sent, 3, "{backend}");
    }
);
