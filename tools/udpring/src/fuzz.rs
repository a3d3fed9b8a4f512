//! One entry point per parser of bytes that come from the network or from
//! a file, for the fuzzer (`fuzz/`, cargo-fuzz, nightly) and for the
//! property tests that run the same functions on stable
//! (`tests/fuzz_targets.rs`, which also replays the fuzzer's corpus and
//! every crash it found). Each takes any bytes, must never panic, and
//! checks what its parser promises of what it returns.

use crate::apps::fanout::control;
use crate::apps::header::{HEADER_LEN, Header};
use crate::apps::load::{dns, histlog, pcap};
use crate::apps::seq::SeqWindow;

/// A target: the name of its fuzz target and corpus folder, and its entry.
pub type Target = (&'static str, fn(&[u8]));

/// Every target of the command's parsers.
pub const TARGETS: &[Target] = &[
    ("header", header),
    ("sequences", sequences),
    ("fanout_control", fanout_control),
    ("dns_reply", dns_reply),
    ("pcap", pcap_file),
    ("payload_file", payload_file),
    ("dnsperf", dnsperf),
    ("interval_log", interval_log),
    ("report_json", report_json),
    ("expect", expect),
];

/// udpring's header (load, ping, mcast ping/pong, sink): a view only of
/// 32 bytes or more with the magic; its fields read back as written.
pub fn header(data: &[u8]) {
    match Header::new_checked(data) {
        Ok(h) => {
            assert!(data.len() >= HEADER_LEN);
            let (token, flow, seq, at) = (h.token(), h.flow(), h.seq(), h.sent_ns());
            let mut copy = data[..HEADER_LEN].to_vec();
            Header::new_unchecked(&mut copy[..]).fill(token, flow, seq, at);
            assert_eq!(
                &copy[..],
                &data[..HEADER_LEN],
                "a header rewritten from its fields"
            );
        }
        Err(_) => assert!(
            data.len() < HEADER_LEN || data[..4] != crate::apps::header::MAGIC.to_be_bytes()
        ),
    }
}

/// What strangers' headers do to the sequence state of a ping, a sink or
/// a listener: sequence numbers read from the input (8 bytes each), any
/// values at all; a number is new at most once.
pub fn sequences(data: &[u8]) {
    let mut w = SeqWindow::new();
    let mut firsts = std::collections::HashSet::new();
    for c in data.chunks_exact(8) {
        let seq = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        if w.mark(seq).is_first() {
            assert!(firsts.insert(seq), "{seq} new twice");
        }
    }
    // Its highest is one of those seen as new.
    if let Some(h) = w.highest() {
        assert!(firsts.contains(&h), "highest {h} never seen as new");
    }
}

/// `fanout --control`: a request or a refusal; a first `SUB` only from a
/// datagram long enough that the answer is not bigger.
pub fn fanout_control(data: &[u8]) {
    if let Ok(control::Request::Hello) = control::parse(data) {
        assert!(data.len() >= control::MIN_FIRST_SUB);
    }
}

/// A DNS reply (`load --dns-queries`): an answer only from a response (QR
/// set) with a whole header; the response code is 4 bits.
pub fn dns_reply(data: &[u8]) {
    if let Some((rcode, _tc)) = dns::answer(data) {
        assert!(data.len() >= 12 && data[2] & 0x80 != 0 && rcode < 16);
        assert!(!dns::rcode_name(rcode).is_empty());
    }
}

/// A capture (`load --pcap`): pcap or pcapng; every datagram's payload
/// lies inside the file.
pub fn pcap_file(data: &[u8]) {
    if let Ok(c) = pcap::parse(data) {
        let bytes: usize = c.datagrams.iter().map(|d| d.payload.len()).sum();
        assert!(bytes <= data.len());
    }
}

/// `load --payload-file`, both formats: what it returns is no bigger than
/// the file.
pub fn payload_file(data: &[u8]) {
    for raw in [false, true] {
        if let Ok(list) = crate::apps::load::payload::payload_file(data, raw) {
            let bytes: usize = list.iter().map(Vec::len).sum();
            assert!(bytes <= data.len());
        }
    }
}

/// A dnsperf query file (`load --dns-queries`): every query is a DNS
/// query (QR clear, one question) of at most 512 bytes with EDNS.
pub fn dnsperf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for edns in [None, Some(1232)] {
        if let Ok(qs) = dns::queries(text, edns) {
            for q in qs {
                assert!(q.len() >= 12 && q[2] & 0x80 == 0 && q[4..6] == [0, 1]);
                assert!(dns::answer(&q).is_none(), "a query is not an answer");
            }
        }
    }
}

/// An HdrHistogram interval log (`report --interval-logs`): bounded by
/// what it holds, and mergeable.
pub fn interval_log(data: &[u8]) {
    if let Ok(log) = histlog::read(data) {
        let n = log.len();
        let (slots, total) = histlog::merge_by_time(vec![log], 1.0).expect("a log read merges");
        assert!(slots.len() <= n);
        assert_eq!(slots.iter().map(|s| s.received).sum::<u64>(), total.len());
    }
}

/// A result file (`report`): a document that parses passes its checks or
/// is refused, and merges with itself or is refused, never a panic.
pub fn report_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(r) = serde_json::from_str::<crate::apps::load::LoadReport>(&text)
        && r.check().is_ok()
    {
        let _ = crate::apps::load::LoadReport::merge(&[r.clone(), r]);
    }
}

/// `--expect` against a stranger's answer: a check made from the first
/// bytes (byte 0: `any:` or an offset, and a mask; byte 1: the pattern's
/// length, 1..=16; byte 2: the offset), written as text and parsed back,
/// the rest the answer. Whether it holds must equal a plain reading of
/// the same bytes (the `any:` search is Knuth-Morris-Pratt).
pub fn expect(data: &[u8]) {
    use crate::apps::load::expect::{Expect, hex};
    let [mode, len, off, rest @ ..] = data else {
        return;
    };
    let n = usize::from(len % 16) + 1;
    let anywhere = mode & 1 == 1;
    let masked = !anywhere && mode & 2 == 2;
    let need = if masked { 2 * n } else { n };
    if rest.len() < need {
        return;
    }
    let (pat, answer) = rest.split_at(need);
    let (mut bytes, mask) = if masked {
        (pat[..n].to_vec(), Some(pat[n..].to_vec()))
    } else {
        (pat.to_vec(), None)
    };
    if let Some(m) = &mask {
        for (b, m) in bytes.iter_mut().zip(m) {
            *b &= m;
        }
    }
    let offset = usize::from(*off);
    let text = match (&mask, anywhere) {
        (_, true) => format!("any:{}", hex(&bytes)),
        (Some(m), false) => format!("{offset}:{}/{}", hex(&bytes), hex(m)),
        (None, false) => format!("{offset}:{}", hex(&bytes)),
    };
    let e = Expect::parse(&text).expect("a check written as the parser reads it");
    assert_eq!(e.to_string(), text);
    let plain = if anywhere {
        answer.windows(n).any(|w| w == &bytes[..])
    } else {
        answer.get(offset..offset + n).is_some_and(|got| {
            got.iter()
                .zip(&bytes)
                .enumerate()
                .all(|(i, (g, b))| g & mask.as_ref().map_or(0xff, |m| m[i]) == *b)
        })
    };
    assert_eq!(e.holds(answer), plain, "{text} in {}", hex(answer));
}
