//! Outbox: the durable sled buffer every read passes through.
//!
//! CONTRACT (filled by the outbox implementer):
//! - `Outbox::open(&StorageConfig) -> Result<Outbox, OutboxError>`: opens `<dir>/outbox` (sled); a
//!   database that fails to open or whose records fail to decode is moved aside to
//!   `<dir>/outbox.corrupt-<unix time>`, logged with `tracing::error!`, and a fresh one opened.
//! - `append(&self, msg: ReadMessage, crop_jpeg: Vec<u8>) -> Result<StoredRead, OutboxError>`:
//!   assigns `msg.seq` (per-device counter, persisted, never reused) and `msg.id` (UUIDv7),
//!   fills `msg.crop` (format, bytes, sha256), applies the quota/eviction policy, writes the read and
//!   its crop together in one record, and makes it durable (sled flush + fdatasync) before returning.
//! - `pending(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredRead>, OutboxError>`:
//!   stored reads in `seq` order with seq > after.
//! - `remove(&self, seq: u64) -> Result<bool, OutboxError>`: called only after the broker's PUBACK.
//! - `stats(&self) -> OutboxStats`.
