//! Transposing blocks of f32 matrices between channel-major images [channels, pixels]
//! and the pixel-major [pixels, channels] layout of an implicit convolution's product.
//! Done a number at a time, each move is a load and a store at a stride; with AVX-512
//! a block of 16 x 16 (with AVX2, of 8 x 8) is loaded row by row and exchanged in
//! registers. A block's lines may also be the pixels of an image whose rows lie
//! apart (`Lines::image`), so a whole padded image is one call, and the vector blocks
//! run full down its pixels instead of being cut at each row's end.

/// Where the lines of a block start in their slice (the rows of the source block,
/// or the rows of the result): `stride` apart, and when they are the pixels of an
/// image `width` pixels wide whose rows are `row_stride` apart, a new row after
/// every `width` lines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lines {
    stride: usize,
    width: usize,
    row_stride: usize,
}

impl Lines {
    /// Lines evenly `stride` apart.
    pub fn every(stride: usize) -> Lines {
        Lines {
            stride,
            width: usize::MAX,
            row_stride: 0,
        }
    }

    /// The pixels of an image `width` pixels wide, pixel by pixel: `stride` apart
    /// within a row, rows `row_stride` apart (a padded image's rows, or an output's
    /// rows of whole tiles). Panics if a row would reach into the next: the starts
    /// must grow with the line, for `transpose`'s bounds check to cover them all.
    pub fn image(stride: usize, width: usize, row_stride: usize) -> Lines {
        assert!(
            row_stride >= width * stride,
            "transpose: rows of {width} pixels {stride} apart do not fit {row_stride} apart"
        );
        Lines {
            stride,
            width: width.max(1),
            row_stride,
        }
    }

    /// Where line `k` starts.
    fn start(&self, k: usize) -> usize {
        (k / self.width) * self.row_stride + (k % self.width) * self.stride
    }

    /// The starts of lines `first`, `first + 1`, ... one at a time, with one
    /// division for the first.
    fn from(self, first: usize) -> impl Iterator<Item = usize> {
        let mut row_start = (first / self.width) * self.row_stride;
        let mut column = first % self.width;
        std::iter::from_fn(move || {
            if column == self.width {
                row_start += self.row_stride;
                column = 0;
            }
            column += 1;
            Some(row_start + (column - 1) * self.stride)
        })
    }
}

impl From<usize> for Lines {
    fn from(stride: usize) -> Lines {
        Lines::every(stride)
    }
}

/// `dst[d(j) + i] = src[s(i) + j] (+ add[j])` for `i < rows`, `j < cols`, where s and
/// d are the starts of the lines (`Lines`; a number is a plain stride): the `rows` x
/// `cols` block of `src` written transposed into `dst`, with `add[j]` (when given)
/// added to every number of line `j` of the result.
///
/// Panics if either block reaches past the end of its slice.
#[allow(clippy::too_many_arguments)]
pub fn transpose(
    src: &[f32],
    src_lines: impl Into<Lines>,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_lines: impl Into<Lines>,
    add: Option<&[f32]>,
) {
    let (src_lines, dst_lines) = (src_lines.into(), dst_lines.into());
    if rows == 0 || cols == 0 {
        return;
    }
    // The starts grow with the line, so the last lines reach furthest.
    assert!(
        src_lines.start(rows - 1) + cols <= src.len()
            && dst_lines.start(cols - 1) + rows <= dst.len()
            && add.is_none_or(|add| add.len() >= cols),
        "transpose: a block reaches past its slice"
    );
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512() {
        // SAFETY: the CPU has AVX-512F and the blocks are in bounds (asserted).
        unsafe { avx512(src, src_lines, rows, cols, dst, dst_lines, add) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx2() {
        // SAFETY: the CPU has AVX2 and the blocks are in bounds (asserted).
        unsafe { avx2(src, src_lines, rows, cols, dst, dst_lines, add) };
        return;
    }
    portable(src, src_lines, rows, cols, dst, dst_lines, add)
}

fn portable(
    src: &[f32],
    src_lines: Lines,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_lines: Lines,
    add: Option<&[f32]>,
) {
    for (j, start) in dst_lines.from(0).take(cols).enumerate() {
        let shift = add.map_or(0.0, |add| add[j]);
        let line = &mut dst[start..][..rows];
        for (v, from) in line.iter_mut().zip(src_lines.from(0)) {
            *v = src[from + j] + shift;
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
    src_lines: Lines,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_lines: Lines,
    add: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    let mask = |count: usize| ((1u32 << count.min(16)) - 1) as __mmask16;
    for i0 in (0..rows).step_by(16) {
        let valid_rows = (rows - i0).min(16);
        let mut starts = [0usize; 16];
        starts
            .iter_mut()
            .zip(src_lines.from(i0))
            .for_each(|(s, at)| *s = at);
        for j0 in (0..cols).step_by(16) {
            let valid_cols = (cols - j0).min(16);
            let mut r = [_mm512_setzero_ps(); 16];
            for (row, start) in r.iter_mut().zip(starts).take(valid_rows) {
                // SAFETY: row i0 + k of the block, columns j0 .. j0 + valid_cols.
                *row = unsafe {
                    _mm512_maskz_loadu_ps(mask(valid_cols), src.as_ptr().add(start + j0))
                };
            }
            let columns = transpose16(r);
            let each = columns.iter().zip(dst_lines.from(j0)).enumerate();
            for (c, (column, start)) in each.take(valid_cols) {
                let shift = _mm512_set1_ps(add.map_or(0.0, |add| add[j0 + c]));
                // SAFETY: numbers i0 .. i0 + valid rows of line j0 + c of the result.
                unsafe {
                    _mm512_mask_storeu_ps(
                        dst.as_mut_ptr().add(start + i0),
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
    src_lines: Lines,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_lines: Lines,
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
        let mut starts = [0usize; 8];
        starts
            .iter_mut()
            .zip(src_lines.from(i0))
            .for_each(|(s, at)| *s = at);
        for j0 in (0..cols).step_by(8) {
            let valid_cols = (cols - j0).min(8);
            let col_mask = mask(valid_cols);
            let mut r = [_mm256_setzero_ps(); 8];
            for (row, start) in r.iter_mut().zip(starts).take(valid_rows) {
                let from = src.as_ptr().wrapping_add(start + j0);
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
            let each = columns.iter().zip(dst_lines.from(j0)).enumerate();
            for (c, (column, start)) in each.take(valid_cols) {
                let shift = _mm256_set1_ps(add.map_or(0.0, |add| add[j0 + c]));
                let value = _mm256_add_ps(*column, shift);
                let to = dst.as_mut_ptr().wrapping_add(start + i0);
                // SAFETY: numbers i0 .. i0 + valid rows of line j0 + c of the result.
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
    /// untouched; lines evenly apart, and lines that are the pixels of an image with
    /// gaps between its rows, on either side.
    #[test]
    fn blocks_are_transposed_with_their_rows_shifts_and_nothing_else_is_written() {
        let plain = |stride| Lines::every(stride);
        let cases = [
            (1, 1, plain(1), plain(1)),
            (5, 3, plain(7), plain(9)),
            (16, 16, plain(16), plain(16)),
            (8, 8, plain(8), plain(8)),
            (9, 7, plain(11), plain(13)),
            (37, 20, plain(21), plain(40)),
            (784, 32, plain(32), plain(800)),
            // A 5 x 7 image of 20 channels, pixel-major into rows 9 pixels apart...
            (20, 35, plain(35), Lines::image(20, 7, 9 * 20)),
            // ... and back, with 16 x 3 and 3 x 16 images whose rows end mid-block.
            (35, 20, Lines::image(20, 7, 9 * 20), plain(37)),
            (48, 17, Lines::image(17, 16, 18 * 17), plain(50)),
            (17, 48, plain(48), Lines::image(17, 3, 5 * 17)),
        ];
        for (rows, cols, src_lines, dst_lines) in cases {
            let src_len = src_lines.start(rows - 1) + cols + 3;
            let dst_len = dst_lines.start(cols - 1) + rows + 3;
            let src: Vec<f32> = (0..src_len).map(|v| v as f32 * 0.5).collect();
            let add: Vec<f32> = (0..cols).map(|j| 1000.0 * j as f32).collect();
            for shift in [None, Some(&add[..])] {
                let mut want = vec![-1.0; dst_len];
                for j in 0..cols {
                    for i in 0..rows {
                        want[dst_lines.start(j) + i] =
                            src[src_lines.start(i) + j] + shift.map_or(0.0, |a| a[j]);
                    }
                }
                let case = format!("{rows}x{cols}, {src_lines:?} to {dst_lines:?}");
                for level in crate::nn::kernels::cpu::levels() {
                    let mut ours = vec![-1.0; dst_len];
                    crate::nn::kernels::cpu::with_level(level, || {
                        transpose(&src, src_lines, rows, cols, &mut ours, dst_lines, shift)
                    });
                    assert_eq!(ours, want, "{case}, {level:?}");
                }
                let mut portable_result = vec![-1.0; dst_len];
                let out = &mut portable_result;
                portable(&src, src_lines, rows, cols, out, dst_lines, shift);
                assert_eq!(portable_result, want, "{case}, portable");
            }
        }
    }

    /// The line starts one at a time agree with the closed form from any first line.
    #[test]
    fn line_starts_step_across_rows() {
        for lines in [
            Lines::every(3),
            Lines::image(4, 5, 31),
            Lines::image(2, 1, 7),
        ] {
            for first in [0, 1, 4, 5, 6, 13] {
                let stepped: Vec<usize> = lines.from(first).take(12).collect();
                let closed: Vec<usize> = (first..first + 12).map(|k| lines.start(k)).collect();
                assert_eq!(stepped, closed, "{lines:?} from {first}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn image_rows_that_overlap_are_refused() {
        Lines::image(4, 5, 19);
    }

    #[test]
    #[should_panic(expected = "past its slice")]
    fn a_block_past_its_slice_is_refused() {
        let mut dst = vec![0.0; 10];
        transpose(&[0.0; 12], 4, 3, 4, &mut dst, 3, None);
    }
}
