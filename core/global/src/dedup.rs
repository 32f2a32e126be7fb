//! What the digest of one partition needs to drop a batch Kafka holds twice (I4), also
//! across a digest failover: which batch parts the partition's registered segments stored.
//!
//! Kept per partition, per edge incarnation (batch ids are `edge:incarnation:seq` with a
//! part index, `ARCHITECTURE.md` "Batch identity"). Per partition, not per cluster: an
//! edge's batches are spread over partitions by source, so one partition sees a sparse
//! subsequence of an incarnation's seqs and a "highest contiguous seq" would never move;
//! and the digests of two partitions lag each other arbitrarily, which must not matter.
//!
//! # The window, and its bound
//!
//! Per incarnation, [`Window`] remembers exactly which parts of the seqs in
//! `[end - WINDOW_SEQS, end)` are stored, `end` being one past the highest seq of which
//! anything is stored: whole batches as seq ranges, batches of several parts with only
//! some parts stored part by part. Why a window is enough: a duplicate exists because an
//! edge resent a batch that was in flight when its core died, and the new core publishes
//! the resent batches oldest first, so a duplicate of seq `s` enters the partition before
//! any batch newer than what was in flight with it; an edge has at most
//! `weir_proto::wire::MAX_STREAMS_PER_CONNECTION` (256) batches in flight, far inside the
//! window even across a few failovers in a row.
//!
//! At the bound: a seq below the window is *forgotten*, and [`Dedup::is_stored`] answers
//! `false` for it, so the digest keeps the record. Forgetting errs towards a duplicate,
//! never towards a loss (I3 outranks I4): a first copy that arrives that late is stored,
//! and only a duplicate that late (which the argument above rules out) is stored twice.
//!
//! A partition keeps at most [`MAX_INCARNATIONS`] incarnations; past it the one whose last
//! registered batch is the oldest (lowest Global offset, then name) is forgotten whole,
//! with the same effect. Memory per partition is therefore bounded by
//! `MAX_INCARNATIONS × (WINDOW_SEQS ranges + the split batches in the window)`; in the
//! common case (a few runs of seqs per incarnation) it is a few hundred bytes each.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use weir_proto::wire::BatchId;

use crate::command::StoredBatches;

/// Seqs per incarnation remembered below the highest stored one.
pub const WINDOW_SEQS: u64 = 4096;
/// Incarnations remembered per partition.
pub const MAX_INCARNATIONS: usize = 4096;

/// The dedup state of one partition: edge id → incarnation → window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    edges: BTreeMap<String, BTreeMap<String, Window>>,
}

impl Dedup {
    /// Whether part `part` of `parts` of batch `batch` is stored in a registered segment
    /// (or, for the digest's own overlay, marked). `false` for anything forgotten (see the
    /// module doc), and for a part of a batch split differently from the copy stored: two
    /// cores may split one batch into different parts, and part 2 of 3 holds other events
    /// than part 1 of 2; only a batch stored whole answers for every split of it.
    pub fn is_stored(&self, batch: &BatchId, part: u32, parts: u32) -> bool {
        self.edges
            .get(&batch.edge_id)
            .and_then(|incarnations| incarnations.get(&batch.incarnation))
            .is_some_and(|window| window.is_stored(batch.seq, part, parts))
    }

    /// Records what a segment stored; `offset` (the Global offset of the command) orders
    /// incarnations for eviction. The digest uses the same call on its own copy for the
    /// batches of the segment it is building.
    pub fn mark(&mut self, stored: &[StoredBatches], offset: u64) {
        for batches in stored {
            let window = self
                .edges
                .entry(batches.edge_id.clone())
                .or_default()
                .entry(batches.incarnation.clone())
                .or_default();
            window.last_offset = offset;
            for &(start, end) in &batches.whole {
                window.mark_whole(start, end);
            }
            for part in &batches.parts {
                window.mark_part(part.seq, part.part, part.parts);
            }
            window.prune();
        }
        self.evict();
    }

    /// Incarnations remembered.
    pub fn incarnations(&self) -> usize {
        self.edges.values().map(BTreeMap::len).sum()
    }

    fn evict(&mut self) {
        let mut excess = self.incarnations().saturating_sub(MAX_INCARNATIONS);
        while excess > 0 {
            // Deterministic: the lowest (last_offset, edge, incarnation).
            let oldest = self
                .edges
                .iter()
                .flat_map(|(edge, incs)| incs.iter().map(move |(inc, w)| (w.last_offset, edge.clone(), inc.clone())))
                .min();
            let Some((_, edge, inc)) = oldest else { return };
            let incs = self.edges.get_mut(&edge).expect("found above");
            incs.remove(&inc);
            if incs.is_empty() {
                self.edges.remove(&edge);
            }
            excess -= 1;
        }
    }
}

/// What one incarnation has stored in one partition, within the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// One past the highest seq of which a part is stored; 0 before anything.
    end: u64,
    /// Seqs with every part stored: sorted, disjoint, non-adjacent `[start, end)` ranges.
    whole: Vec<(u64, u64)>,
    /// Seqs of which only some parts are stored: seq → part count → stored parts. Several
    /// counts for one seq when cores split the batch differently.
    partial: BTreeMap<u64, BTreeMap<u32, BTreeSet<u32>>>,
    /// Global offset of the last command that marked something here.
    last_offset: u64,
}

impl Window {
    fn floor(&self) -> u64 {
        self.end.saturating_sub(WINDOW_SEQS)
    }

    fn is_stored(&self, seq: u64, part: u32, parts: u32) -> bool {
        if seq >= self.end || seq < self.floor() {
            return false;
        }
        // The last range starting at or before seq.
        let i = self.whole.partition_point(|&(start, _)| start <= seq);
        if i > 0 && seq < self.whole[i - 1].1 {
            return true;
        }
        self.partial.get(&seq).and_then(|splits| splits.get(&parts)).is_some_and(|stored| stored.contains(&part))
    }

    fn mark_whole(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.end = self.end.max(end);
        // Parts of these seqs no longer matter: the whole batch is stored.
        let inside: Vec<u64> = self.partial.range(start..end).map(|(&seq, _)| seq).collect();
        for seq in inside {
            self.partial.remove(&seq);
        }
        let i = self.whole.partition_point(|&(s, _)| s < start);
        self.whole.insert(i, (start, end));
        // Merge overlapping or adjacent neighbours.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.whole.len());
        for &(s, e) in &self.whole {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.whole = merged;
    }

    fn mark_part(&mut self, seq: u64, part: u32, parts: u32) {
        if part >= parts || self.is_stored(seq, part, parts) {
            return;
        }
        self.end = self.end.max(seq + 1);
        let stored = self.partial.entry(seq).or_default().entry(parts).or_default();
        stored.insert(part);
        // Every part of one split stored: every event of the batch is.
        if stored.len() as u64 >= u64::from(parts) {
            self.mark_whole(seq, seq + 1);
        }
    }

    fn prune(&mut self) {
        let floor = self.floor();
        self.whole.retain(|&(_, e)| e > floor);
        if let Some(first) = self.whole.first_mut() {
            first.0 = first.0.max(floor);
        }
        self.partial = self.partial.split_off(&floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::StoredPart;

    fn id(edge: &str, inc: &str, seq: u64) -> BatchId {
        BatchId { edge_id: edge.into(), incarnation: inc.into(), seq }
    }

    fn whole(edge: &str, inc: &str, ranges: &[(u64, u64)]) -> StoredBatches {
        StoredBatches { edge_id: edge.into(), incarnation: inc.into(), whole: ranges.to_vec(), parts: vec![] }
    }

    #[test]
    fn whole_batches_and_sparse_ranges() {
        let mut d = Dedup::default();
        d.mark(&[whole("e", "i", &[(0, 3), (5, 6)])], 1);
        let table = [(0, true), (2, true), (3, false), (4, false), (5, true), (6, false), (100, false)];
        for (seq, stored) in table {
            assert_eq!(d.is_stored(&id("e", "i", seq), 0, 1), stored, "seq {seq}");
        }
        d.mark(&[whole("e", "i", &[(3, 5)])], 2);
        assert_eq!(d.edges["e"]["i"].whole, vec![(0, 6)], "adjacent ranges merge");
    }

    #[test]
    fn split_batches_are_stored_part_by_part() {
        let mut d = Dedup::default();
        let part = |part| StoredPart { seq: 7, part, parts: 3 };
        let batches = StoredBatches { edge_id: "e".into(), incarnation: "i".into(), whole: vec![], parts: vec![part(0), part(1)] };
        d.mark(std::slice::from_ref(&batches), 1);
        assert!(d.is_stored(&id("e", "i", 7), 1, 3));
        assert!(!d.is_stored(&id("e", "i", 7), 2, 3), "the next segment holds part 2");
        let rest = StoredBatches { parts: vec![part(2)], ..batches };
        d.mark(&[rest], 2);
        assert!(d.is_stored(&id("e", "i", 7), 2, 3));
        assert!(d.is_stored(&id("e", "i", 7), 1, 2), "a batch stored whole answers for any split");
        let w = &d.edges["e"]["i"];
        assert!(w.partial.is_empty() && w.whole == vec![(7, 8)], "a complete batch becomes a whole one: {w:?}");
    }

    #[test]
    fn a_part_of_a_batch_split_differently_is_not_stored() {
        // Core A split batch 7 into 3 records and died after storing parts 0 and 1; core B
        // split the resend into 2. Part 1 of 2 holds events of A's part 2, which is not
        // stored: matching on the part index alone would drop them.
        let mut d = Dedup::default();
        let split = |parts: &[(u32, u32)]| StoredBatches {
            edge_id: "e".into(),
            incarnation: "i".into(),
            whole: vec![],
            parts: parts.iter().map(|&(part, parts)| StoredPart { seq: 7, part, parts }).collect(),
        };
        d.mark(&[split(&[(0, 3), (1, 3)])], 1);
        let b = id("e", "i", 7);
        assert!(!d.is_stored(&b, 0, 2) && !d.is_stored(&b, 1, 2), "kept: at worst a duplicate, never a loss");
        assert!(d.is_stored(&b, 1, 3), "the same split is recognised");
        d.mark(&[split(&[(0, 2)])], 2);
        assert!(d.is_stored(&b, 0, 2) && !d.is_stored(&b, 1, 2));
        assert!(!d.is_stored(&b, 2, 3), "a third split of A's plan still missing");
        d.mark(&[split(&[(1, 2)])], 3);
        for (part, parts) in [(0, 3), (1, 3), (2, 3), (0, 2), (1, 2), (0, 1)] {
            assert!(d.is_stored(&b, part, parts), "B stored every part of its split: the batch is whole ({part} of {parts})");
        }
        assert!(d.edges["e"]["i"].partial.is_empty());
    }

    #[test]
    fn seqs_below_the_window_are_forgotten_and_answer_not_stored() {
        let mut d = Dedup::default();
        d.mark(&[whole("e", "i", &[(0, 10)])], 1);
        d.mark(&[whole("e", "i", &[(WINDOW_SEQS + 5, WINDOW_SEQS + 6)])], 2);
        // end = WINDOW_SEQS + 6, floor = 6: seqs 0..6 forgotten (kept by the digest: at worst a duplicate).
        assert!(!d.is_stored(&id("e", "i", 5), 0, 1));
        assert!(d.is_stored(&id("e", "i", 6), 0, 1));
        assert!(d.is_stored(&id("e", "i", 9), 0, 1));
        assert_eq!(d.edges["e"]["i"].whole, vec![(6, 10), (WINDOW_SEQS + 5, WINDOW_SEQS + 6)]);
    }

    #[test]
    fn past_max_incarnations_the_least_recent_is_forgotten() {
        let mut d = Dedup::default();
        for n in 0..MAX_INCARNATIONS as u64 + 1 {
            d.mark(&[whole("e", &format!("i{n}"), &[(0, 1)])], 10 + n);
        }
        assert_eq!(d.incarnations(), MAX_INCARNATIONS);
        assert!(!d.is_stored(&id("e", "i0", 0), 0, 1), "the oldest went");
        assert!(d.is_stored(&id("e", "i1", 0), 0, 1));
        assert!(d.is_stored(&id("e", &format!("i{MAX_INCARNATIONS}"), 0), 0, 1));
    }
}
