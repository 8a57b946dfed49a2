//! Output buffers for the CPU kernels.

use rayon::prelude::*;

/// `len` zeros, written by rayon's threads. The allocator hands back reused memory,
/// which must be cleared: as one `memset` on the thread that runs the op, clearing
/// an activation-sized buffer kept every other thread waiting.
pub fn zeroed(len: usize) -> Vec<f32> {
    /// Numbers each thread clears at a time: one `memset` of 256 KiB.
    const CHUNK: usize = 1 << 16;
    let mut buffer = Vec::with_capacity(len);
    buffer.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the loop above initialised all `len` numbers.
    unsafe { buffer.set_len(len) };
    buffer
}

thread_local! {
    /// Each thread's scratch buffer, kept between ops (see `with_scratch`).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` numbers of this thread's scratch buffer, whose contents are left
/// over from earlier uses: for buffers that `f` writes in full before reading (an
/// image's column matrix). Allocating and zeroing a fresh one per image cost a U-Net
/// step a tenth of its time. A nested call on the same thread (rayon may run another
/// image's work while this one waits) gets a buffer of its own.
pub fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
    let mut buffer = SCRATCH.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    SCRATCH.set(buffer);
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_have_the_length_asked_and_hold_zeros() {
        for len in [0, 1, 1000, 1 << 20] {
            let buffer = super::zeroed(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn scratch_is_reused_and_nested_calls_get_their_own() {
        let first = super::with_scratch(100, |outer| {
            outer.fill(1.0);
            let inner = super::with_scratch(50, |inner| {
                inner.fill(2.0);
                inner.as_ptr()
            });
            assert!(
                outer.iter().all(|&v| v == 1.0),
                "the nested call wrote elsewhere"
            );
            assert_ne!(inner, outer.as_ptr());
            outer.as_ptr()
        });
        // The outer buffer went back last and is what the thread reuses.
        let again = super::with_scratch(80, |buffer| {
            assert!(buffer.iter().all(|&v| v == 1.0));
            buffer.as_ptr()
        });
        assert_eq!(first, again);
    }
}
