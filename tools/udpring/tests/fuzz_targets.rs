//! The fuzz targets (`fuzz/`, run with cargo-fuzz on nightly), on stable:
//! each parser of bytes from the network or from a file gets random bytes
//! (proptest), and every input of its fuzz corpus and every crash the
//! fuzzer found (`fuzz/corpus/TARGET`, `fuzz/regressions/TARGET`) is
//! replayed: what the fuzzer learned stays a test without a nightly
//! toolchain.

use proptest::prelude::*;

/// The command's targets and the engine's (`cmsg`, behind its `fuzzing`
/// feature).
fn targets() -> Vec<udpring_cli::fuzz::Target> {
    let mut t = udpring_cli::fuzz::TARGETS.to_vec();
    t.push(("cmsg", udpring::fuzzing::cmsg));
    t.push(("frame", udpring::fuzzing::frame));
    t
}

/// The files under `fuzz/DIR/TARGET`, read.
fn inputs(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(dir)
        .join(target);
    let Ok(rd) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    let mut v: Vec<(String, Vec<u8>)> = rd
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_has_a_fuzz_target_and_a_corpus() {
    for (name, _) in targets() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../fuzz/fuzz_targets/{name}.rs"));
        assert!(src.exists(), "no fuzz target for {name}: {}", src.display());
        assert!(!inputs("corpus", name).is_empty(), "no corpus for {name}");
    }
}

#[test]
fn the_corpus_and_the_crashes_found_replay_clean() {
    for (name, f) in targets() {
        for dir in ["corpus", "regressions"] {
            for (path, bytes) in inputs(dir, name) {
                let r = std::panic::catch_unwind(|| f(&bytes));
                assert!(r.is_ok(), "{name}: {path} panics");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes, for every target.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for (_, f) in targets() {
            f(&bytes);
        }
    }

    /// Random text (any UTF-8, not only ASCII): the file formats that are
    /// text (hex payloads, dnsperf queries, interval logs, JSON).
    #[test]
    fn random_text_never_panics(text in "(?s).{0,200}") {
        for (_, f) in targets() {
            f(text.as_bytes());
        }
    }

    /// Random bytes behind each target's own seeds (the start of a valid
    /// input, then noise): deeper than bytes from nothing.
    #[test]
    fn seeded_noise_never_panics(pick in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>(),
                                 noise in proptest::collection::vec(any::<u8>(), 0..256)) {
        for (name, f) in targets() {
            let seeds = inputs("corpus", name);
            if seeds.is_empty() {
                continue;
            }
            let (_, s) = &seeds[pick.index(seeds.len())];
            let mut b = s[..cut.index(s.len() + 1)].to_vec();
            b.extend_from_slice(&noise);
            f(&b);
        }
    }

    /// `--expect any:` on patterns and answers of two letters, where a
    /// match half made and broken (what the search's table is for) is the
    /// rule rather than, as in random bytes, the exception.
    #[test]
    fn expect_on_two_letters(len in 0u8..6, pat_answer in proptest::collection::vec(0x61u8..=0x62, 1..64)) {
        let mut b = vec![1, len, 0];
        b.extend_from_slice(&pat_answer);
        udpring_cli::fuzz::expect(&b);
    }
}
