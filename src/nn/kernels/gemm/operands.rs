//! The operands of a product: strided or gathered views of slices, and what a layer
//! applies to the product before anything reads it.

/// A read-only matrix over a slice: element (i, j) is `data[row(i) + col(j)]`, where
/// `row(i)` is `i * row_stride` or, for a gathered view, `row_offsets[i]` (and the same
/// for columns). Gathered views let a convolution multiply its image as if it were the
/// column matrix, without writing that matrix out (see `conv`).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub row_offsets: Option<&'a [usize]>,
    pub col_offsets: Option<&'a [usize]>,
}

impl<'a> View<'a> {
    /// A row-major `rows` x `cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
            row_offsets: None,
            col_offsets: None,
        }
    }

    /// A matrix whose row `i` is the `cols` numbers from `data[offsets[i]]` on.
    pub fn gathered(data: &'a [f32], offsets: &'a [usize], cols: usize) -> View<'a> {
        View {
            rows: offsets.len(),
            row_offsets: Some(offsets),
            ..View::rows(data, 0, cols)
        }
    }

    /// The same numbers read as the transpose.
    pub fn t(self) -> View<'a> {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            row_offsets: self.col_offsets,
            col_offsets: self.row_offsets,
            ..self
        }
    }

    /// Where row `i` starts in `data`.
    #[inline(always)]
    pub fn row_offset(&self, i: usize) -> usize {
        match self.row_offsets {
            Some(offsets) => offsets[i],
            None => i * self.row_stride,
        }
    }

    /// How far column `j` lies from the start of a row.
    #[inline(always)]
    pub fn col_offset(&self, j: usize) -> usize {
        match self.col_offsets {
            Some(offsets) => offsets[j],
            None => j * self.col_stride,
        }
    }

    /// Element (i, j).
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.row_offset(i) + self.col_offset(j)]
    }

    /// Rows `first..first + count`.
    pub fn row_range(self, first: usize, count: usize) -> View<'a> {
        match self.row_offsets {
            Some(offsets) => View {
                rows: count,
                row_offsets: Some(&offsets[first..first + count]),
                ..self
            },
            None => View {
                data: &self.data[first * self.row_stride..],
                rows: count,
                ..self
            },
        }
    }

    /// Columns `first..first + count`.
    pub fn col_range(self, first: usize, count: usize) -> View<'a> {
        self.t().row_range(first, count).t()
    }

    /// Whether every element lies inside `data` (what makes the product safe).
    pub(super) fn in_bounds(&self) -> bool {
        // The largest offset along one dimension of `n` (at least 1) elements.
        fn last(offsets: Option<&[usize]>, n: usize, stride: usize) -> Option<usize> {
            match offsets {
                Some(offsets) => (offsets.len() == n).then(|| offsets.iter().copied().max())?,
                None => (n - 1).checked_mul(stride),
            }
        }
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let row = last(self.row_offsets, self.rows, self.row_stride);
        let col = last(self.col_offsets, self.cols, self.col_stride);
        row.zip(col)
            .and_then(|(r, c)| r.checked_add(c))
            .is_some_and(|end| end < self.data.len())
    }

    /// The matrix as a row-major copy, for code that only takes strided matrices.
    pub(super) fn dense(&self) -> Vec<f32> {
        (0..self.rows)
            .flat_map(|i| (0..self.cols).map(move |j| self.at(i, j)))
            .collect()
    }
}

/// What a layer applies to its product before anything reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    /// x · sigmoid(x), as `vmath::silu`.
    Silu,
}

/// Where a SiLU layer's product also stores sigmoid(v) of each pre-activation v, laid
/// out as its output is: what the backward pass through SiLU needs, written while the
/// block is in registers instead of in another pass over the output.
#[derive(Clone, Copy)]
pub(super) struct Sigmoids(pub(super) *mut f32);

// SAFETY: threads write disjoint blocks through it, as they do to the output (see
// `blis::split`).
unsafe impl Send for Sigmoids {}
unsafe impl Sync for Sigmoids {}

/// The bias and activation a product applies to its output (see `matmul_bias`).
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a> {
    pub(super) bias: Option<&'a [f32]>,
    pub(super) activation: Activation,
    /// With `Activation::Silu`: where the sigmoids go as well.
    pub(super) sigmoids: Option<Sigmoids>,
}

impl<'a> Epilogue<'a> {
    pub(super) const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        activation: Activation::Identity,
        sigmoids: None,
    };

    /// The epilogue of the output columns from `first` on.
    pub(super) fn columns_from(self, first: usize) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.map(|b| &b[first..]),
            sigmoids: self.sigmoids.map(|s| Sigmoids(s.0.wrapping_add(first))),
            ..self
        }
    }

    /// The epilogue of the output rows from `first` on, rows `n` wide.
    pub(super) fn rows_from(self, first: usize, n: usize) -> Epilogue<'a> {
        Epilogue {
            sigmoids: self.sigmoids.map(|s| Sigmoids(s.0.wrapping_add(first * n))),
            ..self
        }
    }

    /// Applies the epilogue to `out`, rows `n` wide, in a separate pass, for the code
    /// paths that cannot do it while storing.
    ///
    /// # Safety
    /// `out` is the whole output (not a band of it): the sigmoids, when there are, hold
    /// as many numbers.
    pub(super) unsafe fn apply(self, out: &mut [f32], n: usize) {
        if let Some(bias) = self.bias {
            for row in out.chunks_exact_mut(n) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        if self.activation == Activation::Silu {
            match self.sigmoids {
                Some(Sigmoids(sigmoids)) => {
                    // SAFETY: the caller's contract.
                    let sigmoids = unsafe { std::slice::from_raw_parts_mut(sigmoids, out.len()) };
                    crate::nn::kernels::vmath::silu_keeping_sigmoid(out, sigmoids);
                }
                None => crate::nn::kernels::vmath::silu_in_place(out),
            }
        }
    }
}
