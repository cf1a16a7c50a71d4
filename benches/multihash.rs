//! Batch tagged hashing: `tagged_hash_many` against a loop of `tagged_hash`, for the 10 block
//! hashes of one segment of a 3-of-10 file (blocks of 43,691 B for 128 KiB segments and of
//! 349,526 B for 1 MiB segments). Throughput is reported over all the bytes hashed.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lafs::crypto::hash::{tagged_hash, tags};
use lafs::crypto::multihash::tagged_hash_many;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_hashes_x10");
    for block in [43_691usize, 349_526] {
        let data: Vec<Vec<u8>> = (0..10u8)
            .map(|i| (0..block).map(|j| (j as u8).wrapping_add(i)).collect())
            .collect();
        let msgs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        g.throughput(Throughput::Bytes((10 * block) as u64));
        g.bench_with_input(
            BenchmarkId::new("tagged_hash_many", block),
            &msgs,
            |b, m| b.iter(|| tagged_hash_many(tags::BLOCK, black_box(m))),
        );
        g.bench_with_input(
            BenchmarkId::new("tagged_hash_loop", block),
            &msgs,
            |b, m| {
                b.iter(|| {
                    black_box(m)
                        .iter()
                        .map(|x| tagged_hash(tags::BLOCK, x))
                        .collect::<Vec<_>>()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
