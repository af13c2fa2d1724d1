//! Outbox append + durable sync per read (sled insert in a transaction, flush, fdatasync): the
//! cost of making one read "accepted".

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

criterion_group!(benches, append_sync);
criterion_main!(benches);
