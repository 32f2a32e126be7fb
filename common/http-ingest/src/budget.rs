//! A node-wide budget of bytes held by requests in progress: HTTP bodies (after gzip
//! inflation, plus what decoding them builds) and, on a core, edge batches (compressed and
//! decompressed). A request takes its share before it reads anything, and a request that
//! finds the budget spent is answered 429 / `Unavailable` at once: a burst of large
//! requests is pushed back instead of growing the node until the kernel kills it.
//!
//! Must never wait for budget: a waiting request would still hold its connection and
//! buffers, which is what the budget is there to bound.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits count KiB: a semaphore holds at most `u32::MAX >> 3` permits, and bytes would
/// cap the budget at 256 MiB.
const UNIT: usize = 1024;

#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_bytes: usize,
}

/// Bytes taken from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BudgetShare {
    permit: Option<OwnedSemaphorePermit>,
}

fn units(bytes: usize) -> u32 {
    bytes.div_ceil(UNIT).try_into().unwrap_or(u32::MAX)
}

impl MemoryBudget {
    pub fn new(total_bytes: usize) -> MemoryBudget {
        let permits = units(total_bytes).min(Semaphore::MAX_PERMITS as u32) as usize;
        MemoryBudget { permits: Arc::new(Semaphore::new(permits)), total_bytes: permits * UNIT }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes not taken right now.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    /// Takes `bytes` now, or `None` when the budget does not have them.
    pub fn try_take(&self, bytes: usize) -> Option<BudgetShare> {
        if bytes == 0 {
            return Some(BudgetShare { permit: None });
        }
        let permit = self.permits.clone().try_acquire_many_owned(units(bytes)).ok()?;
        Some(BudgetShare { permit: Some(permit) })
    }
}

impl BudgetShare {
    /// Gives back what is taken beyond `bytes` (a body turned out smaller than the share
    /// taken for it).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes);
        if let Some(permit) = self.permit.as_mut() {
            let held = permit.num_permits() as u32;
            if keep < held {
                drop(permit.split((held - keep) as usize));
            }
        }
    }

    /// Adds `other` to this share, so both are given back together.
    pub fn merge(&mut self, other: BudgetShare) {
        match (self.permit.as_mut(), other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
    }

    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_taken_shrunk_and_given_back() {
        let budget = MemoryBudget::new(10 * 1024);
        let mut a = budget.try_take(6 * 1024).expect("fits");
        assert!(budget.try_take(5 * 1024).is_none(), "only 4 KiB left");
        a.shrink_to(1000);
        assert_eq!(a.bytes(), 1024, "rounded up to the unit");
        let b = budget.try_take(9 * 1024).expect("shrinking gave the rest back");
        a.merge(b);
        assert_eq!(budget.available_bytes(), 0);
        drop(a);
        assert_eq!(budget.available_bytes(), 10 * 1024);
        assert!(budget.try_take(11 * 1024).is_none(), "more than the whole budget never fits");
        assert_eq!(budget.try_take(0).map(|s| s.bytes()), Some(0));
    }
}
