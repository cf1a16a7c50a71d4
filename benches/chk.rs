//! CHK throughput: encode and decode of a 64 MiB file, 3-of-10, 1 MiB segments.
//!
//! - `chk_cpu` (process CPU time, so per-core throughput whatever the machine load): encode with a
//!   convergent key on a 1-thread rayon pool (shares go to a sink
//!   that discards them, so only the encoder is measured) and
//!   decode on one thread from the systematic shares 0..3 and from parity shares 7, 8, 9;
//! - `chk_wall` (wall clock): encode on 1 and 2 threads, for the scaling.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "support/cputime.rs"]
mod cputime;
use cputime::ProcessCpuTime;
use lafs::cap::NodeCap;
use lafs::immutable::{
    encode_bytes, encode_file, BoxError, Downloader, EncodingParams, KeySource, MemoryShares,
    OutputSink, ShareSink, SliceSource,
};

const SIZE: usize = 64 << 20;

fn plaintext() -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Discard;
impl ShareSink for Discard {
    fn write(&mut self, _: usize, _: u64, _: &[u8]) -> Result<(), BoxError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

struct Count(u64);
impl OutputSink for Count {
    fn write(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.0 += data.len() as u64;
        Ok(())
    }
}

fn encode_with_threads<M: criterion::measurement::Measurement>(
    g: &mut criterion::BenchmarkGroup<'_, M>,
    data: &[u8],
    threads: usize,
) {
    let params = EncodingParams::default();
    let key = KeySource::Convergent(vec![7u8; 32]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    g.bench_function(
        format!("encode_64MiB_3of10_convergent_{threads}thread"),
        |b| {
            b.iter(|| {
                pool.install(|| {
                    encode_file(&mut SliceSource(data), &mut Discard, &params, &key).unwrap()
                })
            })
        },
    );
}

/// Per-core figures: process CPU time, one worker thread.
fn per_core(c: &mut Criterion<ProcessCpuTime>) {
    let data = plaintext();
    let mut g = c.benchmark_group("chk_cpu");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    encode_with_threads(&mut g, &data, 1);
    let params = EncodingParams::default();
    let key = KeySource::Convergent(vec![7u8; 32]);
    let f = encode_bytes(&data, &params, &key).unwrap();
    let NodeCap::Chk(cap) = f.cap else {
        panic!("CHK expected")
    };
    for (name, order) in [
        ("systematic_0_1_2", [0usize, 1, 2]),
        ("parity_7_8_9", [7, 8, 9]),
    ] {
        let mut store = MemoryShares::new(f.shares.clone());
        g.bench_function(format!("decode_64MiB_3of10_{name}"), |b| {
            b.iter(|| {
                let mut d = Downloader::with_share_order(&cap, &mut store, order).unwrap();
                let mut out = Count(0);
                d.read_all(&mut out).unwrap();
                assert_eq!(out.0, SIZE as u64);
            })
        });
    }
    g.finish();
}

/// Scaling across threads is a wall-clock question.
fn scaling(c: &mut Criterion) {
    let data = plaintext();
    let mut g = c.benchmark_group("chk_wall");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    for threads in [1usize, 2] {
        encode_with_threads(&mut g, &data, threads);
    }
    g.finish();
}

criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ProcessCpuTime);
    targets = per_core
}
criterion_group!(wall, scaling);
criterion_main!(cpu, wall);
