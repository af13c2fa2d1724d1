//! The on-disk record format of one outbox entry, versioned so that a newer or older platecam
//! reading the same outbox (an A/B rollback) either understands it or refuses it clearly.
//!
//! Layout (all integers big-endian):
//! `[version u8 = 1][flags u8][stored_at u64 ms since the epoch][json_len u32][json][crop bytes]`
//! flags: bit 0 = a crop follows the JSON; bits 1-7 are reserved for encryption and signatures
//! and must be 0 in version 1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::ReadMessage;

pub const RECORD_VERSION: u8 = 1;
pub(super) const FLAG_CROP: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub message: ReadMessage,
    pub crop: Option<Vec<u8>>,
    pub stored_at: SystemTime,
}

impl Record {
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let json = serde_json::to_vec(&self.message).map_err(|e| e.to_string())?;
        let json_len = u32::try_from(json.len()).map_err(|_| "read JSON over 4 GiB".to_string())?;
        let crop = self.crop.as_deref().unwrap_or_default();
        let ms = self
            .stored_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut out = Vec::with_capacity(HEADER + json.len() + crop.len());
        out.push(RECORD_VERSION);
        out.push(if self.crop.is_some() { FLAG_CROP } else { 0 });
        out.extend_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(&json_len.to_be_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(crop);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "record of {} bytes is shorter than its header",
                bytes.len()
            ));
        }
        let version = bytes[0];
        if version != RECORD_VERSION {
            return Err(format!(
                "record format version {version}, this platecam reads version {RECORD_VERSION}"
            ));
        }
        let flags = bytes[1];
        if flags & !FLAG_CROP != 0 {
            return Err(format!(
                "record flags {flags:#04x} use bits this version does not know"
            ));
        }
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&bytes[2..10]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[10..14]);
        let json_len = u32::from_be_bytes(len) as usize;
        let json_end = HEADER
            .checked_add(json_len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("record JSON length {json_len} runs past its end"))?;
        let message: ReadMessage =
            serde_json::from_slice(&bytes[HEADER..json_end]).map_err(|e| e.to_string())?;
        let crop = (flags & FLAG_CROP != 0).then(|| bytes[json_end..].to_vec());
        Ok(Record {
            message,
            crop,
            stored_at: UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(ms)),
        })
    }
}
