//! The wall clock as retention (`privacy.max_age`) reads it. A unit without a battery-backed
//! clock boots in 1970 and NTP steps it to now later (sometimes back): read as it is, a step
//! forward would destroy reads stored minutes ago as 56 years old, and a step back would keep
//! everything until the clock caught up again.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A wall clock before this is not set (this code was written after it): reads stamped before it
/// count as stored when this process first saw the clock set.
fn floor() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
}

#[derive(Debug, Default)]
pub(super) struct RetentionClock(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// The first set time this process saw.
    set_at: Option<SystemTime>,
    /// The last time handed out, and when by the monotonic clock.
    last: Option<(SystemTime, Instant)>,
}

impl RetentionClock {
    /// `wall` as retention counts it: never behind the last time handed out plus what the
    /// monotonic clock (never stepped) counted since. `None` while the clock was never set.
    pub(super) fn now(&self, wall: SystemTime, mono: Instant) -> Option<SystemTime> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut now = wall;
        if let Some((last, at)) = s.last {
            if let Some(moved_on) = last.checked_add(mono.saturating_duration_since(at)) {
                now = now.max(moved_on);
            }
        }
        if now < floor() {
            return None;
        }
        s.set_at.get_or_insert(now);
        s.last = Some((now, mono));
        Some(now)
    }

    /// When a read stamped `at` counts as stored: a stamp from before the clock was set counts
    /// from when it was first seen set (kept `max_age` from then, never destroyed early).
    pub(super) fn stored(&self, at: SystemTime) -> SystemTime {
        if at >= floor() {
            return at;
        }
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.set_at.unwrap_or(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EvictionPolicy, PrivacyConfig, StorageConfig};
    use crate::outbox::{Outbox, Record};

    const DAY: Duration = Duration::from_secs(86_400);

    fn outbox(dir: &std::path::Path) -> Outbox {
        let storage = StorageConfig {
            dir: dir.to_path_buf(),
            max_bytes: bytesize::ByteSize::mib(64),
            min_free_bytes: bytesize::ByteSize::b(0),
            eviction: EvictionPolicy::OldestFirst,
        };
        let privacy = PrivacyConfig {
            max_age: Some(DAY),
            key_period: Duration::from_secs(3600),
            ..PrivacyConfig::default()
        };
        Outbox::open_with(&storage, &privacy)
            .expect("open outbox")
            .0
    }

    fn stored_at(outbox: &Outbox, at: SystemTime) {
        let rec = Record {
            message: serde_json::from_str(crate::fuzz::READ_JSON).expect("read"),
            crop: None,
            stored_at: at,
        };
        outbox.store(rec).expect("store");
    }

    /// Booted in 1970, a read stored, then NTP steps the clock to now: the read is minutes old,
    /// not 56 years, and stays until `max_age` after the step.
    #[test]
    fn a_read_stored_before_ntp_set_the_clock_is_not_expired_by_the_step() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outbox = outbox(tmp.path());
        let boot = UNIX_EPOCH + Duration::from_secs(100);
        stored_at(&outbox, boot + Duration::from_secs(20));
        assert_eq!(
            outbox
                .expire(boot + Duration::from_secs(60))
                .expect("expire")
                .reads,
            0
        );
        let set = SystemTime::now();
        let expired = outbox.expire(set).expect("expire");
        assert_eq!(expired.reads, 0, "the step to now destroyed a fresh read");
        assert_eq!(outbox.stats().count, 1);
        let expired = outbox
            .expire(set + DAY + Duration::from_secs(60))
            .expect("expire");
        assert_eq!(expired.reads, 1, "gone max_age after the clock was set");
    }

    /// The clock steps back a year: retention goes on counting on the monotonic clock.
    #[test]
    fn a_step_back_does_not_stop_the_clock_retention_reads() {
        let c = RetentionClock::default();
        let t = SystemTime::now();
        let m = Instant::now();
        assert_eq!(c.now(t, m), Some(t));
        let later = c.now(t - 365 * DAY, m + 2 * DAY);
        assert_eq!(later, Some(t + 2 * DAY));
        // Back in 1970 (a lost clock) it goes on too; a stamp from then counts from `t`.
        assert_eq!(c.now(UNIX_EPOCH, m + 3 * DAY), Some(t + 3 * DAY));
        assert_eq!(c.stored(UNIX_EPOCH + DAY), t);
    }

    /// Never set: nothing is handed out, so nothing expires on a 1970 clock.
    #[test]
    fn a_clock_never_set_gives_no_time() {
        let c = RetentionClock::default();
        assert_eq!(c.now(UNIX_EPOCH + DAY, Instant::now()), None);
    }
}
