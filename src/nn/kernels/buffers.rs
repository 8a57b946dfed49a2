//! Output buffers for the CPU kernels.

use rayon::prelude::*;

/// The f32 numbers of a contiguous CPU tensor, as a custom op's `cpu_fwd` receives it
/// (every CPU kernel of this crate makes its inputs contiguous before the op).
pub fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 tensors are supported on the CPU")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the tensor must be contiguous"),
    }
}

/// `contiguous_f32`, writable: for ops that update a tensor in place.
pub fn contiguous_f32_mut<'a>(
    storage: &'a mut candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 tensors are supported on the CPU")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => candle_core::bail!("{op}: the tensor must be contiguous"),
    }
}

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

/// An output buffer handed out to rayon's threads in chunks, each zeroed by the thread
/// that takes it, just before that thread writes it: the chunk's first touch brings
/// it into that core's cache, where the kernel's writes then land, whereas `zeroed`
/// clears the whole buffer first and the kernel finds it evicted again.
pub struct Output {
    buffer: Vec<f32>,
    len: usize,
    /// Numbers zeroed so far: `into_vec` checks that every chunk was handed out.
    cleared: std::sync::atomic::AtomicUsize,
}

impl Output {
    /// `len` numbers, with room for `capacity` (at least `len`) in the final vector.
    pub fn with_capacity(len: usize, capacity: usize) -> Output {
        Output::in_buffer(Vec::new(), len, capacity)
    }

    /// `with_capacity`, in `buffer`'s memory (its contents are dropped), grown only if
    /// its capacity is short.
    pub fn in_buffer(mut buffer: Vec<f32>, len: usize, capacity: usize) -> Output {
        buffer.clear();
        buffer.reserve(capacity.max(len));
        Output {
            buffer,
            len,
            cleared: Default::default(),
        }
    }

    /// `len` numbers.
    pub fn new(len: usize) -> Output {
        Output::with_capacity(len, len)
    }

    /// The buffer in chunks of `chunk` numbers (the last may be shorter), each zeroed
    /// when a thread takes it.
    pub fn par_chunks_mut(
        &mut self,
        chunk: usize,
    ) -> impl IndexedParallelIterator<Item = &mut [f32]> + '_ {
        let cleared = &self.cleared;
        self.buffer.spare_capacity_mut()[..self.len]
            .par_chunks_mut(chunk)
            .map(move |part| {
                part.fill(std::mem::MaybeUninit::new(0.0));
                cleared.fetch_add(part.len(), std::sync::atomic::Ordering::Relaxed);
                // SAFETY: every number of `part` was just initialised, and
                // `MaybeUninit<f32>` has the layout of `f32`.
                unsafe { &mut *(part as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
            })
    }

    /// The numbers written. Panics unless every chunk was handed out (a consumer that
    /// stops early, e.g. a `zip` with a shorter iterator, leaves numbers unwritten).
    pub fn into_vec(mut self) -> Vec<f32> {
        let cleared = self.cleared.into_inner();
        assert_eq!(
            cleared, self.len,
            "an output buffer was not written in full"
        );
        // SAFETY: the chunks partition the first `len` numbers, each chunk is handed
        // out once, and all of them were initialised (counted above).
        unsafe { self.buffer.set_len(self.len) };
        self.buffer
    }
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

/// Buffers given back with `recycle`, for `recycled` to hand out again. One pool for
/// the process: a buffer is often freed on another thread than the one that wants it
/// next (the fused MLP's activations are dropped with the autograd graph on the main
/// thread and wanted again by rayon's).
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// Buffers the pool keeps at most; more are freed.
const POOL_SIZE: usize = 64;

/// `len` numbers left over from an earlier use (any values), for a buffer that its
/// user overwrites in full before reading: the fused MLP's activations, which a
/// training step allocated zeroed and then overwrote, layer after layer, step after
/// step. A buffer shorter than `len` is extended with zeros.
pub fn recycled(len: usize) -> Vec<f32> {
    let mut buffer = {
        let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The smallest that is long enough, else the longest.
        let fits = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity());
        let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
    };
    if buffer.capacity() < len {
        // Grown anyway: its old numbers need not be copied along.
        buffer.clear();
    }
    buffer.truncate(len);
    buffer.resize(len, 0.0);
    buffer
}

/// Gives `buffer` to the pool for `recycled`.
pub fn recycle(buffer: Vec<f32>) {
    if buffer.capacity() == 0 {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if pool.len() < POOL_SIZE {
        pool.push(buffer)
    }
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
    fn output_chunks_arrive_zeroed_and_make_the_whole_vector() {
        use rayon::prelude::*;
        for (len, chunk) in [(0, 4), (10, 3), (100_000, 4096)] {
            let mut output = super::Output::with_capacity(len, len + 7);
            output
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, part)| {
                    assert!(part.iter().all(|&v| v == 0.0));
                    part.iter_mut().for_each(|v| *v = i as f32);
                });
            let vector = output.into_vec();
            assert_eq!(vector.len(), len);
            assert!(vector.capacity() >= len + 7);
            assert!(
                vector
                    .iter()
                    .enumerate()
                    .all(|(j, &v)| v == (j / chunk) as f32)
            );
        }
    }

    #[test]
    #[should_panic(expected = "not written in full")]
    fn an_output_left_partly_unwritten_is_refused() {
        use rayon::prelude::*;
        let mut output = super::Output::new(100);
        output
            .par_chunks_mut(10)
            .zip((0..5).into_par_iter())
            .for_each(|(part, _)| part.fill(1.0));
        output.into_vec();
    }

    /// The pool is the process's, shared with tests running alongside: a buffer of an
    /// unusual size is what this one gives back and asks for.
    #[test]
    fn recycled_buffers_have_the_length_asked_and_reuse_memory() {
        let len = 123_457;
        let mut first = super::recycled(len);
        assert_eq!(first.len(), len);
        first.fill(3.0);
        super::recycle(first);
        let again = super::recycled(len - 7);
        assert_eq!(again.len(), len - 7);
        assert!(
            again.capacity() >= len && again.iter().all(|&v| v == 3.0),
            "the buffer given back is the one handed out again, its numbers kept"
        );
        let mut grown = again;
        grown.truncate(10);
        super::recycle(grown);
        let longer = super::recycled(len);
        assert_eq!(longer.len(), len);
        assert!(
            longer[10..].iter().all(|&v| v == 0.0),
            "a grown buffer's tail is zeroed"
        );
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
