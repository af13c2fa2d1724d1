//! Secrets the unit keeps (the outbox master key, the signing key, the site key): never in the
//! config text. In order: a file the config names (the operator's, must exist), a systemd
//! credential (`LoadCredential=`/`LoadCredentialEncrypted=`, sealed by a TPM where the unit has
//! one), or a file under the storage directory made on first start. Key files must be 0600.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Secret bytes, wiped from memory when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key `{name}`: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key `{name}`: cannot create {path}: {source}")]
    Create {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key `{name}`: {path} is {found} bytes, expected {want} raw bytes or {hex} hex digits"
    )]
    Length {
        name: String,
        path: PathBuf,
        found: usize,
        want: usize,
        hex: usize,
    },
    #[error("key `{name}`: {path} can be read by others (mode {mode:04o}): chmod 600 it")]
    Mode {
        name: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("key `{name}`: no random bytes from the system")]
    Random { name: String },
}

/// Where a key came from, for the log and `platecam policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured(PathBuf),
    Credential(PathBuf),
    Kept(PathBuf),
    Created(PathBuf),
}

/// Loads key `name` of `len` bytes: from `configured` if the config names a file, else from the
/// systemd credential `platecam-<name>`, else from `<dir>/<name>.key`, made (random, 0600,
/// written atomically) when it does not exist yet.
pub fn load_or_create(
    name: &str,
    configured: Option<&Path>,
    dir: &Path,
    len: usize,
) -> Result<(Secret, KeySource), KeyError> {
    if let Some(path) = configured {
        return Ok((
            read_key(name, path, len)?,
            KeySource::Configured(path.into()),
        ));
    }
    if let Some(creds) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&creds).join(format!("platecam-{name}"));
        if path.exists() {
            // systemd owns the credential's mode (0400 on a private mount): not checked.
            return Ok((read_bytes(name, &path, len)?, KeySource::Credential(path)));
        }
    }
    let path = dir.join(format!("{name}.key"));
    if path.exists() {
        return Ok((read_key(name, &path, len)?, KeySource::Kept(path)));
    }
    let key = create(name, &path, len)?;
    Ok((key, KeySource::Created(path)))
}

fn read_key(name: &str, path: &Path, len: usize) -> Result<Secret, KeyError> {
    let read_err = |source| KeyError::Read {
        name: name.into(),
        path: path.into(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode {
            name: name.into(),
            path: path.into(),
            mode,
        });
    }
    read_bytes(name, path, len)
}

/// The key's bytes: exactly `len` raw bytes, or `2 * len` hex digits (whitespace around ignored).
fn read_bytes(name: &str, path: &Path, len: usize) -> Result<Secret, KeyError> {
    let mut raw = Zeroizing::new(Vec::new());
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|source| KeyError::Read {
            name: name.into(),
            path: path.into(),
            source,
        })?;
    if raw.len() == len {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or_default();
    if text.len() == 2 * len {
        if let Ok(bytes) = hex::decode(text) {
            return Ok(Zeroizing::new(bytes));
        }
    }
    Err(KeyError::Length {
        name: name.into(),
        path: path.into(),
        found: raw.len(),
        want: len,
        hex: 2 * len,
    })
}

/// Makes a random key at `path`: written to a 0600 temporary file, synced, renamed, and the
/// folder synced, so a power cut leaves either no key or the whole key.
fn create(name: &str, path: &Path, len: usize) -> Result<Secret, KeyError> {
    let mut key = Zeroizing::new(vec![0u8; len]);
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| KeyError::Random { name: name.into() })?;
    let create_err = |source| KeyError::Create {
        name: name.into(),
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(create_err)?;
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(create_err)?;
    f.write_all(&key)
        .and_then(|()| f.sync_all())
        .map_err(create_err)?;
    std::fs::rename(&tmp, path).map_err(create_err)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(create_err)?;
    tracing::info!(key = name, path = %path.display(), "made a new key and kept it");
    super::audit::record(
        "key_created",
        serde_json::json!({ "key": name, "path": path.display().to_string() }),
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_then_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (made, source) = load_or_create("test", None, dir.path(), 32).expect("made");
        let path = dir.path().join("test.key");
        assert_eq!(source, KeySource::Created(path.clone()));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (kept, source) = load_or_create("test", None, dir.path(), 32).expect("kept");
        assert_eq!(source, KeySource::Kept(path));
        assert_eq!(made, kept);
    }

    #[test]
    fn a_configured_key_must_exist_be_private_and_the_right_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mine.key");
        let missing = load_or_create("test", Some(&path), dir.path(), 32);
        assert!(matches!(missing, Err(KeyError::Read { .. })), "{missing:?}");
        std::fs::write(&path, "ab".repeat(32) + "\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let open = load_or_create("test", Some(&path), dir.path(), 32);
        assert!(matches!(open, Err(KeyError::Mode { .. })), "{open:?}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let (key, _) = load_or_create("test", Some(&path), dir.path(), 32).expect("hex key");
        assert_eq!(&key[..], &[0xab; 32][..]);
        let short = load_or_create("test", Some(&path), dir.path(), 16);
        assert!(matches!(short, Err(KeyError::Length { .. })), "{short:?}");
    }
}
