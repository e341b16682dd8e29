//! The process's global allocator: mimalloc, called the way its C API is fastest for Rust's
//! layouts.
//!
//! The `mimalloc` crate's allocator sends every request through `mi_malloc_aligned`. mimalloc 3
//! takes that call's fast path only for blocks of at most 1 KiB; a larger request goes to its
//! generic aligned path, and one whose size class is not a power of two is over-allocated there
//! (a bigger block, an offset pointer, a slower free). The gateway's header maps (one about 1.2 KiB
//! per request and per response) paid that on every call: its allocations took about 1,040
//! instructions per proxied HTTP/1.1 call, and take about 530 through the plain calls (callgrind,
//! docs/performance.md, tenth round).
//!
//! Every mimalloc block is aligned to at least 8 bytes (sizes are whole words and a page's first
//! block is 16-aligned), so a layout aligned to 8 or less is served by the plain `mi_malloc`
//! family, as `std`'s system allocator does for `malloc`. Larger alignments keep the aligned calls.
//! Both kinds are released by `mi_free`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has whatever its size.
const BLOCK_ALIGN: usize = 8;

/// mimalloc as the global allocator (see the module's note).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mimalloc;

// SAFETY: each method forwards to the mimalloc call that honours `layout`: the plain calls only
// where every block they return is aligned enough (`BLOCK_ALIGN`), the aligned calls otherwise.
// mimalloc returns null when out of memory, as `GlobalAlloc` requires, and `mi_free` releases
// blocks of either kind.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C allocation calls; `layout` is valid by `GlobalAlloc`'s contract.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps its alignment.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size a request path uses (and the size classes' edges), at every alignment up to a
    /// page: the block is aligned, usable to its end, grows and shrinks aligned, and frees.
    #[test]
    fn blocks_are_aligned_for_every_size_and_alignment() {
        let sizes = (1..=80)
            .chain([
                96, 100, 127, 128, 200, 1000, 1024, 1025, 1248, 1300, 4000, 4096, 70_000,
            ])
            .chain([1 << 20, (1 << 20) + 8]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: non-zero sizes; every block is written within its size, then freed
                // with the layout it was made with.
                unsafe {
                    for zeroed in [false, true] {
                        let p = if zeroed {
                            Mimalloc.alloc_zeroed(layout)
                        } else {
                            Mimalloc.alloc(layout)
                        };
                        assert!(!p.is_null(), "{size} bytes aligned {align}");
                        assert_eq!(p as usize % align, 0, "{size} bytes aligned {align}");
                        if zeroed {
                            assert!(
                                std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0),
                                "{size} bytes zeroed"
                            );
                        }
                        p.write_bytes(0xa5, size);
                        let grown = Mimalloc.realloc(p, layout, size * 3);
                        assert_eq!(grown as usize % align, 0, "{size} grown, aligned {align}");
                        assert_eq!(*grown.add(size - 1), 0xa5, "contents kept");
                        let grown_layout = Layout::from_size_align(size * 3, align).expect("grown");
                        let shrunk = Mimalloc.realloc(grown, grown_layout, size.div_ceil(2));
                        assert_eq!(shrunk as usize % align, 0, "{size} shrunk, aligned {align}");
                        assert_eq!(*shrunk, 0xa5, "contents kept");
                        let shrunk_layout =
                            Layout::from_size_align(size.div_ceil(2), align).expect("shrunk");
                        Mimalloc.dealloc(shrunk, shrunk_layout);
                    }
                }
            }
        }
    }
}
