//! The engine as async streams of owned datagrams
//! (`Engine::start_stream`): a consumer in a tokio task answers every
//! request from the address asked; a full stream drops and counts; a
//! stopped engine ends the stream; buffers are reused, not allocated per
//! datagram. Loopback only.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use udpring::{Config, Engine};

fn stream_engine(depth: usize) -> (Engine, Vec<udpring::Incoming>, SocketAddr) {
    let mut cfg = Config::new("0.0.0.0:0".parse().unwrap());
    cfg.workers = 1;
    let (engine, incoming) = Engine::start_stream(cfg, depth).unwrap();
    let port = engine.local_addr().port();
    (engine, incoming, SocketAddr::from(([127, 0, 0, 7], port)))
}

/// A tokio task serves the stream (upper-cases each request and answers
/// it); the client is connected to 127.0.0.7, so only an answer from the
/// address it asked reaches it. Stopping the engine ends the stream.
#[test]
fn an_async_consumer_answers_every_request_from_the_address_asked() {
    let (engine, mut incoming, to) = stream_engine(64);
    let mut inc = incoming.pop().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            let mut served = 0u32;
            assert_eq!(inc.worker(), 0);
            while let Some(d) = inc.recv().await {
                let out = d.payload().to_ascii_uppercase();
                // Half at once, half the async way (through the inbox when
                // the socket is full): both from the address asked.
                if served % 2 == 0 {
                    inc.reply(&d, &out).unwrap();
                } else {
                    inc.reply_async(&d, &out).await.unwrap();
                }
                served += 1;
            }
            (served, inc.dropped())
        })
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..500u32 {
        let q = format!("request {i}");
        c.send(q.as_bytes()).unwrap();
        let n = c
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("answer {i}: {e}"));
        assert_eq!(&buf[..n], q.to_ascii_uppercase().as_bytes());
    }
    let s = engine.stop().unwrap();
    let (served, dropped) = server.join().unwrap();
    assert_eq!(
        (served, dropped),
        (500, 0),
        "the stream ended with the engine"
    );
    assert_eq!(s.received, 500);
    assert_eq!(s.slots_out, 0);
}

/// Nobody reads: `depth` datagrams wait, the rest are dropped and
/// counted; once taken (and their buffers dropped), the same buffers carry
/// the next ones.
#[test]
fn a_full_stream_drops_and_counts() {
    let (engine, mut incoming, to) = stream_engine(8);
    let inc = &mut incoming[0];
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        c.send_to(&[i], to).unwrap();
    }
    util::wait_workers(&engine, |s| s[0].received >= 50);
    let first: Vec<u8> = std::iter::from_fn(|| inc.try_recv().map(|d| d.payload()[0])).collect();
    assert_eq!(first, (0..8).collect::<Vec<u8>>(), "the first 8, in order");
    assert_eq!(inc.dropped(), 42);
    for i in 100..108u8 {
        c.send_to(&[i], to).unwrap();
    }
    util::wait_workers(&engine, |s| s[0].received >= 58);
    let next: Vec<u8> = std::iter::from_fn(|| inc.try_recv().map(|d| d.payload()[0])).collect();
    assert_eq!(next, (100..108).collect::<Vec<u8>>(), "room again");
    assert_eq!(inc.dropped(), 42);
    util::stop_clean(engine);
}

/// A Sender's async send waits for room in a full inbox instead of
/// answering WouldBlock, and everything it sent arrives.
#[test]
fn send_to_async_waits_for_room() {
    let mut cfg = util::config(udpring::Backend::Mmsg, false);
    cfg.sender_queue = 4;
    let (engine, incoming) = Engine::start_stream(cfg, 16).unwrap();
    let sender = incoming[0].sender().clone();
    let sink = util::client(false);
    let to = sink.local_addr().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..2000u32 {
            sender.send_to_async(&i.to_be_bytes(), to).await.unwrap();
        }
    });
    let mut seen = vec![false; 2000];
    let mut buf = [0u8; 8];
    for _ in 0..2000 {
        let n = sink.recv(&mut buf).unwrap();
        seen[u32::from_be_bytes(buf[..n].try_into().unwrap()) as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
    util::stop_clean(engine);
}
