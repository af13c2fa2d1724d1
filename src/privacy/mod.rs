//! What the unit keeps, for how long, and what leaves it: the keys it holds (see `keys`).
//! ARCHITECTURE.md's "Privacy" section and docs/privacy.md describe the policy.

pub mod audit;
pub mod crypto;
pub mod keys;
// privacy-wire: signed reads, hotlists, pseudonyms, the policy enforced and stated.
pub mod hotlist;
pub mod policy;
pub mod pseudonym;
pub mod sign;
