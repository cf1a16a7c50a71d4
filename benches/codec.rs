//! Erasure codec throughput (input bytes per CPU-second of the process, i.e. per core), per
//! available kernel:
//! - `encode_3of10`: Tahoe's default 3-of-10 on a 131073-byte segment (3 pieces of 43691 B);
//! - `decode_3of10`: the same segment rebuilt from shares 7, 8, 9 (the worst case: every piece
//!   is missing, so all three are recomputed from parity);
//! - `encode_2of3`: 2-of-3 on a 131072-byte segment;
//! - `anchor`: `reed-solomon-simd` encoding 3 original + 7 recovery shards of 43692 B (it needs
//!   even shard sizes) and decoding from 3 recovery shards; it is not zfec-compatible and is here
//!   only as a yardstick.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "support/cputime.rs"]
mod cputime;
use cputime::ProcessCpuTime;
use lafs::codec::{kernel, Codec};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use std::hint::black_box;

fn pieces(k: usize, bl: usize) -> Vec<Vec<u8>> {
    // A deterministic xorshift stream: the kernels are data-independent, any bytes do.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..k)
        .map(|_| {
            (0..bl)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

fn bench_encode(c: &mut Criterion<ProcessCpuTime>, group: &str, k: usize, n: usize, bl: usize) {
    let data = pieces(k, bl);
    let ins: Vec<&[u8]> = data.iter().map(|v| &v[..]).collect();
    let mut parity = vec![vec![0u8; bl]; n - k];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes((k * bl) as u64));
    for (name, f) in kernel::available() {
        let codec = Codec::with_kernel(k, n, f).expect("valid parameters");
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|v| &mut v[..]).collect();
                codec.encode(black_box(&ins), &mut outs).expect("encode");
            })
        });
    }
    g.finish();
}

fn bench_decode_3of10(c: &mut Criterion<ProcessCpuTime>) {
    let (k, n, bl) = (3, 10, 43691);
    let data = pieces(k, bl);
    let ins: Vec<&[u8]> = data.iter().map(|v| &v[..]).collect();
    let mut parity = vec![vec![0u8; bl]; n - k];
    {
        let codec = Codec::new(k, n).expect("valid parameters");
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|v| &mut v[..]).collect();
        codec.encode(&ins, &mut outs).expect("encode");
    }
    let ids = [7, 8, 9];
    let blocks: Vec<&[u8]> = ids.iter().map(|&i| &parity[i - k][..]).collect();
    let mut out = vec![vec![0u8; bl]; k];
    let mut g = c.benchmark_group("decode_3of10");
    g.throughput(Throughput::Bytes((k * bl) as u64));
    for (name, f) in kernel::available() {
        let dec = Codec::with_kernel(k, n, f)
            .and_then(|c| c.decoder(&ids))
            .expect("valid share ids");
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|v| &mut v[..]).collect();
                dec.decode(black_box(&blocks), &mut outs).expect("decode");
            })
        });
    }
    g.finish();
    assert_eq!(out, data, "decode_3of10 must rebuild the input");
}

fn bench_anchor(c: &mut Criterion<ProcessCpuTime>) {
    let (k, m, bl) = (3, 7, 43692);
    let data = pieces(k, bl);
    let mut g = c.benchmark_group("anchor_reed_solomon_simd");
    g.throughput(Throughput::Bytes((k * bl) as u64));
    let mut enc = ReedSolomonEncoder::new(k, m, bl).expect("supported");
    g.bench_function("encode_3_7", |b| {
        b.iter(|| {
            enc.reset(k, m, bl).expect("reset");
            for p in &data {
                enc.add_original_shard(black_box(p)).expect("add");
            }
            let r = enc.encode().expect("encode");
            black_box(r.recovery(0).map(|s| s[0]));
        })
    });
    let recovery: Vec<Vec<u8>> = {
        let mut e = ReedSolomonEncoder::new(k, m, bl).expect("supported");
        for p in &data {
            e.add_original_shard(p).expect("add");
        }
        let r = e.encode().expect("encode");
        r.recovery_iter().map(|s| s.to_vec()).collect()
    };
    let mut dec = ReedSolomonDecoder::new(k, m, bl).expect("supported");
    g.bench_function("decode_from_3_recovery", |b| {
        b.iter(|| {
            dec.reset(k, m, bl).expect("reset");
            for (i, shard) in recovery.iter().enumerate().skip(4) {
                dec.add_recovery_shard(i, black_box(shard)).expect("add");
            }
            let r = dec.decode().expect("decode");
            black_box(r.restored_original(0).map(|s| s[0]));
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion<ProcessCpuTime>) {
    bench_encode(c, "encode_3of10", 3, 10, 43691);
    bench_decode_3of10(c);
    bench_encode(c, "encode_2of3", 2, 3, 65536);
    bench_anchor(c);
}

criterion_group! {
    name = codec_benches;
    config = Criterion::default().with_measurement(ProcessCpuTime);
    targets = benches
}
criterion_main!(codec_benches);
