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

/// What the user asked for with `--devices`: the devices of one data-parallel run in this process, one
/// training thread each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicesRequest {
    /// `cpu:N`: N peers on the CPU, each with its own replica, sharing the CPU's threads: no faster than
    /// one, but the same code path as several GPUs, so it can be tested anywhere.
    CpuPeers(usize),
    /// `cuda:0,cuda:1,…`
    Cuda(Vec<usize>),
    /// `all`: every CUDA device of the machine.
    AllCuda,
}

impl FromStr for DevicesRequest {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| PipelineError::Option {
            field: "--devices".into(),
            problem: format!("{s:?}: {why}; expected `all`, `cuda:0,cuda:1,…` or `cpu:N`"),
        };
        let s = s.trim();
        if s == "all" {
            return Ok(Self::AllCuda);
        }
        if let Some(n) = s.strip_prefix("cpu:") {
            let n: usize = n.parse().map_err(|_| bad("N is not a number"))?;
            return if n == 0 { Err(bad("at least one peer")) } else { Ok(Self::CpuPeers(n)) };
        }
        let mut indices = Vec::new();
        for part in s.split(',') {
            match part.trim().parse::<DeviceRequest>() {
                Ok(DeviceRequest::Cuda(i)) if !indices.contains(&i) => indices.push(i),
                Ok(DeviceRequest::Cuda(i)) => return Err(bad(&format!("cuda:{i} is named twice"))),
                _ => return Err(bad(&format!("{:?} is not a CUDA device", part.trim()))),
            }
        }
        Ok(Self::Cuda(indices))
    }
}

/// Resolves `--devices` to working devices: every CUDA device named must run a tensor.
pub fn resolve_devices(request: &DevicesRequest) -> Result<Vec<ComputeDevice>, PipelineError> {
    let indices = match request {
        DevicesRequest::CpuPeers(n) => return Ok(vec![ComputeDevice::Cpu; *n]),
        DevicesRequest::Cuda(indices) => indices.clone(),
        DevicesRequest::AllCuda => (0..cuda_device_count()
            .map_err(|problem| PipelineError::Device { requested: "all".into(), problem })?)
            .collect(),
    };
    indices.into_iter().map(|i| resolve(DeviceRequest::Cuda(i))).collect()
}

/// CUDA devices the driver sees.
#[cfg(feature = "cuda")]
fn cuda_device_count() -> Result<usize, String> {
    if !libcuda_present() {
        return Err("libcuda.so could not be loaded (no NVIDIA driver on this machine)".into());
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err("the driver sees no CUDA device".into()),
        Err(e) => Err(format!("the driver cannot count its devices: {e:?}")),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device_count() -> Result<usize, String> {
    Err("this build of voxplan has no CUDA support (built without the `cuda` feature)".into())
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
    fn several_devices_parse_and_bad_lists_are_refused() {
        assert_eq!("cpu:2".parse::<DevicesRequest>().unwrap(), DevicesRequest::CpuPeers(2));
        assert_eq!("all".parse::<DevicesRequest>().unwrap(), DevicesRequest::AllCuda);
        assert_eq!("cuda:0, cuda:2".parse::<DevicesRequest>().unwrap(), DevicesRequest::Cuda(vec![0, 2]));
        for bad in ["cpu:0", "cpu:x", "cuda:0,cuda:0", "cuda:0,cpu", "gpu"] {
            let e = bad.parse::<DevicesRequest>().unwrap_err().to_string();
            assert!(e.contains("--devices") && e.contains(bad.split(',').next().unwrap_or(bad)), "{bad}: {e}");
        }
        assert_eq!(resolve_devices(&DevicesRequest::CpuPeers(3)).unwrap(), vec![ComputeDevice::Cpu; 3]);
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
