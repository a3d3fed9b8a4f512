//! The echo path per backend, payload size and batch, measured with the same
//! pair `udpring bench` uses: an echo engine (the backend under test, one
//! worker on the first CPU) and a flood client engine (always the same
//! backend, on the last CPU) keeping a window of datagrams in flight.
//!
//! Each sample waits for `iters x 64` more echoes; throughput is in echoed
//! datagrams. Group names carry the configuration:
//! `echo/<backend>/<size>B/batch<n>/window<w>[/gso]`, where `batch` is the
//! server's `recvmmsg`/`sendmmsg` batch (it only matters for `mmsg`) and
//! `window1` is closed-loop ping-pong (one datagram in flight).
//!
//! Run: `cargo bench --bench echo`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udpring::Backend;
use udpring_cli::apps::bench::{BenchOpts, Case, Pair, Workload};

const PER_ITER: u64 = 64;

fn run(c: &mut Criterion, case: Case, batch: usize, window: u64) {
    let opts = BenchOpts {
        window: Some(window),
        ..BenchOpts::default()
    };
    let pair = Pair::start(case, &opts, batch).expect("start echo pair");
    let per_iter = if window == 1 { 1 } else { PER_ITER };
    let gso = if case.gso { "/gso" } else { "" };
    let name = format!(
        "echo/{}/{}B/batch{batch}/window{window}{gso}",
        case.backend, case.size
    );
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(per_iter));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.bench_function("echoed", |b| {
        b.iter_custom(|iters| {
            let want = iters * per_iter;
            let e0 = pair.echoed();
            let t = Instant::now();
            let deadline = t + Duration::from_secs(20);
            while pair.echoed() - e0 < want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
            t.elapsed()
        })
    });
    g.finish();
    pair.stop().expect("clean stop");
}

fn bench_echo(c: &mut Criterion) {
    let mut backends = vec![Backend::Simple, Backend::Mmsg];
    if udpring::uring_support().is_ok() {
        backends.push(Backend::Uring);
    }
    for &backend in &backends {
        for size in [64usize, 1400] {
            let batches: &[usize] = if backend == Backend::Mmsg {
                &[8, 32, 128]
            } else {
                &[32]
            };
            for &batch in batches {
                run(
                    c,
                    Case {
                        workload: Workload::Flood,
                        backend,
                        size,
                        gso: false,
                    },
                    batch,
                    256,
                );
            }
        }
        run(
            c,
            Case {
                workload: Workload::Ping,
                backend,
                size: 64,
                gso: false,
            },
            32,
            1,
        );
    }
    if backends.contains(&Backend::Uring) {
        for size in [64usize, 1400] {
            run(
                c,
                Case {
                    workload: Workload::Flood,
                    backend: Backend::Uring,
                    size,
                    gso: true,
                },
                32,
                256,
            );
        }
    }
}

criterion_group!(benches, bench_echo);
criterion_main!(benches);
