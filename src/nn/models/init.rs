//! Seeded initialisation of a network's variables. candle's own initialisers draw from
//! an RNG that cannot be seeded on the CPU, so weights are redrawn from the project's
//! stream: one seed, the same network on every machine.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand_chacha::ChaCha8Rng;

use crate::rng::uniforms;

/// Builds a network on a fresh VarMap, then redraws every variable from `rng`.
pub fn seeded_varmap<T>(
    device: &Device,
    rng: &mut ChaCha8Rng,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<(T, VarMap)> {
    let map = VarMap::new();
    let net = build(VarBuilder::from_varmap(&map, DType::F32, device))?;
    reinitialize(&map, rng)?;
    Ok((net, map))
}

/// PyTorch's defaults, in name order: normalisation scales 1 and shifts 0; weights and
/// biases uniform in +-1/sqrt(fan_in), fan_in being the weight's size per output.
pub fn reinitialize(map: &VarMap, rng: &mut ChaCha8Rng) -> Result<()> {
    let data = map.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let (layer, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let is_norm = layer
            .rsplit('.')
            .next()
            .is_some_and(|l| l.starts_with("norm"));
        let values = if is_norm {
            vec![if leaf == "weight" { 1.0 } else { 0.0 }; var.elem_count()]
        } else {
            let fan_in = match (leaf, data.get(&format!("{layer}.weight"))) {
                ("bias", Some(w)) => w.dims()[1..].iter().product::<usize>(),
                _ => dims[1..].iter().product::<usize>(),
            };
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            uniforms(rng, var.elem_count(), -bound, bound)
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

/// The variables of a map in name order, for optimisers and checkpoints.
pub fn named_vars(map: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = map.data().lock().expect("varmap lock");
    let mut vars: Vec<(String, candle_core::Var)> =
        data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn same_seed_same_weights_and_pytorch_bounds() {
        let build = |vb: VarBuilder| -> Result<()> {
            candle_nn::linear(100, 3, vb.pp("fc"))?;
            candle_nn::group_norm(2, 4, 1e-6, vb.pp("norm1"))?;
            Ok(())
        };
        let (_, a) = seeded_varmap(&Device::Cpu, &mut stream(5, "t"), build).unwrap();
        let (_, b) = seeded_varmap(&Device::Cpu, &mut stream(5, "t"), build).unwrap();
        let get = |m: &VarMap, n: &str| {
            m.data().lock().unwrap()[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(get(&a, "fc.weight"), get(&b, "fc.weight"));
        assert!(get(&a, "fc.weight").iter().all(|w| w.abs() <= 0.1));
        assert!(get(&a, "fc.bias").iter().all(|w| w.abs() <= 0.1));
        assert!(get(&a, "fc.bias").iter().any(|w| *w != 0.0));
        assert_eq!(get(&a, "norm1.weight"), vec![1.0; 4]);
        assert_eq!(get(&a, "norm1.bias"), vec![0.0; 4]);
    }
}
