//! The process's allocator. mimalloc reuses freed memory: with the system allocator,
//! every large tensor a training step frees went back to the kernel and came back as
//! fresh, zeroed pages, which cost more than the arithmetic of a small network.

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e` (mimalloc.h, v3),
/// which the sys crate does not name.
const PURGE_DELAY: mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel. By default it does so
/// a second after a free, and a U-Net training step, which frees and allocates tens of
/// megabytes per layer, then spent a tenth of its time in the kernel zeroing the pages
/// it got back. The process's peak memory is unchanged: freed memory is reused.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is a plain store in mimalloc, valid at any time.
    unsafe { mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is the purge delay's: it holds that option's default (1000 ms in
    /// mimalloc v3's options.c), and the setting reads back.
    #[test]
    fn the_option_set_is_the_purge_delay() {
        let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
        assert_eq!(get(PURGE_DELAY), 1000);
        keep_freed_memory();
        assert_eq!(get(PURGE_DELAY), -1);
    }
}
