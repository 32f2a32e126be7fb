//! The global allocator of `weir-core`: mimalloc for everything below [`LARGE`]
//! (256 KiB), the system allocator (glibc) at and above it.
//!
//! Why: glibc's `malloc`/`free` were about 30% of an ingest-only core's OTLP samples
//! (prost allocates several times per log record). With mimalloc for everything the OTLP
//! path took about 20% less CPU per event, but mimalloc keeps freed memory for a while
//! before it returns it, and under a burst of large requests (`tests/it/memory.rs`:
//! 3 MiB bodies, 8 MiB batches) the core's peak RSS grew by up to 382 MiB, against
//! 138-287 MiB with glibc; its purge options bring that down only at twice the CPU per
//! event. Request bodies, decompressed batches and Kafka records are the allocations past
//! 256 KiB, few per request: from glibc they cost little, and the peak grew by 236-267
//! MiB. Back to back against glibc alone (ABBA, OTLP ingest-only) the split took about
//! 15% less CPU per event, for about twice the resident memory under load (81 MiB against
//! 36 MiB); BENCHMARKS.md, session 7.
//!
//! The edge keeps glibc: its syslog path measured the same CPU per event with this
//! allocator and 2.5 times the resident memory, and an edge should stay light.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Allocations of this many bytes or more go to the system allocator.
pub const LARGE: usize = 256 << 10;

/// Use as `#[global_allocator] static ALLOCATOR: weir_core::alloc::Allocator = weir_core::alloc::Allocator;`.
pub struct Allocator;

fn is_large(size: usize) -> bool {
    size >= LARGE
}

// SAFETY: every block is freed, and resized, by the allocator that made it: the choice
// depends only on the block's size, and `GlobalAlloc` passes the layout it was allocated
// with to `dealloc` and `realloc`. A `realloc` that crosses `LARGE` allocates from the
// other allocator, copies the smaller of the two sizes and frees the old block.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (non-zero size) is passed on unchanged.
        unsafe { if is_large(layout.size()) { System.alloc(layout) } else { MiMalloc.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { if is_large(layout.size()) { System.alloc_zeroed(layout) } else { MiMalloc.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `layout` is the one `ptr` was allocated with, so its size picks the
        // allocator that made it.
        unsafe { if is_large(layout.size()) { System.dealloc(ptr, layout) } else { MiMalloc.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            // SAFETY: same allocator before and after; the caller's contract holds.
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new_size` is non-zero and, rounded up to `layout.align()`, does
                // not overflow `isize` (the caller's contract for `realloc`).
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: as for `alloc`.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least this long.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks that grow and shrink across `LARGE` keep their bytes, and each is freed
    /// by the allocator that made it (a mismatch aborts the test process).
    #[test]
    #[allow(unsafe_code)]
    fn blocks_keep_their_bytes_across_the_threshold() {
        let a = Allocator;
        let layout = Layout::from_size_align(LARGE - 8, 8).unwrap();
        // SAFETY: non-zero layouts; every pointer is used within its size and freed once
        // with the layout (size) it has at that point.
        unsafe {
            let small = a.alloc(layout);
            assert!(!small.is_null());
            for i in 0..layout.size() {
                *small.add(i) = (i % 251) as u8;
            }
            let large = a.realloc(small, layout, 3 * LARGE);
            assert!(!large.is_null());
            assert!((0..layout.size()).all(|i| *large.add(i) == (i % 251) as u8), "grown across LARGE");
            let large_layout = Layout::from_size_align(3 * LARGE, 8).unwrap();
            let back = a.realloc(large, large_layout, 1000);
            assert!(!back.is_null());
            assert!((0..1000).all(|i| *back.add(i) == (i % 251) as u8), "shrunk across LARGE");
            a.dealloc(back, Layout::from_size_align(1000, 8).unwrap());
            let zeroed = a.alloc_zeroed(large_layout);
            assert!((0..large_layout.size()).step_by(4096).all(|i| *zeroed.add(i) == 0));
            a.dealloc(zeroed, large_layout);
        }
    }
}
