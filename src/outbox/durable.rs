//! The file walk of the durable commit point (`Outbox::sync`): which of sled's files to fdatasync.
//! Only files modified since the last sync are synced again, judged by their modification times,
//! which come from the wall clock, and that clock is stepped (NTP setting a unit that booted in
//! 1970, or stepping it back).

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// File times come from a coarse clock (and FAT keeps 2 s): a margin keeps a file written just
/// around the last sync in this one. Also the drift between the wall and monotonic clocks
/// tolerated before a step is assumed.
const SYNC_MARGIN: Duration = Duration::from_secs(2);

/// When a sync started, on both clocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyncMark {
    pub(super) wall: SystemTime,
    pub(super) mono: Instant,
}

impl SyncMark {
    pub(super) fn now() -> SyncMark {
        SyncMark {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// The file time from which files written after this mark may date, seen at `now`; `None`
    /// (sync every file) when the wall clock was stepped in between: it then moved apart from
    /// the monotonic clock, and a file written after a step back carries a time before the mark.
    pub(super) fn since(&self, now: &SyncMark) -> Option<SystemTime> {
        let expected = self
            .wall
            .checked_add(now.mono.saturating_duration_since(self.mono))?;
        let apart = match now.wall.duration_since(expected) {
            Ok(ahead) => ahead,
            Err(behind) => behind.duration(),
        };
        if apart > SYNC_MARGIN {
            return None;
        }
        self.wall.checked_sub(SYNC_MARGIN)
    }
}

/// fdatasync of every file under `dir` (sled's `db`, `conf`, `blobs/*`, snapshots) and fsync of
/// the directories, so new files and their names survive a power cut; with `since`, only those
/// modified since then (what an earlier sync covered stays synced). Returns how many files it
/// synced.
pub(super) fn sync_dir_tree(dir: &Path, since: Option<SystemTime>) -> std::io::Result<u64> {
    let changed = |meta: &std::fs::Metadata| match (since, meta.modified()) {
        (Some(since), Ok(modified)) => modified >= since,
        _ => true,
    };
    let mut synced = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            synced += sync_dir_tree(&path, since)?;
        } else if changed(&meta) {
            File::open(&path)?.sync_data()?;
            synced += 1;
        }
    }
    if changed(&std::fs::metadata(dir)?) {
        File::open(dir)?.sync_all()?;
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A file in a fresh directory, with its modification time set to `modified`.
    fn dir_with_file(modified: SystemTime) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("db")).expect("create");
        file.set_modified(modified).expect("set mtime");
        dir
    }

    /// The clock is stepped back an hour between two syncs: a file written after the step
    /// carries a time before the last sync, and must be synced all the same (else an accepted
    /// read is not on the card when the power goes).
    #[test]
    fn a_file_written_after_the_clock_went_back_is_synced() {
        let last = SyncMark::now();
        let written = last.wall - HOUR + Duration::from_secs(1);
        let dir = dir_with_file(written);
        let now = SyncMark {
            wall: last.wall - HOUR + Duration::from_secs(2),
            mono: last.mono + Duration::from_secs(3),
        };
        let synced = sync_dir_tree(dir.path(), last.since(&now)).expect("sync");
        assert_eq!(synced, 1, "the file written after the step was skipped");
    }

    /// Stepped forward (NTP setting a unit that booted in 1970): files written before the step
    /// carry 1970 times, files written after it the new ones; both are synced.
    #[test]
    fn files_around_a_forward_step_are_synced() {
        let last = SyncMark {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(40),
            mono: Instant::now(),
        };
        let now = SyncMark {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            mono: last.mono + Duration::from_secs(5),
        };
        for written in [last.wall + Duration::from_secs(1), now.wall] {
            let dir = dir_with_file(written);
            let synced = sync_dir_tree(dir.path(), last.since(&now)).expect("sync");
            assert_eq!(synced, 1, "the file written at {written:?} was skipped");
        }
    }

    /// Without a step, what the last sync covered is not synced again (a backlog of crops in
    /// `blobs/` would otherwise cost a sync each per append).
    #[test]
    fn files_older_than_the_last_sync_are_not_synced_again() {
        let last = SyncMark::now();
        let dir = dir_with_file(last.wall - HOUR);
        let now = SyncMark {
            wall: last.wall + Duration::from_secs(3),
            mono: last.mono + Duration::from_secs(3),
        };
        assert_eq!(
            sync_dir_tree(dir.path(), last.since(&now)).expect("sync"),
            0
        );
    }
}
