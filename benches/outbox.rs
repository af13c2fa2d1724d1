//! Outbox append + durable sync per read (sled insert in a transaction, flush, fdatasync): the
//! cost of making one read "accepted". And `stats()` with a backlog of 100,000 reads: what every
//! health tick (and every 50 ms of a drain) pays.

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use platecam::config::StorageConfig;
use platecam::outbox::Outbox;
use support::{fake_crop, sample_read};

fn append_sync(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let storage = StorageConfig {
        dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (outbox, _) = Outbox::open(&storage).unwrap_or_else(|e| panic!("open outbox: {e}"));
    let mut n = 0u64;
    let mut group = c.benchmark_group("outbox");
    group.sample_size(50);
    group.bench_function("append_sync_5KiB_crop", |b| {
        b.iter(|| {
            n += 1;
            outbox
                .append(sample_read("bench", "ABC1234"), fake_crop(n, 5 * 1024))
                .unwrap_or_else(|e| panic!("append: {e}"))
        })
    });
    group.finish();
}

const BACKLOG: u64 = 100_000;

fn stats_with_backlog(c: &mut Criterion) {
    // The backlog is filled through `append` (each synced): on tmpfs when there is one, so the
    // setup does not take minutes of fsync. The measured `stats()` does not touch the disk.
    let dir = match tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()) {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let storage = StorageConfig {
        dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (outbox, _) = Outbox::open(&storage).unwrap_or_else(|e| panic!("open outbox: {e}"));
    for n in 0..BACKLOG {
        outbox
            .append(sample_read("bench", "ABC1234"), fake_crop(n, 64))
            .unwrap_or_else(|e| panic!("append: {e}"));
    }
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10);
    group.bench_function("stats_100k_backlog", |b| {
        b.iter(|| {
            let s = outbox.stats();
            assert_eq!(s.count, BACKLOG);
            s
        })
    });
    group.finish();
}

criterion_group!(benches, append_sync, stats_with_backlog);
criterion_main!(benches);
