//! The on-disk record format of one outbox entry, versioned so that a newer or older platecam
//! reading the same outbox (an A/B rollback) either understands it or refuses it clearly.
//!
//! Version 2 (all integers big-endian):
//! `[version u8 = 2][flags u8][stored_at u64 ms since the epoch]` in clear, then the body sealed
//! under a data key (see `privacy::crypto`): `[key id 12][counter u64][sealed body][tag 16]`,
//! where the body is `[json_len u32][json][crop bytes]`. The clear header and the record's seq are
//! authenticated with the body, so a record cannot be edited or moved to another seq unnoticed.
//! Only whether a crop is there (flags bit 0, for eviction) and when the read was stored (for
//! retention) are readable without the key.
//!
//! Version 1 (before encryption) was the same header followed by the body in clear; an outbox of
//! version 1 is re-sealed into version 2 when it is opened (see `Outbox::open_with`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::LessSafeKey;

use crate::privacy::crypto::{self, DataKey, KeyId};
use crate::wire::ReadMessage;

pub const RECORD_VERSION: u8 = 2;
pub(super) const V1: u8 = 1;
pub(super) const FLAG_CROP: u8 = 1;
const HEADER: usize = 1 + 1 + 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub message: ReadMessage,
    pub crop: Option<Vec<u8>>,
    pub stored_at: SystemTime,
}

impl Record {
    /// Seals the record as version 2, bound to `seq`.
    pub(super) fn seal(&self, seq: u64, key: &DataKey) -> Result<Vec<u8>, String> {
        let head = self.header(RECORD_VERSION);
        let body = zeroize::Zeroizing::new(self.body()?);
        let sealed = key
            .seal(&aad(&head, seq), &body)
            .map_err(|e| e.to_string())?;
        let mut out = head;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a version 2 record stored under `seq` with the data key its id names (`key_id`).
    pub(super) fn open(bytes: &[u8], seq: u64, key: &LessSafeKey) -> Result<Record, String> {
        let (flags, stored_at) = check_header(bytes, RECORD_VERSION)?;
        let body = crypto::open(key, &aad(&bytes[..HEADER], seq), &bytes[HEADER..])
            .map(zeroize::Zeroizing::new)
            .map_err(|e| e.to_string())?;
        parse_body(flags, stored_at, &body)
    }

    /// Reads a version 1 record (clear body), for the migration to version 2.
    pub(super) fn decode_v1(bytes: &[u8]) -> Result<Record, String> {
        let (flags, stored_at) = check_header(bytes, V1)?;
        parse_body(flags, stored_at, &bytes[HEADER..])
    }

    /// The size `seal` makes of this record (as stored, with its seq in the JSON).
    pub fn sealed_len(&self) -> Result<usize, String> {
        Ok(HEADER + crypto::SEAL_HEADER + self.body()?.len() + crypto::TAG_LEN)
    }

    fn header(&self, version: u8) -> Vec<u8> {
        let ms = self
            .stored_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut out = Vec::with_capacity(HEADER + crypto::SEAL_HEADER + crypto::TAG_LEN + 4);
        out.push(version);
        out.push(if self.crop.is_some() { FLAG_CROP } else { 0 });
        out.extend_from_slice(&ms.to_be_bytes());
        out
    }

    fn body(&self) -> Result<Vec<u8>, String> {
        let json = serde_json::to_vec(&self.message).map_err(|e| e.to_string())?;
        let json_len = u32::try_from(json.len()).map_err(|_| "read JSON over 4 GiB".to_string())?;
        let crop = self.crop.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(4 + json.len() + crop.len());
        out.extend_from_slice(&json_len.to_be_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(crop);
        Ok(out)
    }
}

/// When a stored record (of any version this build knows) was stored, without opening it.
pub(super) fn stored_at(bytes: &[u8]) -> Option<SystemTime> {
    let ms: [u8; 8] = bytes.get(2..HEADER)?.try_into().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(ms)))
}

/// The data key a version 2 record was sealed with.
pub(super) fn key_id(bytes: &[u8]) -> Option<KeyId> {
    crypto::sealed_key_id(bytes.get(HEADER..)?)
}

fn aad(head: &[u8], seq: u64) -> Vec<u8> {
    let mut v = head.to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

fn check_header(bytes: &[u8], want: u8) -> Result<(u8, SystemTime), String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        ));
    }
    let version = bytes[0];
    if version != want {
        return Err(format!(
            "record format version {version}, expected version {want}"
        ));
    }
    let flags = bytes[1];
    if flags & !FLAG_CROP != 0 {
        return Err(format!(
            "record flags {flags:#04x} use bits this version does not know"
        ));
    }
    Ok((flags, stored_at(bytes).unwrap_or(UNIX_EPOCH)))
}

fn parse_body(flags: u8, stored_at: SystemTime, body: &[u8]) -> Result<Record, String> {
    let len: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("record body shorter than its length field")?;
    let json_len = u32::from_be_bytes(len) as usize;
    let json_end = 4usize
        .checked_add(json_len)
        .filter(|&end| end <= body.len())
        .ok_or_else(|| format!("record JSON length {json_len} runs past its end"))?;
    let message: ReadMessage =
        serde_json::from_slice(&body[4..json_end]).map_err(|e| e.to_string())?;
    let crop = (flags & FLAG_CROP != 0).then(|| body[json_end..].to_vec());
    Ok(Record {
        message,
        crop,
        stored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::crypto::MasterKey;

    /// Stable-Rust fuzzing (see `crate::fuzz`) of what the outbox reads back from sled: both
    /// record versions, the clear header and the sealed body under the right key.
    #[test]
    fn fuzz_outbox_record() {
        let master = MasterKey::new(&[7; crypto::KEY_LEN]).expect("master key");
        let (key, wrapped) = master.new_data_key(3).expect("data key");
        let opening = master.unwrap_key(key.id(), &wrapped).expect("unwrap");
        let record = Record {
            message: serde_json::from_str(crate::fuzz::READ_JSON).expect("seed read"),
            crop: Some(crate::fuzz::small_image(image::ImageFormat::Jpeg)),
            stored_at: SystemTime::now(),
        };
        let sealed = record.seal(9, &key).expect("seal");
        let mut v1 = record.header(V1);
        v1.extend_from_slice(&record.body().expect("body"));
        assert!(
            Record::open(&sealed, 9, opening.opener()).is_ok(),
            "the seed opens"
        );
        crate::fuzz::fuzz("outbox-record", vec![sealed, v1], |data| {
            let _ = stored_at(data);
            let _ = key_id(data);
            let _ = Record::decode_v1(data);
            let _ = Record::open(data, 9, opening.opener());
        });
    }
}
