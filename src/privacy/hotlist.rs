//! Hotlists: plates to alert on. One `plate, reason, expiry` per line; `#` starts a comment.
//! Plates match after folding: case, spaces, dashes and dots ignored, and the look-alikes the OCR
//! confuses (O/0, B/8, I/1) taken as one, on the read's text and on each of its candidates.
//! The list is reloaded on SIGHUP and when the file changes; a list that cannot be read keeps the
//! previous one in force (logged as an error).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::recognize::Candidate;
use crate::wire::HotlistHit;

#[derive(Debug, thiserror::Error)]
pub enum HotlistError {
    #[error("cannot read the hotlist {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The plate folded for matching and pseudonyms: upper case, letters and digits only, O->0,
/// B->8, I->1.
pub fn fold(plate: &str) -> String {
    plate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'B' => '8',
            'I' => '1',
            c => c,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    listed: String,
    reason: String,
    /// `None`: never expires.
    expires: Option<SystemTime>,
}

/// A line that was skipped, and why (no plate text: it goes to the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// A loaded hotlist.
#[derive(Debug, Default)]
pub struct Hotlist {
    entries: HashMap<String, Entry>,
    /// sha256 of the file's bytes, for the audit log.
    pub sha256: String,
    pub skipped: Vec<BadLine>,
}

impl Hotlist {
    pub fn parse(text: &str) -> Hotlist {
        let mut list = Hotlist {
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            ..Hotlist::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok((key, entry)) => {
                    list.entries.insert(key, entry);
                }
                Err(reason) => list.skipped.push(BadLine {
                    line: i + 1,
                    reason,
                }),
            }
        }
        list
    }

    pub fn load(path: &Path) -> Result<Hotlist, HotlistError> {
        let text = std::fs::read_to_string(path).map_err(|source| HotlistError::Read {
            path: path.into(),
            source,
        })?;
        Ok(Hotlist::parse(&text))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry a read matches at `now`: its plate first, then its candidates.
    pub fn check(
        &self,
        plate: &str,
        candidates: &[Candidate],
        now: SystemTime,
    ) -> Option<HotlistHit> {
        let texts = std::iter::once(("plate", plate))
            .chain(candidates.iter().map(|c| ("candidate", c.plate.as_str())));
        for (matched, text) in texts {
            if let Some(e) = self.entries.get(&fold(text)) {
                if e.expires.is_none_or(|t| now < t) {
                    return Some(HotlistHit {
                        listed: e.listed.clone(),
                        reason: e.reason.clone(),
                        matched: matched.into(),
                    });
                }
            }
        }
        None
    }
}

fn parse_line(line: &str) -> Result<(String, Entry), String> {
    let mut fields = line.splitn(3, ',').map(str::trim);
    let listed = fields.next().unwrap_or_default();
    let key = fold(listed);
    if key.is_empty() {
        return Err("no plate (letters or digits) in the first field".into());
    }
    let reason = fields.next().unwrap_or_default();
    if reason.is_empty() {
        return Err("no reason (second field)".into());
    }
    let expires = match fields.next().unwrap_or_default() {
        "" => None,
        text => Some(parse_expiry(text)?),
    };
    Ok((
        key,
        Entry {
            listed: listed.to_string(),
            reason: reason.to_string(),
            expires,
        },
    ))
}

/// `2026-12-31` (the entry holds through that day, UTC) or an RFC 3339 time.
fn parse_expiry(text: &str) -> Result<SystemTime, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc).into());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().into())
        .ok_or_else(|| {
            format!("expiry {text:?} is neither a date (2026-12-31) nor an RFC 3339 time")
        })
}

/// A loaded hotlist: its skipped lines logged, the load recorded in the audit log.
pub fn hotlist_loaded(path: &Path, list: &Hotlist) {
    for bad in &list.skipped {
        tracing::warn!(path = %path.display(), line = bad.line, reason = %bad.reason, "hotlist line skipped");
    }
    tracing::info!(
        event = "hotlist_loaded",
        path = %path.display(),
        entries = list.len(),
        skipped = list.skipped.len(),
        sha256 = %list.sha256,
        "hotlist loaded"
    );
    super::audit::record(
        "hotlist_loaded",
        serde_json::json!({
            "path": path.display().to_string(),
            "entries": list.len(),
            "skipped": list.skipped.len(),
            "sha256": list.sha256.to_string(),
        }),
    );
}

/// The hotlist in force, shared by the recognize threads and the reloader.
#[derive(Debug, Clone, Default)]
pub struct SharedHotlist(Arc<RwLock<Arc<Hotlist>>>);

impl SharedHotlist {
    pub fn new(list: Hotlist) -> SharedHotlist {
        SharedHotlist(Arc::new(RwLock::new(Arc::new(list))))
    }

    pub fn current(&self) -> Arc<Hotlist> {
        match self.0.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, list: Hotlist) {
        let list = Arc::new(list);
        match self.0.write() {
            Ok(mut l) => *l = list,
            Err(poisoned) => *poisoned.into_inner() = list,
        }
    }

    /// Loads the file again; on failure the list in force stays (logged as an error).
    pub fn reload(&self, path: &Path) {
        match Hotlist::load(path) {
            Ok(list) => {
                hotlist_loaded(path, &list);
                self.replace(list);
            }
            Err(e) => {
                tracing::error!(error = %e, "hotlist not reloaded; the previous list stays in force")
            }
        }
    }
}

/// How often the file is looked at for changes.
const POLL: Duration = Duration::from_secs(1);

/// Reloads `list` from `path` on SIGHUP and when the file's size, time or inode changes, until
/// `stop`.
pub async fn watch(list: SharedHotlist, path: PathBuf, stop: CancellationToken) {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok(), m.ino()))
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "no SIGHUP handler; the hotlist reloads only when its file changes");
            None
        }
    };
    let mut seen = stamp(&path);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hangup => {
                seen = stamp(&path);
                list.reload(&path);
            }
            _ = tokio::time::sleep(POLL) => {
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    list.reload(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &Hotlist, plate: &str, candidates: &[&str]) -> Option<HotlistHit> {
        let candidates: Vec<Candidate> = candidates
            .iter()
            .map(|p| Candidate {
                plate: p.to_string(),
                confidence: 0.5,
            })
            .collect();
        list.check(plate, &candidates, SystemTime::now())
    }

    #[test]
    fn bad_lines_are_skipped_with_their_numbers_and_look_alikes_match() {
        let list = Hotlist::parse(
            "# plate, reason, expiry\n\
             AB-123 CD, stolen, 2999-01-01\n\
             \n\
             , no plate\n\
             XY999, \n\
             QQ1, expired, 2000-01-01T00:00:00Z\n\
             ZZ77, bad date, tomorrow\n\
             8OI 42, lookalikes\n",
        );
        assert_eq!(list.len(), 3);
        let lines: Vec<usize> = list.skipped.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![4, 5, 7]);
        let hit = check(&list, "AB123CD", &[]).expect("exact");
        assert_eq!(
            (hit.reason.as_str(), hit.matched.as_str()),
            ("stolen", "plate")
        );
        assert!(check(&list, "A8I23CD", &[]).is_some(), "B/8, 1/I");
        assert!(check(&list, "B0142", &[]).is_some(), "O/0, B/8");
        let by_candidate = check(&list, "AB128CD", &["AB123CD"]).expect("candidate");
        assert_eq!(by_candidate.matched, "candidate");
        assert!(check(&list, "QQ1", &[]).is_none(), "expired");
        assert!(check(&list, "XY999", &[]).is_none());
    }

    #[tokio::test]
    async fn the_list_reloads_when_the_file_changes_and_on_sighup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hotlist.csv");
        std::fs::write(&path, "AA11, one\n").expect("write");
        let list = SharedHotlist::new(Hotlist::load(&path).expect("load"));
        // Our own handler first, so the SIGHUP below can never take the default action (exit).
        let mut ours = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("handler");
        let stop = CancellationToken::new();
        tokio::spawn(watch(list.clone(), path.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let wait_for = |n: usize| {
            let list = list.clone();
            async move {
                for _ in 0..50 {
                    if list.current().len() == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            }
        };
        std::fs::write(&path, "AA11, one\nBB22, two\n").expect("write");
        assert!(wait_for(2).await, "reloaded on change");

        // Same size, time and inode: only SIGHUP tells.
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut f, b"AA11, one\n#B22, two\n").expect("write");
        f.set_modified(modified).expect("set mtime");
        drop(f);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(list.current().len(), 2, "no change seen without the signal");
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).expect("raise");
        assert!(wait_for(1).await, "reloaded on SIGHUP");
        ours.recv().await;

        std::fs::remove_file(&path).expect("rm");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            list.current().len(),
            1,
            "an unreadable list keeps the one in force"
        );
        stop.cancel();
    }
}
