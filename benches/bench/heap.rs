//! A counting wrapper around the system allocator: live heap bytes and blocks, and live blocks
//! by requested size, so the memory child can say where the bytes per agent go. Counting is off
//! (one relaxed load per call) unless the memory child turns it on, so other figures pay
//! nothing measurable.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

pub struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicI64 = AtomicI64::new(0);
static BLOCKS: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static CALLS: AtomicI64 = AtomicI64::new(0);
/// Live blocks by requested size (the last bucket: every larger size).
const BUCKETS: usize = 4097;
static BY_SIZE: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];

fn count(size: usize, sign: i64) {
    let now = BYTES.fetch_add(sign * size as i64, Relaxed) + sign * size as i64;
    if sign > 0 {
        PEAK.fetch_max(now, Relaxed);
        CALLS.fetch_add(1, Relaxed);
    }
    BLOCKS.fetch_add(sign, Relaxed);
    BY_SIZE[size.min(BUCKETS - 1)].fetch_add(sign, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if ON.load(Relaxed) && !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if ON.load(Relaxed) && !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if ON.load(Relaxed) {
            count(layout.size(), -1);
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if ON.load(Relaxed) && !p.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        p
    }
}

/// Starts counting (frees of blocks allocated before are counted too, as negatives).
pub fn start() {
    ON.store(true, Relaxed);
}

/// Live bytes, live blocks and live blocks by size since [`start`].
pub struct Snapshot {
    pub bytes: i64,
    pub blocks: i64,
    pub peak: i64,
    pub calls: i64,
    pub by_size: Vec<i64>,
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        bytes: BYTES.load(Relaxed),
        blocks: BLOCKS.load(Relaxed),
        peak: PEAK.load(Relaxed),
        calls: CALLS.load(Relaxed),
        by_size: BY_SIZE.iter().map(|b| b.load(Relaxed)).collect(),
    }
}

/// glibc's chunk for a request of `size` bytes (64-bit: size + 8 rounded up to 16, at least 32).
pub fn chunk(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}
