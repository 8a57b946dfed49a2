//! Output buffers for the CPU kernels.

use rayon::prelude::*;

/// `len` zeros, written by rayon's threads. The allocator hands back reused memory,
/// which must be cleared: as one `memset` on the thread that runs the op, clearing
/// an activation-sized buffer kept every other thread waiting.
pub fn zeroed(len: usize) -> Vec<f32> {
    let mut buffer = Vec::with_capacity(len);
    buffer.par_extend(rayon::iter::repeat_n(0f32, len));
    buffer
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
}
