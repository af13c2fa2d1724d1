//! Pseudonyms (mode "pseudonymous"): a plate leaves the unit only as HMAC-SHA256 under the site
//! key, over the folded plate (`hotlist::fold`: look-alikes taken as one), so two units of one
//! site give one pass the same pseudonym while neither the broker nor the consumer learns the
//! plate. A plain hash would not do: plates are few enough to hash them all in minutes.

use std::path::Path;

use ring::hmac;

use super::hotlist::fold;
use super::keys::{self, KeyError, KeySource};

pub struct Pseudonyms {
    key: hmac::Key,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(..)")
    }
}

impl Pseudonyms {
    /// The key `site` (see `keys::load_or_create`): the same on every unit of a site.
    pub fn load(
        configured: Option<&Path>,
        dir: &Path,
    ) -> Result<(Pseudonyms, KeySource), KeyError> {
        let (key, source) = keys::load_or_create("site", configured, dir, 32)?;
        Ok((Pseudonyms::from_key(&key), source))
    }

    pub fn from_key(key: &[u8]) -> Pseudonyms {
        Pseudonyms {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// 64 hex digits.
    pub fn of(&self, plate: &str) -> String {
        hex::encode(hmac::sign(&self.key, fold(plate).as_bytes()).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_one_pseudonym_per_plate_and_look_alikes_fold() {
        let a = Pseudonyms::from_key(&[7; 32]);
        let b = Pseudonyms::from_key(&[7; 32]);
        let other = Pseudonyms::from_key(&[8; 32]);
        assert_eq!(a.of("AB-123 CD"), b.of("A8123CD"));
        assert_ne!(a.of("AB123CD"), other.of("AB123CD"));
        assert_ne!(a.of("AB123CD"), a.of("AB124CD"));
        assert_eq!(a.of("AB123CD").len(), 64);
    }
}
