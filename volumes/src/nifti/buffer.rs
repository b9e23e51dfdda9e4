//! Zeroed `f32` / `u16` buffers backed by transparent huge pages where the kernel allows it.
//!
//! Decoding writes every byte of a fresh, large buffer once. With 4 KiB pages the kernel takes one fault
//! per page: measured here, faulting in the 36 MB `f32` buffer of one BraTS channel took ~40 ms, almost as
//! long as inflating it. Asking for huge pages (`MADV_HUGEPAGE`; this machine's THP mode is `madvise`)
//! brought that to ~2.5 ms. The hint is advisory: if it fails, the buffer is simply faulted 4 KiB at a time.

use std::cell::RefCell;

thread_local! {
    /// One image buffer and one label buffer a thread gave back (a patch-loader worker, when it moves to its
    /// next case), reused by that thread's next decode.
    static SPARE_F32: RefCell<Option<Vec<f32>>> = const { RefCell::new(None) };
    static SPARE_U16: RefCell<Option<Vec<u16>>> = const { RefCell::new(None) };
    /// The compressed bytes of the last `.gz` file this thread read, kept for the next read: a BraTS channel
    /// is 4 MB of gzip, and reading it into fresh memory each time paid ~1000 page faults (kernel zeroing)
    /// per file.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Largest compressed buffer a thread keeps between reads: above a BraTS channel (4–7 MB of gzip), so MRI
/// cases always reuse it, while a thread that once read a large CT file does not hold it for good. The
/// loader's memory bound counts this much per worker.
pub const COMPRESSED_SPARE_MAX_BYTES: usize = 16 << 20;

/// Runs `f` with this thread's buffer for compressed file bytes (contents stale: `f` clears it). Re-entrant
/// use (never done: decoding does not read files recursively) gets a fresh buffer instead of a panic.
pub fn with_compressed_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    COMPRESSED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let out = f(&mut buf);
            if buf.capacity() > COMPRESSED_SPARE_MAX_BYTES {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// A buffer of `n` floats for decoding into: this thread's spare if it is large enough (its contents are
/// stale; decoding overwrites every value it returns), else fresh zeros. Fresh memory is not free here:
/// the kernel zeroes every page on first touch, which cost a BraTS-sized worker ~20 % of its CPU time
/// (each case is 150 MB of new pages) before cases reused their predecessor's buffer.
pub fn reuse_or_zeroed_f32(n: usize) -> Vec<f32> {
    reuse_or(&SPARE_F32, n, zeroed_f32)
}

/// [`reuse_or_zeroed_f32`] for label maps.
pub fn reuse_or_zeroed_u16(n: usize) -> Vec<u16> {
    reuse_or(&SPARE_U16, n, zeroed_u16)
}

/// Hands `v` to this thread's next [`reuse_or_zeroed_f32`] (replacing, and so freeing, any earlier spare):
/// at most one spare buffer per thread, so the memory bound grows by nothing: the buffer replaces the
/// case it held.
pub fn give_back_f32(v: Vec<f32>) {
    SPARE_F32.with(|s| *s.borrow_mut() = Some(v));
}

/// [`give_back_f32`] for label maps.
pub fn give_back_u16(v: Vec<u16>) {
    SPARE_U16.with(|s| *s.borrow_mut() = Some(v));
}

fn reuse_or<T: Copy + Default + 'static>(
    spare: &'static std::thread::LocalKey<RefCell<Option<Vec<T>>>>,
    n: usize,
    fresh: fn(usize) -> Vec<T>,
) -> Vec<T> {
    match spare.with(|s| s.borrow_mut().take()) {
        Some(mut v) if v.capacity() >= n => {
            v.resize(n, T::default());
            v
        }
        _ => fresh(n),
    }
}

/// Below this, a buffer spans few huge pages and the system call is not worth it.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;
/// x86-64 / aarch64 transparent huge page size.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// `n` zeros, with huge pages advised for the interior of a large allocation before it is touched.
pub fn zeroed_f32(n: usize) -> Vec<f32> {
    // `vec![0; n]` is a calloc: fresh pages from the kernel, not yet touched, so the advice still applies.
    let mut v = vec![0f32; n];
    advise_huge_pages(&mut v);
    v
}

/// [`zeroed_f32`] for label maps.
pub fn zeroed_u16(n: usize) -> Vec<u16> {
    let mut v = vec![0u16; n];
    advise_huge_pages(&mut v);
    v
}

/// Advises huge pages for the whole 2 MiB pages inside `v` (nothing for small buffers).
pub fn advise_huge_pages<T: bytemuck::Pod>(v: &mut [T]) {
    if std::mem::size_of_val(v) >= HUGE_PAGE_MIN_BYTES {
        advise(v);
    }
}

#[cfg(target_os = "linux")]
fn advise<T: bytemuck::Pod>(v: &mut [T]) {
    let begin = v.as_mut_ptr() as usize;
    let end = begin + std::mem::size_of_val(v);
    let start = begin.next_multiple_of(HUGE_PAGE);
    let stop = end & !(HUGE_PAGE - 1);
    if stop > start {
        // SAFETY: [start, stop) lies inside the live allocation owned by `v`; MADV_HUGEPAGE changes only how
        // future faults are served, never the contents, and an error return is harmless (ignored).
        unsafe {
            libc::madvise(start as *mut libc::c_void, stop - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise<T: bytemuck::Pod>(_: &mut [T]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_reused_only_when_large_enough() {
        give_back_f32(vec![7.0f32; 1000]);
        assert!(reuse_or_zeroed_f32(2000).iter().all(|&x| x == 0.0), "too small a spare: fresh zeros");
        let spare = vec![7.0f32; 1000];
        let at = spare.as_ptr();
        give_back_f32(spare);
        let reused = reuse_or_zeroed_f32(800);
        assert_eq!((reused.len(), reused.as_ptr()), (800, at), "the same allocation, resized");
        assert!(reuse_or_zeroed_f32(10).iter().all(|&x| x == 0.0), "a spare is handed out once");
    }

    #[test]
    fn large_and_small_buffers_are_zeroed() {
        assert!(zeroed_f32(3 << 20).iter().all(|&x| x == 0.0));
        assert_eq!(zeroed_f32(5).len(), 5);
        assert!(zeroed_u16(3 << 20).iter().all(|&x| x == 0));
    }
}
