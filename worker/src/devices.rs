//! What compute the worker offers: CUDA devices found through cudarc (loaded dynamically, so this
//! builds and runs where no CUDA exists), or the CPU backend under a documented name.
//!
//! * A CUDA device named `NVIDIA H100 80GB HBM3` is offered as GPU `H100` with instance types
//!   `NCP.GPU.H100_1x` … `NCP.GPU.H100_<n>x` for the `n` devices of that model on the host.
//! * With no device (or `device = "cpu"`), the worker offers GPU [`CPU_GPU_NAME`] with instance type
//!   [`CPU_INSTANCE_TYPE`], so the whole flow works on any machine.

#![allow(unsafe_code)] // cudarc's driver calls and library probe are `unsafe fn`s

use model::worker::{GpuOffer, InstanceTypeOffer};
use std::collections::BTreeMap;

/// GPU name offered by the CPU backend.
pub const CPU_GPU_NAME: &str = "CPU";
/// Instance type offered by the CPU backend.
pub const CPU_INSTANCE_TYPE: &str = "NCP.CPU_1x";

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDevice {
    pub ordinal: i32,
    pub name: String,
    pub memory_bytes: u64,
}

/// Why the devices could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no CUDA driver is installed (libcuda.so not found)")]
    NoDriver,
    #[error("CUDA driver error: {0}")]
    Driver(String),
}

/// Lists CUDA devices. Guarded: cudarc panics instead of failing when the library is missing, so
/// the library is probed first.
pub fn cuda_devices() -> Result<Vec<CudaDevice>, DeviceError> {
    use cudarc::driver::result;
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(DeviceError::NoDriver);
    }
    result::init().map_err(|e| DeviceError::Driver(e.to_string()))?;
    let count = result::device::get_count().map_err(|e| DeviceError::Driver(e.to_string()))?;
    let mut out = Vec::new();
    for ordinal in 0..count {
        let dev = result::device::get(ordinal).map_err(|e| DeviceError::Driver(e.to_string()))?;
        let name = result::device::get_name(dev).map_err(|e| DeviceError::Driver(e.to_string()))?;
        // SAFETY: `dev` came from `device::get`.
        let memory = unsafe { result::device::total_mem(dev) }
            .map_err(|e| DeviceError::Driver(e.to_string()))?;
        out.push(CudaDevice {
            ordinal,
            name,
            memory_bytes: memory as u64,
        });
    }
    Ok(out)
}

/// The short GPU name deployments use: `NVIDIA H100 80GB HBM3` → `H100`, `NVIDIA A10G` → `A10G`,
/// `NVIDIA GeForce RTX 4090` → `RTX_4090`.
pub fn short_gpu_name(driver_name: &str) -> String {
    let words: Vec<&str> = driver_name
        .split_whitespace()
        .filter(|w| {
            !matches!(
                w.to_ascii_uppercase().as_str(),
                "NVIDIA" | "GEFORCE" | "TESLA" | "QUADRO"
            )
        })
        .collect();
    let Some(first) = words.first() else {
        return "GPU".into();
    };
    // Model names like "RTX 4090" or "RTX A6000" span two words; memory/variant suffixes follow.
    let name = if matches!(first.to_ascii_uppercase().as_str(), "RTX" | "GTX") && words.len() > 1 {
        format!("{}_{}", first, words[1])
    } else {
        (*first).to_owned()
    };
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_ascii_uppercase()
}

/// What the worker registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub gpus: Vec<GpuOffer>,
    pub instance_types: Vec<InstanceTypeOffer>,
    /// True when the offer is the CPU backend.
    pub cpu: bool,
}

/// The offer for a set of CUDA devices (grouped by model).
pub fn cuda_offer(devices: &[CudaDevice]) -> Offer {
    let mut models: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for d in devices {
        let e = models
            .entry(short_gpu_name(&d.name))
            .or_insert((d.memory_bytes, 0));
        e.0 = e.0.min(d.memory_bytes);
        e.1 += 1;
    }
    let mut gpus = Vec::new();
    let mut instance_types = Vec::new();
    for (name, (memory_bytes, count)) in models {
        for n in 1..=count {
            instance_types.push(InstanceTypeOffer {
                name: format!("NCP.GPU.{name}_{n}x"),
                gpu: name.clone(),
                gpu_count: n,
                description: format!("{n}x {name} ({} GiB each)", memory_bytes >> 30),
            });
        }
        gpus.push(GpuOffer {
            name,
            memory_bytes,
            count,
        });
    }
    Offer {
        gpus,
        instance_types,
        cpu: false,
    }
}

/// The CPU backend's offer (memory = the host's total memory).
pub fn cpu_offer() -> Offer {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    Offer {
        gpus: vec![GpuOffer {
            name: CPU_GPU_NAME.into(),
            memory_bytes,
            count: 1,
        }],
        instance_types: vec![InstanceTypeOffer {
            name: CPU_INSTANCE_TYPE.into(),
            gpu: CPU_GPU_NAME.into(),
            gpu_count: 1,
            description: "CPU backend (no CUDA device): built-in kernels run on the host".into(),
        }],
        cpu: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_names_are_short() {
        assert_eq!(short_gpu_name("NVIDIA H100 80GB HBM3"), "H100");
        assert_eq!(short_gpu_name("NVIDIA H200"), "H200");
        assert_eq!(short_gpu_name("NVIDIA A10G"), "A10G");
        assert_eq!(short_gpu_name("NVIDIA GeForce RTX 4090"), "RTX_4090");
        assert_eq!(short_gpu_name("Tesla T4"), "T4");
        assert_eq!(short_gpu_name(""), "GPU");
    }

    #[test]
    fn cuda_offer_groups_models() {
        let d = |o, n: &str| CudaDevice {
            ordinal: o,
            name: n.into(),
            memory_bytes: 80 << 30,
        };
        let offer = cuda_offer(&[d(0, "NVIDIA H100 80GB HBM3"), d(1, "NVIDIA H100 80GB HBM3")]);
        assert_eq!(offer.gpus.len(), 1);
        assert_eq!(offer.gpus[0].count, 2);
        let names: Vec<&str> = offer
            .instance_types
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["NCP.GPU.H100_1x", "NCP.GPU.H100_2x"]);
    }

    #[test]
    fn probing_never_panics() {
        // Without a driver this is a clean error; on a GPU host it lists real devices.
        match cuda_devices() {
            Ok(devices) => assert!(devices.iter().all(|d| !d.name.is_empty())),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let cpu = cpu_offer();
        assert!(cpu.cpu && cpu.gpus[0].name == CPU_GPU_NAME);
    }
}
