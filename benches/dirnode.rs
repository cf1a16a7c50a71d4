//! Directory operation costs over an in-process loopback grid (10 lafs servers with in-memory
//! backends, TLS on 127.0.0.1, SDMF directories, 3-of-10), wall clock:
//! - `create_dir/without_pool`: a new directory generates its RSA-2048 key inline, then publishes;
//! - `create_dir/with_pool`: the key is already in the pool (the pool is refilled, untimed,
//!   between samples), so only the publish is timed;
//! - `add_entry/one_to_1000`: add one child to a directory that holds 1,000 children (read,
//!   unpack, add, pack, encrypt, encode, sign, publish);
//! - `add_entry/batch_of_1000`: add 1,000 children to an empty directory in one batch.

use criterion::{criterion_group, criterion_main, Criterion};
use lafs::cap::{Cap, MutableFormat};
use lafs::client::directory::DirectoryClient;
use lafs::client::mutable::{MutableClient, MutableParams};
use lafs::client::testgrid::TestGrid;
use lafs::dirnode::ops::Change;
use lafs::mutable::keys::KeyPool;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD: &str =
    "URI:CHK:sahdbyodi7pld462vbem4hpeka:k7lfpivabxhzwdflub5lhavihe7uj3rueox3kvigsxfgrviwgyba:3:10:1000";

fn set(name: String) -> Change {
    Change::Set {
        name,
        rw_uri: None,
        ro_uri: Some(CHILD.as_bytes().to_vec()),
        metadata: None,
        overwrite: true,
    }
}

fn client(grid: &TestGrid, pool: Arc<KeyPool>) -> DirectoryClient {
    DirectoryClient::new(MutableClient::new(
        grid.server_set(),
        [7u8; 32],
        MutableParams::default(),
        pool,
    ))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let grid = rt.block_on(TestGrid::start(10)).expect("test grid");
    assert!(Cap::parse(CHILD).node().is_some(), "child cap parses");

    let mut g = c.benchmark_group("create_dir");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let inline = client(&grid, Arc::new(KeyPool::new(0)));
    g.bench_function("without_pool", |b| {
        b.iter(|| {
            rt.block_on(inline.create(MutableFormat::Sdmf))
                .expect("create")
        })
    });
    const POOL: usize = 32;
    let pool = Arc::new(KeyPool::new(POOL));
    let pooled = client(&grid, Arc::clone(&pool));
    g.bench_function("with_pool", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Wait (untimed) until the pool holds the keys this round will take.
                let round = left.min(POOL as u64);
                while (pool.ready() as u64) < round {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let t = Instant::now();
                for _ in 0..round {
                    rt.block_on(pooled.create(MutableFormat::Sdmf))
                        .expect("create");
                }
                total += t.elapsed();
                left -= round;
            }
            total
        })
    });
    g.finish();

    let mut g = c.benchmark_group("add_entry");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let dirs = client(&grid, Arc::new(KeyPool::new(4)));
    let big = rt.block_on(async {
        let d = dirs.create(MutableFormat::Sdmf).await.expect("create");
        d.apply((0..1000).map(|i| set(format!("file-{i:04}"))).collect())
            .await
            .expect("fill");
        d
    });
    let mut next = 0u64;
    g.bench_function("one_to_1000", |b| {
        b.iter(|| {
            next += 1;
            rt.block_on(big.apply(vec![set(format!("extra-{next}"))]))
                .expect("add")
        })
    });
    g.bench_function("batch_of_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = rt
                    .block_on(dirs.create(MutableFormat::Sdmf))
                    .expect("create");
                let batch: Vec<Change> = (0..1000).map(|i| set(format!("file-{i:04}"))).collect();
                let t = Instant::now();
                rt.block_on(d.apply(batch)).expect("batch");
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
