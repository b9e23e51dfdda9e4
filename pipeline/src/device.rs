//! Choosing the compute device at run time.
//!
//! The CUDA backend is compiled into every build, but using it on a machine without libcuda makes burn's
//! device-runner thread panic (reference §1). So `auto` first asks the dynamic loader whether libcuda can
//! be opened at all (no panic possible), and only then runs one tiny tensor on the device inside
//! `catch_unwind`. A machine without a GPU therefore trains on the CPU (burn's flex backend) without crashing.

use std::fmt;
use std::str::FromStr;

use voxplan_planner::cpu_host::{L2_ENV, THREADS_ENV};
use voxplan_planner::{CpuHost, DeviceProfile, DeviceSelector, device_profile_with_cpu};

use crate::error::PipelineError;

/// What the user asked for: `--device cpu|cuda:N|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA device 0 if it works, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PipelineError::Option {
            field: "--device".into(),
            problem: format!("{s:?}: expected `auto`, `cpu`, `cuda` or `cuda:N`"),
        };
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => {
                let index = other.strip_prefix("cuda:").ok_or_else(bad)?;
                index.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The device a run actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDevice {
    /// burn's flex backend on the CPU, threads from rayon's global pool (`RAYON_NUM_THREADS`).
    Cpu,
    /// burn's CUDA backend on device `index`.
    Cuda(usize),
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu (burn flex, {} threads)", rayon::current_num_threads()),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The CPU as this process computes on it: gemm's L2 share, and the threads of rayon's global pool that flex
/// runs every kernel on, as many as the pool really has (`RAYON_NUM_THREADS`, the core count, or a pool a
/// test built), so that the plan and the memory it is compared with count the same threads.
pub fn this_process_cpu() -> CpuHost {
    CpuHost { compute_threads: rayon::current_num_threads(), ..CpuHost::this_machine() }
}

/// The device profile a run (`train`, `predict`) plans with: a CPU as this process computes on it, never as
/// `VOXPLAN_CPU_L2` / `VOXPLAN_CPU_THREADS` state one for `voxplan plan`, since gemm and rayon size their
/// buffers from the machine and the trainer measures them; the log says so when a statement is set.
pub fn run_profile(selector: &DeviceSelector) -> Result<DeviceProfile, PipelineError> {
    let cpu = this_process_cpu();
    let profile = device_profile_with_cpu(selector, cpu)?;
    let stated: Vec<&str> = [L2_ENV, THREADS_ENV].into_iter().filter(|v| std::env::var_os(v).is_some()).collect();
    if *selector == DeviceSelector::Cpu && !stated.is_empty() {
        tracing::warn!(
            "{} state a CPU for `voxplan plan`; this run plans for the CPU it runs on: {}",
            stated.join(" and "),
            cpu.describe()
        );
    }
    Ok(profile)
}

/// Resolves a request to a working device. `auto` never fails; an explicit `cuda:N` that does not work is
/// an error saying why (no libcuda, or the device would not run a tensor).
pub fn resolve(request: DeviceRequest) -> Result<ComputeDevice, PipelineError> {
    match request {
        DeviceRequest::Cpu => Ok(ComputeDevice::Cpu),
        DeviceRequest::Cuda(index) => probe_cuda(index)
            .map(|()| ComputeDevice::Cuda(index))
            .map_err(|problem| PipelineError::Device { requested: request.to_string(), problem }),
        DeviceRequest::Auto => match probe_cuda(0) {
            Ok(()) => Ok(ComputeDevice::Cuda(0)),
            Err(why) => {
                tracing::info!("no usable CUDA device ({why}); using the CPU");
                Ok(ComputeDevice::Cpu)
            }
        },
    }
}

/// Whether the CUDA driver library can be loaded. Asking the dynamic loader cannot panic, unlike asking
/// burn (whose runner thread panics when the library is missing).
pub fn libcuda_present() -> bool {
    /// `RTLD_NOW`: resolve every symbol now, so a broken install is seen here and not mid-training.
    const RTLD_NOW: std::ffi::c_int = 2;
    unsafe extern "C" {
        fn dlopen(filename: *const std::ffi::c_char, flags: std::ffi::c_int) -> *mut std::ffi::c_void;
        fn dlclose(handle: *mut std::ffi::c_void) -> std::ffi::c_int;
    }
    [c"libcuda.so.1", c"libcuda.so"].iter().any(|name| {
        // SAFETY: `name` is a valid NUL-terminated string; the handle is closed before returning.
        let handle = unsafe { dlopen(name.as_ptr(), RTLD_NOW) };
        if handle.is_null() {
            false
        } else {
            // SAFETY: `handle` came from a successful dlopen and is closed exactly once.
            unsafe { dlclose(handle) };
            true
        }
    })
}

/// Checks that CUDA device `index` runs a tensor: `Err` says why not.
#[cfg(feature = "cuda")]
pub fn probe_cuda(index: usize) -> Result<(), String> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::Tensor;

    if !libcuda_present() {
        return Err("libcuda.so could not be loaded (no NVIDIA driver on this machine)".into());
    }
    let device = CudaDevice::new(index);
    // burn reports a failing device by panicking in its runner thread and again in the caller; silence the
    // default hook for the probe so the user sees one clear line instead of two backtraces.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| Tensor::<Cuda, 1>::zeros([1], &device).into_data());
    std::panic::set_hook(previous_hook);
    match outcome {
        Ok(_) => Ok(()),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("CUDA device {index} failed to run a tensor: {message}"))
        }
    }
}

/// Without the `cuda` feature every CUDA request fails with the reason.
#[cfg(not(feature = "cuda"))]
pub fn probe_cuda(_index: usize) -> Result<(), String> {
    Err("this build of voxplan has no CUDA support (built without the `cuda` feature)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_garbage() {
        assert_eq!("auto".parse::<DeviceRequest>().unwrap(), DeviceRequest::Auto);
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!("cuda".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(3));
        let e = "gpu".parse::<DeviceRequest>().unwrap_err().to_string();
        assert!(e.contains("gpu") && e.contains("cuda:N"), "{e}");
        assert!("cuda:x".parse::<DeviceRequest>().is_err());
    }

    #[test]
    fn auto_always_resolves_and_cpu_is_cpu() {
        assert_eq!(resolve(DeviceRequest::Cpu).unwrap(), ComputeDevice::Cpu);
        let d = resolve(DeviceRequest::Auto).unwrap();
        // Whatever the machine, auto agrees with the loader probe: no libcuda means the CPU.
        if !libcuda_present() {
            assert_eq!(d, ComputeDevice::Cpu);
        }
    }

    #[test]
    fn explicit_cuda_without_a_driver_is_an_error_not_a_crash() {
        if libcuda_present() {
            return; // a GPU machine: covered by scripts/gpu-check.sh
        }
        let e = resolve(DeviceRequest::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("cuda:0") && e.contains("libcuda"), "{e}");
    }
}
