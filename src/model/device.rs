//! Choosing the compute device: `auto`, `cpu`, `cuda[:N]`, `metal`.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use super::error::{ModelError, Result};

/// A device as the user names it, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA if compiled in and present, else Metal if compiled in and present, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "metal" => Ok(DeviceChoice::Metal),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(DeviceChoice::Cuda)
                    .map_err(|_| format!("`{s}`: the CUDA ordinal must be a number, as in cuda:0")),
                None => Err(format!(
                    "unknown device `{s}` (expected auto, cpu, cuda, cuda:N or metal)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal => write!(f, "metal"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device, or says why it cannot.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => {
                if cfg!(feature = "cuda")
                    && candle_core::utils::cuda_is_available()
                    && let Ok(d) = Device::new_cuda(0)
                {
                    return Ok(d);
                }
                if cfg!(feature = "metal")
                    && candle_core::utils::metal_is_available()
                    && let Ok(d) = Device::new_metal(0)
                {
                    return Ok(d);
                }
                Ok(Device::Cpu)
            }
            DeviceChoice::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(ModelError::Device(format!(
                        "cuda:{n} was asked for, but this build has no CUDA support \
                         (rebuild with `cargo build --release --features cuda`, or use --device cpu)"
                    )));
                }
                Device::new_cuda(n).map_err(|e| {
                    ModelError::Device(format!("cuda:{n} is not available on this machine: {e}"))
                })
            }
            DeviceChoice::Metal => {
                if !cfg!(feature = "metal") {
                    return Err(ModelError::Device(
                        "metal was asked for, but this build has no Metal support \
                         (rebuild with `cargo build --release --features metal`, or use --device cpu)"
                            .into(),
                    ));
                }
                Device::new_metal(0).map_err(|e| {
                    ModelError::Device(format!("metal is not available on this machine: {e}"))
                })
            }
        }
    }
}

/// A short human name for an opened device, for status lines and logs.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".to_string(),
        },
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:2".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(2)));
        assert_eq!("metal".parse::<DeviceChoice>(), Ok(DeviceChoice::Metal));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!(
            "tpu"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("unknown device")
        );
    }

    #[test]
    fn auto_and_cpu_always_open() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        DeviceChoice::Auto.open().unwrap();
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("no CUDA support"), "{err}");
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_without_the_feature_is_a_clear_error() {
        let err = DeviceChoice::Metal.open().unwrap_err().to_string();
        assert!(err.contains("no Metal support"), "{err}");
    }
}
