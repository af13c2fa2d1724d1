//! The outbox's data keys: one per key period and start, wrapped by the master key and kept in
//! sled's `keys` tree under their id. Destroying a period's key (retention) makes what was sealed
//! with it unreadable, including copies sled still keeps in old pages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::privacy::crypto::{CryptoError, DataKey, KeyId, MasterKey, OpeningKey};

pub(super) struct Keyring {
    master: MasterKey,
    period: Duration,
    /// The key this process seals with (made by it, for the current period).
    current: Mutex<Option<Arc<DataKey>>>,
    /// Keys unwrapped so far, to open records.
    opened: RwLock<HashMap<KeyId, Arc<OpeningKey>>>,
}

impl Keyring {
    pub(super) fn new(master: &[u8], period: Duration) -> Result<Keyring, CryptoError> {
        Ok(Keyring {
            master: MasterKey::new(master)?,
            period: period.max(Duration::from_secs(1)),
            current: Mutex::new(None),
            opened: RwLock::new(HashMap::new()),
        })
    }

    /// The period `at` falls in.
    pub(super) fn period_at(&self, at: SystemTime) -> u64 {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        secs / self.period.as_secs().max(1)
    }

    /// When the last read a key of `period` can seal is older than `max_age`: the end of the
    /// period after it (a store that took the key just before the period ended may seal a moment
    /// later), plus `max_age`.
    pub(super) fn expires_at(&self, period: u64, max_age: Duration) -> SystemTime {
        let end = period
            .saturating_add(2)
            .saturating_mul(self.period.as_secs());
        UNIX_EPOCH + Duration::from_secs(end) + max_age
    }

    /// The key to seal with now, if this process already made one for the current period.
    pub(super) fn current(&self, now: SystemTime) -> Option<Arc<DataKey>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|k| k.period() == self.period_at(now))
            .cloned()
    }

    /// Makes a key for the current period; the caller stores the wrapped form durably and then
    /// calls `install`.
    pub(super) fn make(&self, now: SystemTime) -> Result<(DataKey, Vec<u8>), CryptoError> {
        self.master.new_data_key(self.period_at(now))
    }

    pub(super) fn install(
        &self,
        key: DataKey,
        wrapped: &[u8],
    ) -> Result<Arc<DataKey>, CryptoError> {
        let opening = self.master.unwrap_key(key.id(), wrapped)?;
        self.opened
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*key.id(), Arc::new(opening));
        let key = Arc::new(key);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(key)
    }

    /// The key that opens records sealed with `id`, unwrapped from `keys` on first use.
    pub(super) fn opening(&self, keys: &sled::Tree, id: &KeyId) -> Result<Arc<OpeningKey>, String> {
        if let Some(k) = self
            .opened
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(k.clone());
        }
        let key = Arc::new(self.unwrap_from(keys, id)?);
        self.opened
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id, key.clone());
        Ok(key)
    }

    /// Unwraps key `id` from `keys` without caching it (a moved-aside outbox's keys).
    pub(super) fn unwrap_from(&self, keys: &sled::Tree, id: &KeyId) -> Result<OpeningKey, String> {
        let wrapped = keys
            .get(id)
            .map_err(|e| e.to_string())?
            .ok_or("its data key was destroyed (retention) or is missing")?;
        self.master
            .unwrap_key(id, &wrapped)
            .map_err(|e| format!("data key: {e}"))
    }

    /// Whether the master key opens the newest stored data key (none stored: nothing to check).
    pub(super) fn check_master(&self, keys: &sled::Tree) -> Result<(), String> {
        match keys.last().map_err(|e| e.to_string())? {
            None => Ok(()),
            Some((id, wrapped)) => {
                let id: KeyId = id
                    .as_ref()
                    .try_into()
                    .map_err(|_| "bad key id".to_string())?;
                self.master
                    .unwrap_key(&id, &wrapped)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Forgets key `id` (destroyed by retention).
    pub(super) fn forget(&self, id: &KeyId) {
        self.opened
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
