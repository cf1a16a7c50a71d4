//! Batch tagged hashing: `tagged_hash_many` against a loop of `tagged_hash`, for the 10 block
//! hashes of one segment of a 3-of-10 file (blocks of 43,691 B for 128 KiB segments and of
//! 349,526 B for 1 MiB segments), and for batches of 2 to 32 such blocks (the encoder draws
//! block batches across segments when the engine is wide). Throughput is reported over all the
//! bytes hashed.
//!
//! The engine is the one `multihash` picks at run time (its name is in the group names); cap it
//! to compare: `LAFS_SHA256_ENGINE=shani cargo bench --bench multihash` (or `portable`).
//!
//! `crypttext_x2`: the encoder's in-order stage, one 128 KiB segment of crypttext fed to the
//! whole-file hash and to its segment hash, as two lanes (`update_many`) against two
//! single-stream passes (`TaggedHasher`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lafs::crypto::hash::{tagged_hash, tags, TaggedHasher};
use lafs::crypto::multihash::{engine_name, tagged_hash_many, update_many, Sha256Stream};

fn bench(c: &mut Criterion) {
    let engine = engine_name();
    let mut g = c.benchmark_group(format!("block_hashes_batch/{engine}"));
    let block = 43_691usize;
    let data: Vec<Vec<u8>> = (0..32u8)
        .map(|i| (0..block).map(|j| (j as u8).wrapping_add(i)).collect())
        .collect();
    for count in [2usize, 5, 8, 16, 32] {
        let msgs: Vec<&[u8]> = data[..count].iter().map(|d| d.as_slice()).collect();
        g.throughput(Throughput::Bytes((count * block) as u64));
        g.bench_with_input(
            BenchmarkId::new("tagged_hash_many", count),
            &msgs,
            |b, m| b.iter(|| tagged_hash_many(tags::BLOCK, black_box(m))),
        );
    }
    g.finish();

    let mut g = c.benchmark_group(format!("block_hashes_x10/{engine}"));
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

    let mut g = c.benchmark_group(format!("crypttext_x2/{engine}"));
    let seg: Vec<u8> = (0..131_072u32).map(|j| (j * 7) as u8).collect();
    g.throughput(Throughput::Bytes(2 * seg.len() as u64));
    g.bench_function("update_many", |b| {
        let mut file = Sha256Stream::tagged(tags::CRYPTTEXT);
        let fresh = Sha256Stream::tagged(tags::CRYPTTEXT_SEGMENT);
        b.iter(|| {
            let mut s = fresh.clone();
            update_many(
                &mut [&mut file, &mut s],
                &[black_box(&seg[..]), black_box(&seg[..])],
            );
            s.finalize_sha256d()
        })
    });
    g.bench_function("two_streams", |b| {
        let mut file = TaggedHasher::new(tags::CRYPTTEXT);
        b.iter(|| {
            file.update(black_box(&seg));
            let mut s = TaggedHasher::new(tags::CRYPTTEXT_SEGMENT);
            s.update(black_box(&seg));
            s.finalize()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
