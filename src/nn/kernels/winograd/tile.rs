//! What one tile transform is, shared by the scalar driver (winograd.rs) and the
//! vector forms (vector.rs): where a tile's numbers lie and the type of a transform.

/// How far apart, in numbers, a tile's rows and columns of pixels and the 16
/// positions of its transform lie.
#[derive(Clone, Copy)]
pub struct Strides {
    pub row: usize,
    pub col: usize,
    pub position: usize,
}

/// One tile's transform on up to a vector of channels: (source, destination, strides,
/// channels).
pub type TileFn = unsafe fn(*const f32, *mut f32, Strides, usize);

/// The vector forms of the three transforms for one instruction set (AVX-512 takes 16
/// channels at a time, AVX2 8).
#[derive(Clone, Copy)]
pub struct VectorTiles {
    pub input: TileFn,
    pub grad: TileFn,
    pub output: TileFn,
    /// Channels per call (a call takes up to this many).
    pub width: usize,
}
