//! Several tensors as one flat tensor, for the fused ops that take all their layers'
//! parameters as one input: `Tensor::cat`'s backward pass hands each variable its part
//! of the op's gradient, and the op splits the flat numbers back by the same sizes.

use candle_core::{Result, Tensor};

/// The tensors flattened and concatenated, in the order given.
pub fn pack<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<Tensor> {
    let flat: Vec<Tensor> = tensors
        .into_iter()
        .map(Tensor::flatten_all)
        .collect::<Result<_>>()?;
    Tensor::cat(&flat, 0)
}

/// `packed` cut into consecutive parts of `sizes`; an error naming `op` when the
/// lengths disagree (a packing and a split that went out of step).
pub fn unpack<'a>(packed: &'a [f32], sizes: &[usize], op: &str) -> Result<Vec<&'a [f32]>> {
    if packed.len() != sizes.iter().sum::<usize>() {
        candle_core::bail!(
            "{op}: {} packed numbers, expected parts of {sizes:?}",
            packed.len()
        )
    }
    let mut parts = Vec::with_capacity(sizes.len());
    let mut rest = packed;
    for &size in sizes {
        let (part, tail) = rest.split_at(size);
        parts.push(part);
        rest = tail;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unpacking_returns_the_packed_tensors() {
        let a = crate::nn::kernels::random_tensor(&[2, 3], 1, "a");
        let b = crate::nn::kernels::random_tensor(&[4], 2, "b");
        let packed = super::pack([&a, &b]).unwrap().to_vec1::<f32>().unwrap();
        let parts = super::unpack(&packed, &[6, 4], "test").unwrap();
        assert_eq!(parts[0], a.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(parts[1], b.to_vec1::<f32>().unwrap());
        let err = super::unpack(&packed, &[6, 3], "test").unwrap_err();
        assert!(err.to_string().contains("10 packed numbers"), "{err}");
    }
}
