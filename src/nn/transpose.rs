//! Transposing blocks of f32 matrices between channel-major images [channels, pixels]
//! and the pixel-major [pixels, channels] layout of an implicit convolution's product.
//! Done a number at a time, each move is a load and a store at a stride; with AVX-512
//! one gather fetches sixteen numbers of a column at once.

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
    if is_x86_feature_detected!("avx512f") && src_stride * 15 <= i32::MAX as usize {
        // SAFETY: the CPU has AVX-512F, the blocks are in bounds (asserted) and the
        // gather's offsets fit in i32 (checked).
        unsafe { avx512(src, src_stride, rows, cols, dst, dst_stride, add) };
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

/// `transpose` with one gather per sixteen numbers of a column.
///
/// # Safety
/// The CPU must have AVX-512F; the blocks must lie inside the slices and
/// `15 * src_stride` must fit in an i32.
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
    let stride = src_stride as i32;
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(stride),
    );
    for j in 0..cols {
        let shift = _mm512_set1_ps(add.map_or(0.0, |add| add[j]));
        let line = dst[j * dst_stride..].as_mut_ptr();
        for i0 in (0..rows).step_by(16) {
            let valid = (rows - i0).min(16);
            let mask = ((1u32 << valid) - 1) as __mmask16;
            // SAFETY: lanes below `valid` read rows i0.. of column j and write
            // numbers i0.. of row j, all inside the blocks; masked-off lanes touch
            // nothing.
            unsafe {
                let base = src.as_ptr().add(i0 * src_stride + j);
                let column = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, lanes, base);
                _mm512_mask_storeu_ps(line.add(i0), mask, _mm512_add_ps(column, shift));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths against the definition, on blocks with partial sixteens, inside
    /// larger strided matrices whose other numbers must stay untouched.
    #[test]
    fn blocks_are_transposed_with_their_rows_shifts_and_nothing_else_is_written() {
        for &(rows, cols, src_stride, dst_stride) in &[
            (1, 1, 1, 1),
            (5, 3, 7, 9),
            (16, 16, 16, 16),
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
                let mut ours = vec![-1.0; cols * dst_stride];
                transpose(&src, src_stride, rows, cols, &mut ours, dst_stride, shift);
                assert_eq!(ours, want, "{rows}x{cols}");
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
