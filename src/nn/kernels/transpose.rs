//! Transposing blocks of f32 matrices between channel-major images [channels, pixels]
//! and the pixel-major [pixels, channels] layout of an implicit convolution's product.
//! Done a number at a time, each move is a load and a store at a stride; with AVX-512
//! a block of 16 x 16 (with AVX2, of 8 x 8) is loaded row by row and exchanged in
//! registers.

/// `dst[j * dst_stride + i] = src[i * src_stride + j] (+ add[j])` for `i < rows`,
/// `j < cols`: the `rows` x `cols` block of `src` written transposed into `dst`, with
/// `add[j]` (when given) added to every number of row `j` of the result.
///
/// Panics if either block reaches past the end of its slice.
#[allow(clippy::too_many_arguments)]
pub fn transpose(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
    add: Option<&[f32]>,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * src_stride + cols <= src.len()
            && (cols - 1) * dst_stride + rows <= dst.len()
            && add.is_none_or(|add| add.len() >= cols),
        "transpose: a block reaches past its slice"
    );
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512() {
        // SAFETY: the CPU has AVX-512F and the blocks are in bounds (asserted).
        unsafe { avx512(src, src_stride, rows, cols, dst, dst_stride, add) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx2() {
        // SAFETY: the CPU has AVX2 and the blocks are in bounds (asserted).
        unsafe { avx2(src, src_stride, rows, cols, dst, dst_stride, add) };
        return;
    }
    portable(src, src_stride, rows, cols, dst, dst_stride, add)
}

fn portable(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
    add: Option<&[f32]>,
) {
    for j in 0..cols {
        let shift = add.map_or(0.0, |add| add[j]);
        let line = &mut dst[j * dst_stride..][..rows];
        for (i, v) in line.iter_mut().enumerate() {
            *v = src[i * src_stride + j] + shift;
        }
    }
}

/// `transpose` by blocks of 16 x 16: sixteen rows of a block are loaded (masked at
/// the block's right edge), exchanged in registers in four rounds of shuffles, and
/// stored as sixteen rows of the result (masked at its bottom edge). With one
/// gather per column instead, transposes took 9.7% of a U-Net training step's
/// samples; with the blocks, 6.1%.
///
/// # Safety
/// The CPU must have AVX-512F; the blocks must lie inside the slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
    add: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    let mask = |count: usize| ((1u32 << count.min(16)) - 1) as __mmask16;
    for i0 in (0..rows).step_by(16) {
        let valid_rows = rows - i0;
        for j0 in (0..cols).step_by(16) {
            let valid_cols = (cols - j0).min(16);
            let mut r = [_mm512_setzero_ps(); 16];
            for (k, row) in r.iter_mut().enumerate().take(valid_rows) {
                // SAFETY: row i0 + k of the block, columns j0 .. j0 + valid_cols.
                *row = unsafe {
                    _mm512_maskz_loadu_ps(
                        mask(valid_cols),
                        src.as_ptr().add((i0 + k) * src_stride + j0),
                    )
                };
            }
            let columns = transpose16(r);
            for (c, column) in columns.iter().enumerate().take(valid_cols) {
                let shift = _mm512_set1_ps(add.map_or(0.0, |add| add[j0 + c]));
                // SAFETY: numbers i0 .. i0 + valid rows of row j0 + c of the result.
                unsafe {
                    _mm512_mask_storeu_ps(
                        dst.as_mut_ptr().add((j0 + c) * dst_stride + i0),
                        mask(valid_rows),
                        _mm512_add_ps(*column, shift),
                    )
                }
            }
        }
    }
}

/// Sixteen vectors of sixteen (the rows of a 16 x 16 block) as the block's columns:
/// pairs of rows are interleaved, then pairs of pairs, then quarters of vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // u[4g + s] holds, per 128-bit quarter q, rows 4g..4g+3 of column 4q + s.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let low01 = _mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]);
        let high01 = _mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]);
        let low23 = _mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]);
        let high23 = _mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(low01, low23);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(low01, low23);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(high01, high23);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(high01, high23);
    }
    let mut columns = [_mm512_setzero_ps(); 16];
    for s in 0..4 {
        // Quarters (0, 2) and (1, 3) of rows 0-7, then of rows 8-15.
        let even_top = _mm512_shuffle_f32x4::<0x88>(u[s], u[4 + s]);
        let odd_top = _mm512_shuffle_f32x4::<0xDD>(u[s], u[4 + s]);
        let even_bottom = _mm512_shuffle_f32x4::<0x88>(u[8 + s], u[12 + s]);
        let odd_bottom = _mm512_shuffle_f32x4::<0xDD>(u[8 + s], u[12 + s]);
        columns[s] = _mm512_shuffle_f32x4::<0x88>(even_top, even_bottom);
        columns[8 + s] = _mm512_shuffle_f32x4::<0xDD>(even_top, even_bottom);
        columns[4 + s] = _mm512_shuffle_f32x4::<0x88>(odd_top, odd_bottom);
        columns[12 + s] = _mm512_shuffle_f32x4::<0xDD>(odd_top, odd_bottom);
    }
    columns
}

/// `transpose` by blocks of 8 x 8 for CPUs with AVX2 but not AVX-512: as `avx512`,
/// with masked loads and stores only at a block's right and bottom edges.
///
/// # Safety
/// The CPU must have AVX2; the blocks must lie inside the slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
    add: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    // Lane l is on when l < count.
    let mask = |count: usize| {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(count.min(8) as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    };
    for i0 in (0..rows).step_by(8) {
        let valid_rows = (rows - i0).min(8);
        let row_mask = mask(valid_rows);
        for j0 in (0..cols).step_by(8) {
            let valid_cols = (cols - j0).min(8);
            let col_mask = mask(valid_cols);
            let mut r = [_mm256_setzero_ps(); 8];
            for (k, row) in r.iter_mut().enumerate().take(valid_rows) {
                let from = src.as_ptr().wrapping_add((i0 + k) * src_stride + j0);
                // SAFETY: row i0 + k of the block, columns j0 .. j0 + valid_cols.
                *row = unsafe {
                    if valid_cols == 8 {
                        _mm256_loadu_ps(from)
                    } else {
                        _mm256_maskload_ps(from, col_mask)
                    }
                };
            }
            let columns = transpose8(r);
            for (c, column) in columns.iter().enumerate().take(valid_cols) {
                let shift = _mm256_set1_ps(add.map_or(0.0, |add| add[j0 + c]));
                let value = _mm256_add_ps(*column, shift);
                let to = dst.as_mut_ptr().wrapping_add((j0 + c) * dst_stride + i0);
                // SAFETY: numbers i0 .. i0 + valid rows of row j0 + c of the result.
                unsafe {
                    if valid_rows == 8 {
                        _mm256_storeu_ps(to, value)
                    } else {
                        _mm256_maskstore_ps(to, row_mask, value)
                    }
                }
            }
        }
    }
}

/// Eight vectors of eight (the rows of an 8 x 8 block) as the block's columns: pairs
/// of rows are interleaved, then pairs of pairs, then the 128-bit halves exchanged.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    // s[4h + c] holds, per half q, rows 4h..4h+3 of column 4q + c.
    let mut s = [_mm256_setzero_ps(); 8];
    for h in 0..2 {
        let low01 = _mm256_unpacklo_ps(r[4 * h], r[4 * h + 1]);
        let high01 = _mm256_unpackhi_ps(r[4 * h], r[4 * h + 1]);
        let low23 = _mm256_unpacklo_ps(r[4 * h + 2], r[4 * h + 3]);
        let high23 = _mm256_unpackhi_ps(r[4 * h + 2], r[4 * h + 3]);
        s[4 * h] = _mm256_shuffle_ps::<0x44>(low01, low23);
        s[4 * h + 1] = _mm256_shuffle_ps::<0xEE>(low01, low23);
        s[4 * h + 2] = _mm256_shuffle_ps::<0x44>(high01, high23);
        s[4 * h + 3] = _mm256_shuffle_ps::<0xEE>(high01, high23);
    }
    let mut columns = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        columns[c] = _mm256_permute2f128_ps::<0x20>(s[c], s[4 + c]);
        columns[4 + c] = _mm256_permute2f128_ps::<0x31>(s[c], s[4 + c]);
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path the CPU has against the definition, on blocks with partial eights
    /// and sixteens, inside larger strided matrices whose other numbers must stay
    /// untouched.
    #[test]
    fn blocks_are_transposed_with_their_rows_shifts_and_nothing_else_is_written() {
        for &(rows, cols, src_stride, dst_stride) in &[
            (1, 1, 1, 1),
            (5, 3, 7, 9),
            (16, 16, 16, 16),
            (8, 8, 8, 8),
            (9, 7, 11, 13),
            (37, 20, 21, 40),
            (784, 32, 32, 800),
        ] {
            let src: Vec<f32> = (0..rows * src_stride).map(|v| v as f32 * 0.5).collect();
            let add: Vec<f32> = (0..cols).map(|j| 1000.0 * j as f32).collect();
            for shift in [None, Some(&add[..])] {
                let mut want = vec![-1.0; cols * dst_stride];
                for j in 0..cols {
                    for i in 0..rows {
                        want[j * dst_stride + i] =
                            src[i * src_stride + j] + shift.map_or(0.0, |a| a[j]);
                    }
                }
                for level in crate::nn::kernels::cpu::levels() {
                    let mut ours = vec![-1.0; cols * dst_stride];
                    crate::nn::kernels::cpu::with_level(level, || {
                        transpose(&src, src_stride, rows, cols, &mut ours, dst_stride, shift)
                    });
                    assert_eq!(ours, want, "{rows}x{cols}, {level:?}");
                }
                let mut plain = vec![-1.0; cols * dst_stride];
                portable(&src, src_stride, rows, cols, &mut plain, dst_stride, shift);
                assert_eq!(plain, want, "{rows}x{cols}, portable");
            }
        }
    }

    #[test]
    #[should_panic(expected = "past its slice")]
    fn a_block_past_its_slice_is_refused() {
        let mut dst = vec![0.0; 10];
        transpose(&[0.0; 12], 4, 3, 4, &mut dst, 3, None);
    }
}
