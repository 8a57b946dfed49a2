//! Which device stages compute on: the CPU everywhere, a CUDA GPU when runner was
//! built with the `cuda` feature. The device is not part of a stage's key (a model is
//! the same experiment wherever it trained); each manifest records where it ran.

use candle_core::Device;
use clap::ValueEnum;

/// The `--device` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum DeviceChoice {
    /// The first CUDA GPU if this build has CUDA and one is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The first CUDA GPU; an error if there is none or this build lacks CUDA.
    Cuda,
}

/// Opens the chosen device, or says why it cannot.
pub fn open(choice: DeviceChoice) -> Result<Device, String> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if !cfg!(feature = "cuda") => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::new_cuda(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Cuda if !cfg!(feature = "cuda") => Err(
            "--device cuda: this runner was built without CUDA; build it with `--features cuda` (README.md, \"GPU\") or use --device cpu"
                .into(),
        ),
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| {
            format!(
                "--device cuda: no usable CUDA GPU ({e}); check `nvidia-smi` and that the CUDA 13 libraries are on the library path, or use --device cpu"
            )
        }),
    }
}

/// How a manifest names a device.
pub fn name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal:0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_opens_and_auto_falls_back_to_it() {
        assert!(matches!(open(DeviceChoice::Cpu), Ok(Device::Cpu)));
        let auto = open(DeviceChoice::Auto).unwrap();
        if !cfg!(feature = "cuda") {
            assert!(matches!(auto, Device::Cpu));
        }
        assert_eq!(name(&Device::Cpu), "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = open(DeviceChoice::Cuda).unwrap_err();
        assert!(
            err.contains("--features cuda") && err.contains("--device cpu"),
            "{err}"
        );
    }
}
