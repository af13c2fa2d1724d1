//! Publish: MQTT delivery of reads, crops, status and health.
//!
//! CONTRACT (filled by the publish implementer): see `run`.
