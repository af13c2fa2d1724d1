//! The PUBACK correlation bookkeeping (see the module doc of `publish`), kept free of I/O so it can be
//! tested event by event.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// One publish handed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The read JSON or the crop of outbox record `seq`.
    Read { seq: u64 },
    /// Status or health: not in the outbox, tracked only to keep the FIFO aligned.
    Control,
}

/// What an `Outgoing::Publish(pkid)` event turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// A read or crop publish written for the first time.
    Read,
    /// A status or health publish.
    Control,
    /// The pkid is already mapped: rumqttc re-sent an unacked publish.
    Retransmit,
    /// Nothing was handed: the FIFO is out of step with the client.
    Unexpected,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Handed to the client, not yet written (no pkid yet), in hand-over order.
    handed: VecDeque<Part>,
    /// Written with a pkid, waiting for the PUBACK.
    by_pkid: HashMap<u16, Part>,
    /// Reads handed and not fully acked: seq -> publishes still unacked.
    open: BTreeMap<u64, u8>,
    /// The highest seq handed since the last reset: the next outbox scan starts after it.
    last_handed: Option<u64>,
}

impl Ledger {
    /// Records that the `parts` publishes of record `seq` (read, and crop if any) were handed.
    pub(crate) fn hand_read(&mut self, seq: u64, parts: u8) {
        for _ in 0..parts {
            self.handed.push_back(Part::Read { seq });
        }
        *self.open.entry(seq).or_insert(0) += parts;
        self.last_handed = Some(self.last_handed.map_or(seq, |s| s.max(seq)));
    }

    pub(crate) fn hand_control(&mut self) {
        self.handed.push_back(Part::Control);
    }

    /// `Event::Outgoing(Outgoing::Publish(pkid))`.
    pub(crate) fn on_written(&mut self, pkid: u16) -> Written {
        if pkid != 0 && self.by_pkid.contains_key(&pkid) {
            return Written::Retransmit;
        }
        let Some(part) = self.handed.pop_front() else {
            return Written::Unexpected;
        };
        // pkid 0 is a QoS 0 publish: there will be no PUBACK, so it is done once written.
        if pkid != 0 {
            self.by_pkid.insert(pkid, part);
        }
        match part {
            Part::Read { .. } => Written::Read,
            Part::Control => Written::Control,
        }
    }

    /// `Event::Incoming(Incoming::PubAck { pkid })`; returns the seq whose last publish this acked.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<u64> {
        let Part::Read { seq } = self.by_pkid.remove(&pkid)? else {
            return None;
        };
        let left = self.open.get_mut(&seq)?;
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.open.remove(&seq);
            Some(seq)
        } else {
            None
        }
    }

    /// Reads handed and not fully acked: what the in-flight window counts.
    pub(crate) fn open_reads(&self) -> usize {
        self.open.len()
    }

    /// Nothing handed is still waiting to be written or acked.
    pub(crate) fn is_idle(&self) -> bool {
        self.handed.is_empty() && self.by_pkid.is_empty()
    }

    pub(crate) fn last_handed(&self) -> Option<u64> {
        self.last_handed
    }

    /// Forget everything: the client dropped what it held (new connection, clean session).
    pub(crate) fn reset(&mut self) {
        *self = Ledger::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_completes_only_after_all_its_pubacks() {
        let mut l = Ledger::default();
        l.hand_read(1, 2);
        l.hand_read(2, 1);
        assert_eq!(l.on_written(1), Written::Read);
        assert_eq!(l.on_written(2), Written::Read);
        assert_eq!(l.on_written(3), Written::Read);
        assert_eq!(l.on_puback(1), None);
        assert_eq!(l.on_puback(3), Some(2));
        assert_eq!(l.on_puback(2), Some(1));
        assert_eq!(l.open_reads(), 0);
        assert!(l.is_idle());
        assert_eq!(l.last_handed(), Some(2));
    }

    #[test]
    fn control_publishes_keep_the_fifo_aligned() {
        let mut l = Ledger::default();
        l.hand_control(); // retained online status, QoS 1
        l.hand_read(7, 1);
        l.hand_control(); // health, QoS 0
        l.hand_read(8, 1);
        assert_eq!(l.on_written(1), Written::Control);
        assert_eq!(l.on_written(2), Written::Read);
        assert_eq!(l.on_written(0), Written::Control);
        assert_eq!(l.on_written(3), Written::Read);
        assert_eq!(l.on_puback(1), None);
        assert_eq!(l.on_puback(3), Some(8));
        assert_eq!(l.on_puback(2), Some(7));
        assert!(l.is_idle());
    }

    #[test]
    fn retransmits_and_reused_pkids() {
        let mut l = Ledger::default();
        l.hand_read(1, 1);
        l.hand_read(2, 1);
        assert_eq!(l.on_written(1), Written::Read);
        // Re-sent before its ack: must not take record 2's entry.
        assert_eq!(l.on_written(1), Written::Retransmit);
        assert_eq!(l.on_puback(1), Some(1));
        // pkid 1 is free again and now belongs to record 2.
        assert_eq!(l.on_written(1), Written::Read);
        assert_eq!(l.on_puback(1), Some(2));
        assert_eq!(l.on_written(1), Written::Unexpected);
        assert_eq!(l.on_puback(9), None);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut l = Ledger::default();
        l.hand_read(5, 2);
        assert_eq!(l.on_written(1), Written::Read);
        l.reset();
        assert_eq!(l.open_reads(), 0);
        assert_eq!(l.last_handed(), None);
        assert_eq!(l.on_puback(1), None);
        assert!(l.is_idle());
    }
}
