//! Humane units for config values: durations like `"30s"` or `"2m 30s"` (humantime) and sizes like
//! `"2GiB"`, `"512 MiB"` or a plain byte count (bytesize).
//!
//! bytesize's own serde impl already accepts both strings and integers, but its error says only
//! "expected parsable string"; these helpers keep the same field types and accepted forms and say
//! what a valid value looks like, because that message is what the user sees next to the key.

use std::fmt;
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// `#[serde(with = "units::duration")]` for `std::time::Duration`.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    pub(super) struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration with a unit, like \"30s\", \"500ms\" or \"2m\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| {
                E::custom(format_args!(
                    "invalid duration {v:?} ({e}); write it with a unit, like \"30s\", \"500ms\" or \"2m\""
                ))
            })
        }

        // A bare number is ambiguous (seconds? milliseconds?), so it is refused with a hint
        // rather than guessed.
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "a duration needs a unit: write \"{v}s\" or \"{v}ms\", not {v}"
            )))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "a duration needs a unit: write \"{v}s\" or \"{v}ms\", not {v}"
            )))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "a duration needs a unit: write \"{v}s\", not {v}"
            )))
        }
    }
}

/// `#[serde(with = "units::duration_or_off")]` for `Option<Duration>`: a duration, or `"off"`.
pub mod duration_or_off {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(OffVisitor)
    }

    struct OffVisitor;

    impl Visitor<'_> for OffVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration with a unit, like \"72h\" or \"21d\", or \"off\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Duration>, E> {
            if v.trim() == "off" {
                return Ok(None);
            }
            duration::DurationVisitor.visit_str(v).map(Some)
        }
    }
}

/// `#[serde(with = "units::bytes")]` for `bytesize::ByteSize`.
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(b: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        // Exact binary units where possible, so a printed config reads back to the same value
        // (bytesize's Display rounds to one decimal).
        s.collect_str(&format_exact(*b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        d.deserialize_any(BytesVisitor)
    }

    pub(crate) fn format_exact(b: ByteSize) -> String {
        let n = b.as_u64();
        for (unit, size) in [
            ("TiB", bytesize::TIB),
            ("GiB", bytesize::GIB),
            ("MiB", bytesize::MIB),
            ("KiB", bytesize::KIB),
        ] {
            if n >= size && n.is_multiple_of(size) {
                return format!("{} {unit}", n / size);
            }
        }
        format!("{n} B")
    }

    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = ByteSize;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size like \"512 MiB\" or \"2GiB\", or a number of bytes")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
            v.trim().parse::<ByteSize>().map_err(|_| {
                E::custom(format_args!(
                    "invalid size {v:?}; write it like \"512 MiB\", \"2GiB\" or \"64KiB\" (B, KiB, MiB, GiB, TiB; KB, MB, GB are powers of 1000)"
                ))
            })
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
            u64::try_from(v)
                .map(ByteSize)
                .map_err(|_| E::custom(format_args!("a size cannot be negative ({v})")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
            Ok(ByteSize(v))
        }
    }
}
