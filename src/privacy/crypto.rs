//! Sealing outbox records at rest: a master key wraps per-period data keys; data keys seal records
//! (ChaCha20-Poly1305, ring).
//!
//! Nonces never repeat under one key:
//! - A data key is made by one process for one key period and seals only in that process: its
//!   nonce is `[4 random bytes of its id][u64 counter]`, the counter in memory and only increasing.
//!   A process that opens the outbox again makes a new data key; it never seals with an old one.
//!   The record's seq is not used: a seq can be sealed twice with different contents (a crop
//!   stripped by eviction, an unsynced insert lost in a crash and the seq given to another read).
//! - The master key wraps one data key per period and start (a few thousand over a unit's life):
//!   random 96-bit nonces, where a repeat needs about 2^32 wraps to become likely.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// A data key's id: its period (big-endian u64) and 4 random bytes, which make it unique among
/// the keys of one period and start its nonces.
pub const KEY_ID_LEN: usize = 12;
pub type KeyId = [u8; KEY_ID_LEN];

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no random bytes from the system")]
    Random,
    #[error("the key has the wrong length")]
    KeyLength,
    #[error("authentication failed (wrong key, or the bytes were changed)")]
    Open,
    #[error("nonce counter exhausted")]
    Exhausted,
}

/// The key period a data key id belongs to.
pub fn period_of(id: &KeyId) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id[..8]);
    u64::from_be_bytes(p)
}

/// The master key: wraps and unwraps data keys.
pub struct MasterKey(LessSafeKey);

impl MasterKey {
    pub fn new(bytes: &[u8]) -> Result<MasterKey, CryptoError> {
        Ok(MasterKey(aead_key(bytes)?))
    }

    /// Makes a fresh data key for `period`: returns it and its wrapped form to store
    /// (`[nonce 12][sealed key][tag]`, bound to its id).
    pub fn new_data_key(&self, period: u64) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; KEY_ID_LEN];
        id[..8].copy_from_slice(&period.to_be_bytes());
        rng.fill(&mut id[8..]).map_err(|_| CryptoError::Random)?;
        let mut raw = Zeroizing::new(vec![0u8; KEY_LEN]);
        rng.fill(&mut raw).map_err(|_| CryptoError::Random)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut sealed = raw.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id),
                &mut sealed,
            )
            .map_err(|_| CryptoError::Open)?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        sealed.iter_mut().for_each(|b| *b = 0);
        let key = DataKey {
            id,
            key: aead_key(&raw)?,
            counter: AtomicU64::new(0),
        };
        Ok((key, wrapped))
    }

    /// Unwraps a stored data key; it may open records, never seal (see the module's nonce rule).
    pub fn unwrap_key(&self, id: &KeyId, wrapped: &[u8]) -> Result<OpeningKey, CryptoError> {
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(CryptoError::KeyLength);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
        let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
        let raw = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(*id),
                &mut buf,
            )
            .map_err(|_| CryptoError::Open)?;
        Ok(OpeningKey(aead_key(raw)?))
    }
}

/// A data key this process made: seals (and opens) records.
pub struct DataKey {
    id: KeyId,
    key: LessSafeKey,
    counter: AtomicU64,
}

/// What a sealed record carries besides its ciphertext.
pub const SEAL_HEADER: usize = KEY_ID_LEN + 8;

impl DataKey {
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn period(&self) -> u64 {
        period_of(&self.id)
    }

    /// Seals `plain` bound to `aad`: `[key id 12][counter u64][ciphertext][tag]`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        if counter == u64::MAX {
            return Err(CryptoError::Exhausted);
        }
        let mut out = Vec::with_capacity(SEAL_HEADER + plain.len() + TAG_LEN);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(plain);
        let nonce = nonce(&self.id, counter);
        let (head, body) = out.split_at_mut(SEAL_HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad_with(aad, head)), body)
            .map_err(|_| CryptoError::Open)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// A data key unwrapped from the store: opens records only.
pub struct OpeningKey(LessSafeKey);

impl OpeningKey {
    pub fn opener(&self) -> &LessSafeKey {
        &self.0
    }
}

/// The key id a sealed blob names, if it is long enough to name one.
pub fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    sealed.get(..KEY_ID_LEN)?.try_into().ok()
}

/// Opens what `DataKey::seal` made, with the key its id names.
pub fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_HEADER + TAG_LEN {
        return Err(CryptoError::Open);
    }
    let (head, body) = sealed.split_at(SEAL_HEADER);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&head[..KEY_ID_LEN]);
    let mut c = [0u8; 8];
    c.copy_from_slice(&head[KEY_ID_LEN..]);
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(
            nonce(&id, u64::from_be_bytes(c)),
            Aad::from(aad_with(aad, head)),
            &mut buf,
        )
        .map_err(|_| CryptoError::Open)?;
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

fn nonce(id: &KeyId, counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&id[8..]);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad_with(aad: &[u8], head: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(aad.len() + head.len());
    v.extend_from_slice(aad);
    v.extend_from_slice(head);
    v
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| CryptoError::KeyLength)?;
    Ok(LessSafeKey::new(unbound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_their_key_and_aad() {
        let master = MasterKey::new(&[7u8; 32]).expect("master");
        let (key, wrapped) = master.new_data_key(42).expect("data key");
        assert_eq!(key.period(), 42);
        let a = key.seal(b"seq1", b"AB123CD").expect("seal");
        let b = key.seal(b"seq1", b"AB123CD").expect("seal");
        assert_ne!(a, b, "a second seal uses the next nonce");
        assert!(!a.windows(7).any(|w| w == b"AB123CD"));
        let opened = master.unwrap_key(key.id(), &wrapped).expect("unwrap");
        assert_eq!(
            open(opened.opener(), b"seq1", &a).expect("open"),
            b"AB123CD"
        );
        assert!(
            open(opened.opener(), b"seq2", &a).is_err(),
            "bound to its aad"
        );
        let other = MasterKey::new(&[8u8; 32]).expect("master");
        assert!(other.unwrap_key(key.id(), &wrapped).is_err());
    }
}
