//! The plugin's global allocator: a bump arena in front of the system
//! allocator (wasi-libc's dlmalloc).
//!
//! Why: a `parse` call allocates a few dozen short-lived blocks per event (the
//! input strings the host lowers into guest memory, every field name and text
//! value, the lists the bindings lower the result into), and frees all of them
//! in the post-return call right after the host has lifted the result. Through
//! dlmalloc those mallocs and frees were about a quarter of the plugin's
//! run time; a bump pointer makes them a few instructions each.
//!
//! How it stays correct: the arena counts its live blocks and only rewinds
//! when the count drops to zero, i.e. when the host's post-return call has
//! freed the last block of the batch. A block that outlives the batch (a
//! cache a parser builds lazily) therefore can never be overwritten: it only
//! keeps the arena from rewinding, and new blocks then go to the system
//! allocator once the chunk is full, so the worst case is dlmalloc speed plus
//! one idle chunk. Long-lived state made in `configure` and in the first
//! `parse` is allocated with the arena paused ([`paused`]) for that reason.
//!
//! Memory: the chunk starts at [`MIN_CHUNK`] and doubles (up to
//! [`MAX_CHUNK`]) at a rewind after a batch did not fit, so it follows the
//! batch size. Growing is an ordinary allocation that may fail under the
//! host's memory cap; then the arena simply stays smaller. Blocks larger than
//! [`LARGE`] always go to the system allocator.
//!
//! Only for single-threaded wasm (no `atomics` target feature): the state is
//! plain `Cell`s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// First chunk size.
const MIN_CHUNK: usize = 64 << 10;
/// Largest chunk the arena grows to.
const MAX_CHUNK: usize = 8 << 20;
/// Blocks above this size bypass the arena (they would waste most of it).
const LARGE: usize = 256 << 10;

/// The allocator; installed by the SDK as `#[global_allocator]`.
pub struct Arena {
    /// Current chunk `[start, end)`; both 0 before the first chunk.
    start: Cell<usize>,
    end: Cell<usize>,
    /// Next free byte.
    top: Cell<usize>,
    /// Blocks handed out from the chunk and not freed yet.
    live: Cell<usize>,
    /// Bytes that did not fit since the last rewind: grow at the next one.
    missed: Cell<usize>,
    /// Nesting depth of [`paused`]; the arena serves nothing while above 0.
    paused: Cell<usize>,
}

// SAFETY: wasm32-wasip2 without the `atomics` feature has exactly one thread,
// so the cells are never touched concurrently (the SDK only installs the
// arena under that cfg).
unsafe impl Sync for Arena {}

impl Arena {
    pub const fn new() -> Self {
        Arena {
            start: Cell::new(0),
            end: Cell::new(0),
            top: Cell::new(0),
            live: Cell::new(0),
            missed: Cell::new(0),
            paused: Cell::new(0),
        }
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        let p = ptr as usize;
        p >= self.start.get() && p < self.end.get()
    }

    /// Bumps a block out of the chunk, if it fits.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        // A zero-sized block at the very end would not be recognised as ours.
        let size = layout.size().max(1);
        let at = self.top.get().checked_next_multiple_of(layout.align())?;
        let next = at.checked_add(size)?;
        if self.start.get() == 0 || next > self.end.get() {
            return None;
        }
        self.top.set(next);
        self.live.set(self.live.get() + 1);
        Some(at as *mut u8)
    }

    /// Replaces the (empty) chunk by one of at least `want` bytes; keeps the
    /// old one if the new one cannot be had.
    ///
    /// # Safety
    /// No block of the current chunk may be live.
    unsafe fn regrow(&self, want: usize) {
        let size = want.next_power_of_two().clamp(MIN_CHUNK, MAX_CHUNK);
        if size <= self.end.get() - self.start.get() {
            return;
        }
        // SAFETY: non-zero size, power-of-two alignment.
        let new = unsafe { System.alloc(Layout::from_size_align_unchecked(size, 16)) };
        if new.is_null() {
            return;
        }
        let (old, old_size) = (self.start.get(), self.end.get() - self.start.get());
        if old != 0 {
            // SAFETY: allocated below with this layout; no live block in it.
            unsafe {
                System.dealloc(
                    old as *mut u8,
                    Layout::from_size_align_unchecked(old_size, 16),
                )
            };
        }
        self.start.set(new as usize);
        self.end.set(new as usize + size);
        self.top.set(new as usize);
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.paused.get() == 0 && layout.size() <= LARGE {
            if let Some(p) = self.bump(layout) {
                return p;
            }
            if self.live.get() == 0 {
                // Empty arena: it may grow right away (first use, or a
                // first block bigger than the chunk).
                let want = (self.end.get() - self.start.get()).saturating_mul(2);
                // SAFETY: no live block.
                unsafe { self.regrow(want.max(layout.size() + layout.align())) };
                self.top.set(self.start.get());
                if let Some(p) = self.bump(layout) {
                    return p;
                }
            }
            self.missed.set(self.missed.get().saturating_add(layout.size()));
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: not ours, so it came from `System`.
            return unsafe { System.dealloc(ptr, layout) };
        }
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            // The batch is over: rewind, and grow if it did not fit.
            let missed = self.missed.replace(0);
            if missed > 0 {
                let used = self.top.get() - self.start.get();
                // SAFETY: no live block.
                unsafe { self.regrow(used.saturating_add(missed)) };
            }
            self.top.set(self.start.get());
        } else if ptr as usize + layout.size().max(1) == self.top.get() {
            // The last block: give its room back (temporary strings, vectors
            // that moved after growing).
            self.top.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: not ours, so it came from `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let p = ptr as usize;
        if p + layout.size().max(1) == self.top.get()
            && let Some(next) = p.checked_add(new_size.max(1))
            && next <= self.end.get()
        {
            // The last block grows or shrinks in place: the common case of a
            // string or vector being built.
            self.top.set(next);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: same alignment as a valid layout, non-zero size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded to our own alloc/dealloc.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// Runs `f` with the arena paused, so that what `f` allocates lives in the
/// system allocator: for state that outlives a batch.
pub fn paused<R>(arena: &Arena, f: impl FnOnce() -> R) -> R {
    struct Resume<'a>(&'a Arena);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            self.0.paused.set(self.0.paused.get() - 1);
        }
    }
    arena.paused.set(arena.paused.get() + 1);
    let _resume = Resume(arena);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn rewinds_when_the_last_block_is_freed_and_grows_after_a_miss() {
        let arena = Arena::new();
        unsafe {
            let a = arena.alloc(layout(100));
            let b = arena.alloc(layout(100));
            assert!(arena.owns(a) && arena.owns(b));
            a.write_bytes(1, 100);
            b.write_bytes(2, 100);
            assert_eq!(*a.add(99), 1, "blocks must not overlap");
            // More than the first chunk while blocks are live: goes to the
            // system allocator and makes the chunk grow at the next rewind.
            let big = arena.alloc(layout(MIN_CHUNK));
            assert!(!arena.owns(big));
            arena.dealloc(big, layout(MIN_CHUNK));
            arena.dealloc(a, layout(100));
            assert_ne!(arena.top.get(), arena.start.get(), "b is still live");
            arena.dealloc(b, layout(100));
            assert_eq!(arena.top.get(), arena.start.get());
            assert!(arena.end.get() - arena.start.get() > MIN_CHUNK);
        }
    }

    #[test]
    fn the_last_block_reallocs_in_place_and_others_move() {
        let arena = Arena::new();
        unsafe {
            let a = arena.alloc(layout(16));
            a.write_bytes(7, 16);
            let a2 = arena.realloc(a, layout(16), 64);
            assert_eq!(a, a2);
            let b = arena.alloc(layout(8));
            let a3 = arena.realloc(a2, layout(64), 128);
            assert_ne!(a3, a2);
            assert_eq!(*a3.add(15), 7, "contents moved along");
            arena.dealloc(b, layout(8));
            arena.dealloc(a3, layout(128));
            assert_eq!(arena.live.get(), 0);
        }
    }

    #[test]
    fn paused_and_large_blocks_bypass_the_arena() {
        let arena = Arena::new();
        unsafe {
            let p = paused(&arena, || arena.alloc(layout(32)));
            assert!(!arena.owns(p));
            arena.dealloc(p, layout(32));
            let large = arena.alloc(layout(LARGE + 1));
            assert!(!arena.owns(large));
            arena.dealloc(large, layout(LARGE + 1));
            assert_eq!(arena.live.get(), 0);
        }
    }
}
