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
//! Threads: the state is plain `Cell`s, so an `Arena` must never be used from
//! two threads at once. It is `Sync` (which a `#[global_allocator]` static
//! needs) only on single-threaded wasm, where there is no second thread; see
//! the `Sync` impl. Natively (the unit tests, a native benchmark build) it is
//! not `Sync`: it cannot be the global allocator there, and a `&Arena` cannot
//! reach another thread, so the safe [`paused`] cannot race.
//!
//! `unsafe` is allowed item by item here (the `Sync` and `GlobalAlloc` impls,
//! `Arena::regrow`, the tests), each with its `SAFETY` argument; the rest of
//! the crate stays under the workspace's `unsafe_code = "deny"`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// First chunk size.
const MIN_CHUNK: usize = 64 << 10;
/// Largest chunk the arena grows to.
const MAX_CHUNK: usize = 8 << 20;
/// Blocks above this size bypass the arena (they would waste most of it).
const LARGE: usize = 256 << 10;

/// The allocator; installed by the SDK as `#[global_allocator]`.
///
/// Not `Sync` outside single-threaded wasm:
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<weir_plugin_sdk::arena::Arena>();
/// ```
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

#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[allow(unsafe_code)] // an unsafe impl, see its SAFETY argument
// SAFETY: `Sync` lets a `&Arena` (the global allocator static) be used from
// several threads; the `Cell`s are only sound if that never happens
// concurrently. On wasm without the `atomics` target feature (wasm32-wasip2,
// the plugins' target, whose spec says `singlethread`) a module has a single
// thread: without atomics there is no shared memory a second thread could run
// on, std cannot spawn threads, and std's own locks and thread-locals are
// plain data on this cfg for the same reason. So all access to the cells comes
// from one thread, one call at a time (no method is re-entered: they only
// call `System`, wasi-libc's malloc, which never comes back to the global
// allocator). Everywhere else (native builds, threaded wasm) this impl is
// absent: `Arena` is `!Sync` there, so the compiler keeps every `&Arena` (and
// with it the safe `paused`) on one thread, and it cannot be a
// `#[global_allocator]`. The SDK installs the arena under exactly this cfg
// (lib.rs).
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
    #[allow(unsafe_code)] // the allocator's own internals
    // SAFETY: `unsafe fn` because it frees the current chunk; callers check
    // `live == 0` first (see the `# Safety` section and each call).
    unsafe fn regrow(&self, want: usize) {
        let size = want.next_power_of_two().clamp(MIN_CHUNK, MAX_CHUNK);
        if size <= self.end.get() - self.start.get() {
            return;
        }
        // SAFETY: 16 is a power of two and `size` (at most MAX_CHUNK, a
        // multiple of 16) cannot overflow `isize` when rounded up to it, so the
        // layout is valid; `size` is at least MIN_CHUNK, so non-zero as
        // `System.alloc` requires.
        let new = unsafe { System.alloc(Layout::from_size_align_unchecked(size, 16)) };
        if new.is_null() {
            return;
        }
        let (old, old_size) = (self.start.get(), self.end.get() - self.start.get());
        if old != 0 {
            // SAFETY: the old chunk came from `System.alloc` above (in an
            // earlier call) with exactly this layout: `end - start` is its size
            // and 16 its alignment, which made a valid layout then. No block in
            // it is live (the caller's precondition), and `start`/`end`/`top`
            // move to the new chunk below, so it is never handed out again.
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

#[allow(unsafe_code)] // an unsafe impl, see its SAFETY argument
// SAFETY: the `GlobalAlloc` contract: a block fits its layout and stays valid
// and unaliased until freed, no method unwinds, and the allocator does not
// allocate through the global allocator itself. Arena blocks come from the
// current chunk between `start` and `top`, aligned by address (`bump`) and
// never overlapping: `top` only moves back over a block being freed that ends
// at `top`, or to `start` when no block is live (`live == 0`), and the chunk
// is only replaced then too. Every other block is `System`'s, told apart by
// address (`owns`): a `System` block cannot lie inside the current chunk,
// which is itself a live `System` allocation. Nothing unwinds out of it: on
// wasm a panic aborts (the target's panic strategy), and the only arithmetic
// that could panic natively (a debug overflow check in `regrow`'s
// `next_power_of_two`) needs 2^63 bytes of misses. See each method for the
// rest.
unsafe impl GlobalAlloc for Arena {
    // SAFETY: keeps `alloc`'s contract: returns a block of `layout` from the
    // chunk (`bump` checks alignment and room), or `System`'s, or null.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.paused.get() == 0 && layout.size() <= LARGE {
            if let Some(p) = self.bump(layout) {
                return p;
            }
            if self.live.get() == 0 {
                // Empty arena: it may grow right away (first use, or a
                // first block bigger than the chunk).
                let want = (self.end.get() - self.start.get()).saturating_mul(2);
                // SAFETY: `live == 0` was just checked: no block of the chunk
                // is live, as `regrow` requires.
                unsafe { self.regrow(want.max(layout.size() + layout.align())) };
                self.top.set(self.start.get());
                if let Some(p) = self.bump(layout) {
                    return p;
                }
            }
            self.missed.set(self.missed.get().saturating_add(layout.size()));
        }
        // SAFETY: our caller's layout, forwarded unchanged: it has a non-zero
        // size, as `GlobalAlloc::alloc` requires of our caller too.
        unsafe { System.alloc(layout) }
    }

    // SAFETY: keeps `dealloc`'s contract: `ptr` is a live block of this
    // allocator with this layout; arena blocks are only counted down (and the
    // chunk rewound once none is left), `System` blocks go back to `System`.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: `ptr` is live (the caller's contract) and not in the
            // current chunk; blocks of earlier chunks cannot be live (a chunk
            // is only replaced when none is), so it came from `System.alloc`
            // or `System.realloc` with this layout (the caller passes the
            // layout it was allocated or last reallocated with).
            return unsafe { System.dealloc(ptr, layout) };
        }
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            // The batch is over: rewind, and grow if it did not fit.
            let missed = self.missed.replace(0);
            if missed > 0 {
                let used = self.top.get() - self.start.get();
                // SAFETY: `live` just dropped to 0: no block of the chunk is
                // live, as `regrow` requires.
                unsafe { self.regrow(used.saturating_add(missed)) };
            }
            self.top.set(self.start.get());
        } else if ptr as usize + layout.size().max(1) == self.top.get() {
            // The last block: give its room back (temporary strings, vectors
            // that moved after growing).
            self.top.set(ptr as usize);
        }
    }

    // SAFETY: keeps `realloc`'s contract: the last block of the chunk is
    // resized in place when the chunk has room (the room above `top` is free);
    // a block that shrinks keeps its place; otherwise the contents move to a
    // new block and the old one is freed, or on failure null is returned and
    // the old block is left as it was.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: as in `dealloc`, a live block outside the current chunk
            // came from `System` with `layout`; `new_size` is forwarded under
            // the same contract (non-zero, no overflow when rounded up to the
            // alignment) that our caller keeps.
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
        // SAFETY: `layout.align()` comes from a valid layout, so it is a power
        // of two, and the `realloc` contract makes our caller guarantee that
        // `new_size` is non-zero and does not overflow `isize` when rounded up
        // to it.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` is valid and non-zero (above). A non-null `new`
        // is a fresh block, so it cannot overlap the live block at `ptr`, and
        // it holds `new_size > layout.size()` bytes (the smaller case returned
        // above), so copying `layout.size()` bytes stays inside both. `ptr`
        // is then freed once, with the layout it was allocated with, and the
        // caller does not use it again after a successful `realloc`; on null
        // it stays untouched and live.
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
#[allow(unsafe_code)] // calls the allocator's unsafe methods directly
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn rewinds_when_the_last_block_is_freed_and_grows_after_a_miss() {
        let arena = Arena::new();
        // SAFETY: here and in the other tests, the arena is used as its
        // contract requires: layouts are non-zero, every block is written and
        // read within its size, and freed or reallocated once with the layout
        // it has.
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
        // SAFETY: see the first test.
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
        // SAFETY: see the first test.
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
