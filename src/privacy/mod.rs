//! What the unit keeps, for how long, and what leaves it: the keys it holds (see `keys`).
//! ARCHITECTURE.md's "Privacy" section and docs/privacy.md describe the policy.

pub mod audit;
pub mod crypto;
pub mod keys;
