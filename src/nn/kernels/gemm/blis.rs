//! The f32 matrix product in the BLIS layout, shared by this crate's micro-kernels (one
//! per instruction set): the inputs are copied ("packed") into panels the micro-kernel
//! reads sequentially, and an MR x NR block of the output stays in vector registers
//! across a whole depth block. Only the micro-kernel and its block sizes differ between
//! instruction sets; packing, blocking, reading operands in place and the epilogue are
//! written once, here.

use std::cell::RefCell;

use super::operands::{Activation, Epilogue, Sigmoids, View};

/// The most rows any micro-kernel holds (AVX-512's 14).
pub const MAX_MR: usize = 14;

/// A right-hand side this small (32 KiB) stays in L1 read in place.
const L1_FLOATS: usize = 8192;

/// One micro-kernel: `c[i, j] (+)= sum_p A[i, p] B[p, j]` on an MR x NR block.
pub trait MicroKernel {
    /// Rows of the output block held in registers (at most `MAX_MR`).
    const MR: usize;
    /// Columns of that block.
    const NR: usize;
    /// Depth of one packed block: an A panel (MR x KC) and a B panel (KC x NR) fit in L1.
    const KC: usize;
    /// Rows of A packed at once (MC x KC stays in L2); a multiple of MR.
    const MC: usize;
    /// Whether this kernel runs here (the CPU has its instructions and no narrower
    /// level is forced).
    fn available() -> bool;
    /// The block function for A read from `SOURCE` (a `Source` as a number: 0 packed,
    /// 1 rows, 2 columns) and B read in place (`DIRECT_B`: B(p, j) is
    /// `b[p * b_stride + j]`, only the valid columns read) or from a packed panel
    /// (`b[p * NR + j]`).
    fn block<const SOURCE: u8, const DIRECT_B: bool>() -> BlockFn;
}

/// A micro-kernel's block: `(kc, a, b, b_stride, c, ldc, rows, cols, store)`, computing
/// the `rows` x `cols` block at `c` (row stride `ldc`) over depth `kc`.
///
/// # Safety
/// The kernel's instructions must be available; A and B must be readable as the
/// `Operand` and `DIRECT_B` say for rows < `rows`, columns < `cols` and depth < `kc`
/// (packed panels in full), and the block at `c` writable.
pub type BlockFn =
    unsafe fn(usize, &Operand, *const f32, usize, *mut f32, usize, usize, usize, Store);

/// What a product reuses from one call to the next on a thread, so that it allocates
/// nothing.
struct Buffers {
    /// Packed panels of A (MC x KC) and of B (KC x n).
    packed_a: Vec<f32>,
    packed_b: Vec<f32>,
    /// Per MR-row panel of the current MC block: where the micro-kernel reads it and
    /// the block function for that. They depend on neither the column panel nor the
    /// data, so they are found once per block rather than once per MR x NR block.
    panels: Vec<(Operand, BlockFn)>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = const {
        RefCell::new(Buffers {
            packed_a: Vec::new(),
            packed_b: Vec::new(),
            panels: Vec::new(),
        })
    };
}

/// How the micro-kernel reads its MR rows of A.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// A packed panel: A(i, p) is `a[p * MR + i]`.
    Packed,
    /// In place, rows contiguous: A(i, p) is `rows[i][p]`.
    Rows,
    /// In place, a gathered column per depth step: A(i, p) is `base[offsets[p] + i]`
    /// (a convolution's image read as its transposed column matrix).
    Columns,
}

/// Where the micro-kernel finds A; which fields it reads depends on the `Source`.
pub struct Operand {
    pub packed: *const f32,
    pub rows: [*const f32; MAX_MR],
    pub base: *const f32,
    pub offsets: *const usize,
}

impl Operand {
    /// Column `p` of A's MR rows in the block, read from wherever `SOURCE` says A lies
    /// (the one place every micro-kernel reads A from).
    ///
    /// # Safety
    /// Depth `p` lies in the block, and A's MR rows are readable there: the packed
    /// panel, the row starts, or the gathered column at `offsets[p]`.
    #[inline(always)]
    pub unsafe fn column<const SOURCE: u8, const MR: usize>(&self, p: usize) -> [f32; MR] {
        unsafe {
            match SOURCE {
                0 => self.packed.add(p * MR).cast::<[f32; MR]>().read_unaligned(),
                1 => std::array::from_fn(|i| *self.rows[i].add(p)),
                _ => self
                    .base
                    .add(*self.offsets.add(p))
                    .cast::<[f32; MR]>()
                    .read_unaligned(),
            }
        }
    }
}

/// How the micro-kernel stores its block: `c = silu?(sum + c? + bias?)`.
#[derive(Clone, Copy)]
pub struct Store {
    /// Add to what `c` holds.
    pub accumulate: bool,
    /// The bias of the block's first column (its `cols` numbers are read), or null.
    pub bias: *const f32,
    /// Apply SiLU last.
    pub silu: bool,
    /// With `silu`: where sigmoid(v) of each pre-activation goes, laid out as `c`
    /// (row stride `ldc`), or null. Then `c = v * sigmoid(v)` exactly, as
    /// `vmath::silu_keeping_sigmoid` computes it.
    pub sigmoid: *mut f32,
}

/// Runs kernel `K` on `threads` disjoint blocks of the output: bands of rows when there
/// are enough of them, else bands of columns.
///
/// # Safety
/// `K::available()` must hold; `out` holds `lhs.rows` x `rhs.cols` numbers and the views
/// are in bounds (checked by the caller).
pub unsafe fn split<K: MicroKernel>(
    out: &mut [f32],
    lhs: View,
    rhs: View,
    accumulate: bool,
    epilogue: Epilogue,
    threads: usize,
) {
    use rayon::prelude::*;
    debug_assert!(K::available(), "a micro-kernel the CPU cannot run");
    let (m, n) = (lhs.rows, rhs.cols);
    let threads = threads.max(1);
    /// The output pointer, shared by threads that write disjoint blocks of it.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: each thread writes only its own band (see below).
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}
    let out_ptr = Out(out.as_mut_ptr());
    if threads == 1 || m * n < 1 << 12 {
        // SAFETY: `out` holds m x n numbers and the views were checked in bounds.
        unsafe { matmul::<K>(out_ptr.0, n, lhs, rhs, accumulate, epilogue) };
    } else if m >= threads * 2 * K::MR || m >= n {
        let band = m.div_ceil(threads).next_multiple_of(K::MR);
        out[..m * n]
            .par_chunks_mut(band * n)
            .enumerate()
            .for_each(|(t, block)| {
                let lhs = lhs.row_range(t * band, block.len() / n);
                let epilogue = epilogue.rows_from(t * band, n);
                // SAFETY: `block` is this band's rows x n numbers.
                unsafe { matmul::<K>(block.as_mut_ptr(), n, lhs, rhs, accumulate, epilogue) };
            });
    } else {
        let band = n.div_ceil(threads).next_multiple_of(K::NR);
        (0..n.div_ceil(band)).into_par_iter().for_each(|t| {
            let j0 = t * band;
            let rhs = rhs.col_range(j0, band.min(n - j0));
            let (out, epilogue) = (out_ptr, epilogue.columns_from(j0));
            // SAFETY: columns j0..j0 + band of every row belong to this thread alone,
            // and lie inside the m x n output.
            unsafe { matmul::<K>(out.0.add(j0), n, lhs, rhs, accumulate, epilogue) };
        });
    }
}

/// `out = lhs · rhs` (or `+=` when `accumulate`), then the epilogue's bias and
/// activation, on one thread; `out` is `lhs.rows` x `rhs.cols` with row stride `ldc`.
///
/// # Safety
/// `K::available()` must hold; `out` must be valid for writes at `i * ldc + j` for every
/// output element, and the views must be in bounds (checked by the caller).
unsafe fn matmul<K: MicroKernel>(
    out: *mut f32,
    ldc: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    epilogue: Epilogue,
) {
    let (mr, nr) = (K::MR, K::NR);
    debug_assert!(mr <= MAX_MR && K::MC % mr == 0);
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // Row-major A is read in place, and so is a gathered transposed one. Row-major B
    // is too when few row panels share each of its panels, or when all of it fits in
    // L1 (a Winograd position's [cin, cout]): packing it would cost more than it saves.
    let source = if lhs.col_stride == 1 && lhs.col_offsets.is_none() {
        Source::Rows
    } else if lhs.row_stride == 1 && lhs.row_offsets.is_none() && lhs.col_offsets.is_some() {
        Source::Columns
    } else {
        Source::Packed
    };
    let direct_b = rhs.col_stride == 1
        && rhs.row_offsets.is_none()
        && rhs.col_offsets.is_none()
        && (m <= K::MC || k * n <= L1_FLOATS);
    BUFFERS.with(|buffers| {
        let Buffers {
            packed_a,
            packed_b,
            panels,
        } = &mut *buffers.borrow_mut();
        // Depth blocks of equal size: a short last block (k = 288 as 256 + 32) would
        // load and store the output once more for little work.
        let depth = k.div_ceil(k.div_ceil(K::KC));
        for pc in (0..k).step_by(depth) {
            let kc = depth.min(k - pc);
            // Later depth blocks add to what the first one wrote; the bias enters
            // with the first, the activation with the last.
            let add = accumulate || pc > 0;
            let bias = epilogue.bias.filter(|_| pc == 0);
            let silu = epilogue.activation == Activation::Silu && pc + kc == k;
            if !direct_b {
                pack_b::<K>(packed_b, rhs, pc, kc);
            }
            for ic in (0..m).step_by(K::MC) {
                let mc = K::MC.min(m - ic);
                if source == Source::Packed {
                    pack_a::<K>(packed_a, lhs, ic, mc, pc, kc);
                }
                panels.clear();
                for ip in 0..mc.div_ceil(mr) {
                    panels.push(panel::<K>(
                        packed_a,
                        lhs,
                        source,
                        direct_b,
                        (ic, mc, ip),
                        pc,
                        kc,
                    ));
                }
                for jp in 0..n.div_ceil(nr) {
                    let cols = nr.min(n - jp * nr);
                    let (b, b_stride) = if direct_b {
                        (
                            rhs.data[rhs.row_offset(pc) + jp * nr..].as_ptr(),
                            rhs.row_stride,
                        )
                    } else {
                        (packed_b[jp * kc * nr..].as_ptr(), nr)
                    };
                    let bias = bias.map_or(std::ptr::null(), |b| b[jp * nr..].as_ptr());
                    for (ip, (a, kernel)) in panels.iter().enumerate() {
                        let rows = mr.min(mc - ip * mr);
                        let i0 = ic + ip * mr;
                        let sigmoid = match epilogue.sigmoids {
                            Some(Sigmoids(s)) if silu => s.wrapping_add(i0 * ldc + jp * nr),
                            _ => std::ptr::null_mut(),
                        };
                        let store = Store {
                            accumulate: add,
                            bias,
                            silu,
                            sigmoid,
                        };
                        // SAFETY: A and B are the caller's in-bounds views or the packed
                        // panels (kc x MR and kc x NR numbers), read only at the valid
                        // rows and columns; the rows x cols block at (i0, jp NR) lies
                        // inside `out` (the caller's contract).
                        unsafe {
                            let c = out.add(i0 * ldc + jp * nr);
                            kernel(kc, a, b, b_stride, c, ldc, rows, cols, store);
                        }
                    }
                }
            }
        }
    })
}

/// Where the micro-kernel reads panel `ip` (MR rows, fewer at the end) of the MC block
/// of `mc` rows from `ic`, at depth `pc..pc + kc`, and the block function that reads
/// them so; `packed_a` holds the block packed when `source` is `Packed`.
fn panel<K: MicroKernel>(
    packed_a: &mut Vec<f32>,
    lhs: View,
    source: Source,
    direct_b: bool,
    (ic, mc, ip): (usize, usize, usize),
    pc: usize,
    kc: usize,
) -> (Operand, BlockFn) {
    let mr = K::MR;
    let (i0, rows) = (ic + ip * mr, mr.min(mc - ip * mr));
    let mut a = Operand {
        packed: std::ptr::null(),
        rows: [std::ptr::null(); MAX_MR],
        base: std::ptr::null(),
        offsets: std::ptr::null(),
    };
    let source = match source {
        Source::Packed => {
            a.packed = packed_a[ip * kc * mr..].as_ptr();
            Source::Packed
        }
        Source::Rows => {
            // Rows past `rows` re-read the last valid one (their sums are never
            // stored).
            a.rows = std::array::from_fn(|i| {
                let row = lhs.row_offset(i0 + i.min(rows - 1));
                lhs.data[row + pc..].as_ptr()
            });
            Source::Rows
        }
        Source::Columns if rows == mr => {
            let offsets = lhs.col_offsets.expect("a gathered view");
            a.base = lhs.data[i0..].as_ptr();
            a.offsets = offsets[pc..].as_ptr();
            Source::Columns
        }
        Source::Columns => {
            // The last, partial panel: reading MR numbers per column could pass the
            // end of the data. A is otherwise read in place, so the buffer is free.
            pack_a::<K>(packed_a, lhs, i0, rows, pc, kc);
            a.packed = packed_a.as_ptr();
            Source::Packed
        }
    };
    let kernel = match (source, direct_b) {
        (Source::Packed, false) => K::block::<0, false>(),
        (Source::Packed, true) => K::block::<0, true>(),
        (Source::Rows, false) => K::block::<1, false>(),
        (Source::Rows, true) => K::block::<1, true>(),
        (Source::Columns, false) => K::block::<2, false>(),
        (Source::Columns, true) => K::block::<2, true>(),
    };
    (a, kernel)
}

/// Copies rows `pc..pc + kc` of `rhs` into panels of `K::NR` columns, each kc x NR and
/// row-major, zero-padded past the last column. Every number of the panels is
/// written, so the buffer is not cleared first. A full row of a panel is a copy of a
/// length known when `K` is: a call to `memcpy` for every 16 numbers was most of the
/// packing's time.
fn pack_b<K: MicroKernel>(buffer: &mut Vec<f32>, rhs: View, pc: usize, kc: usize) {
    let nr = K::NR;
    let n_panels = rhs.cols.div_ceil(nr);
    let len = n_panels * kc * nr;
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let contiguous = rhs.col_stride == 1 && rhs.col_offsets.is_none();
    for (jp, panel) in buffer[..len].chunks_exact_mut(kc * nr).enumerate() {
        let j0 = jp * nr;
        let cols = nr.min(rhs.cols - j0);
        for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
            if contiguous {
                let start = rhs.row_offset(pc + p) + j0;
                if cols == nr {
                    row.copy_from_slice(&rhs.data[start..start + nr]);
                } else {
                    row[..cols].copy_from_slice(&rhs.data[start..start + cols]);
                }
            } else {
                for (j, v) in row[..cols].iter_mut().enumerate() {
                    *v = rhs.at(pc + p, j0 + j);
                }
            }
            if cols < nr {
                row[cols..].fill(0.0);
            }
        }
    }
}

/// Copies the block rows `ic..ic + mc`, columns `pc..pc + kc` of `lhs` into panels of
/// `K::MR` rows, each stored column by column (kc x MR), zero-padded past the last
/// row. Every number of the panels is written, so the buffer is not cleared first;
/// full columns of a transposed matrix are copies of a length known when `K` is (as
/// in `pack_b`).
fn pack_a<K: MicroKernel>(
    buffer: &mut Vec<f32>,
    lhs: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
) {
    let mr = K::MR;
    let m_panels = mc.div_ceil(mr);
    let len = m_panels * kc * mr;
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let transposed = lhs.row_stride == 1 && lhs.row_offsets.is_none();
    for (ip, panel) in buffer[..len].chunks_exact_mut(kc * mr).enumerate() {
        let i0 = ic + ip * mr;
        let rows = mr.min(ic + mc - i0);
        for (p, column) in panel.chunks_exact_mut(mr).enumerate() {
            if transposed {
                // Each column of the panel is contiguous.
                let start = i0 + lhs.col_offset(pc + p);
                if rows == mr {
                    column.copy_from_slice(&lhs.data[start..start + mr]);
                } else {
                    column[..rows].copy_from_slice(&lhs.data[start..start + rows]);
                }
            } else {
                for (r, v) in column[..rows].iter_mut().enumerate() {
                    *v = lhs.at(i0 + r, pc + p);
                }
            }
            if rows < mr {
                column[rows..].fill(0.0);
            }
        }
    }
}
