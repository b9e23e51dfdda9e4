//! Devices the planner plans for: this CPU (available RAM via sysinfo), a CUDA GPU (free memory via NVML,
//! which needs no CUDA context), or a named GPU from `configs/devices/gpus.toml`. Backend constants come
//! from `configs/devices/backends.toml`, embedded so the binary runs without files.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cpu_host::CpuHost;
use crate::error::PlanError;

const BACKENDS_TOML: &str = include_str!("../../configs/devices/backends.toml");
const GPUS_TOML: &str = include_str!("../../configs/devices/gpus.toml");

/// Which burn backend runs the step: decides workspace and allocator behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's flex CPU backend with the system allocator.
    Flex,
    /// burn's CUDA backend (cubecl memory pools).
    Cuda,
}

/// Constants of one backend's memory behaviour (see `configs/devices/backends.toml` for their origin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendModel {
    #[serde(default = "flex_kind")]
    pub kind: BackendKind,
    /// Multiplier on activation and gradient bytes (1.0 = the per-op rules as derived).
    pub activation_scale: f64,
    /// Factor on the conv backward's scratch as [`ConvWorkspace`] sizes it.
    pub conv_backward_workspace_factor: f64,
    /// The same for conv forward.
    pub conv_forward_workspace_factor: f64,
    /// What a 3D conv allocates besides its output.
    #[serde(default)]
    pub conv_workspace: ConvWorkspace,
    /// Bytes the process holds outside the step (CUDA context and autotune, or the CPU process baseline).
    /// Not a tensor: the counting allocator and cubecl's pools do not see it.
    pub fixed_overhead_bytes: u64,
    /// Bytes a step holds at its peak that no modelled tensor accounts for (autodiff graph bookkeeping,
    /// per-thread scratch): the intercept `voxplan calibrate` fits. Counted with the fixed overhead.
    #[serde(default)]
    pub step_overhead_bytes: u64,
    /// Scratch that each thread running the step's matrix multiplies keeps (flex: gemm's L2-sized packing
    /// slab). [`device_profile`] folds it into `step_overhead_bytes` for the machine at hand and sets this
    /// to `none`, so a plan (and a calibrated profile) carries one machine-specific figure.
    #[serde(default)]
    pub per_thread_scratch: PerThreadScratch,
    /// Whether half-precision convs are computed by converting to f32 and back (flex 0.21's
    /// `bf16_via_f32`): their workspace is then f32-sized and they hold f32 copies of input and output.
    #[serde(default)]
    pub half_conv_via_f32: bool,
    /// Every allocation is padded to a multiple of this.
    pub allocation_alignment: u64,
    /// Whether allocations come from cubecl's SubSlices page pools (reserved ≥ in use).
    pub pooled: bool,
    /// How the constants were obtained.
    pub source: String,
}

/// What each compute thread of a backend holds on top of the step's tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerThreadScratch {
    /// Nothing, or already counted in `step_overhead_bytes` (a folded or calibrated model).
    #[default]
    None,
    /// One L2-cache-sized buffer per rayon compute thread ([`crate::cpu_cache`]): with the tiled conv
    /// kernels every conv gemm runs on those threads.
    L2Cache,
}

/// The scratch a backend's 3D convs hold while they run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConvWorkspace {
    /// One im2col of `kernel taps × C_in × voxels` per sample (flex 0.21 as released).
    #[default]
    WholeSample,
    /// voxplan's tiled flex kernels (vendor/burn-flex/VOXPLAN-PATCH.md): each of `tiles_in_flight` threads
    /// gathers `[channels × taps, tile_voxels]` at a time, and a weight gradient keeps one `[C_out, C_in ×
    /// taps]` partial sum per thread. `tiles_in_flight` 0 means "this machine's compute threads":
    /// [`for_machine`] sets it.
    Tiled {
        tile_voxels: u64,
        #[serde(default)]
        tiles_in_flight: u64,
        /// The packed operand copy gemm allocates inside some of those multiplies; none when absent.
        #[serde(default)]
        packing: Option<GemmPacking>,
    },
}

/// When and how much gemm (gemm-common 0.19, `gemm_basic_generic`) allocates for one call beyond its
/// thread-local L2 slab. gemm turns a row-major destination into a column-major one by swapping the
/// operands, so every tiled conv multiply reaches it as `dst[m × n] = lhs[m × k] · rhs[k × n]` with
/// - forward, input gradient and transposed convs: `m` = the voxels of the tile, `n` = the output
///   channels, `k` = the gathered rows (channels × taps); `lhs` (the gather) has unit row stride;
/// - weight gradients: `m` = the gathered rows, `n` = the output channels, `k` = the voxels of the tile;
///   `lhs` (the gather) has row stride = tile voxels, unit column stride.
///
/// gemm then copies ("prepacks") the whole `lhs` into a buffer of `kc × m` rounded up to the micro-kernel
/// height, allocated for that call, when `m ≤ 2·mc` (`mc` ≤ 8 micro-kernel heights) and `lhs` has no unit
/// row stride or `m` is not a multiple of the SIMD width; it skips that when `m·n` is tiny and both
/// operands are contiguous along `k` (its horizontal kernels), or for `m`, `n` ≤ 1 or `k` ≤ 2 (gemv/gevv).
/// On x86-64 it packs the right operand only for `m` > 128 micro-kernel heights, which no tile reaches.
/// The figures are gemm's `fma` f32 kernels (what flex runs on x86-64 without the `x86-v4` feature, bf16
/// included since flex computes it in f32): traced allocation by allocation on the project's Intel Xeon for
/// 8–300 channels, 1³ and 3³ kernels, full and partial tiles (docs/planner-accuracy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmPacking {
    /// Micro-kernel height `MR` (f32 `fma`: 2 × 8 lanes = 16): the packed copy's `m` is rounded up to it.
    pub kernel_rows: u64,
    /// SIMD lanes `N` (8): an `lhs` with unit row stride and `m` a multiple of it is not prepacked.
    pub simd_lanes: u64,
    /// Largest `m` that is prepacked, `2 · mc` with `mc` capped at 8 · `MR` (256). Machines whose L2 gives
    /// a smaller `mc` prepack less: the model is then on the safe side.
    pub max_rows: u64,
    /// gemm's small-matrix path (`m` and `n` ≤ 64) blocks `k` by `min(k, small_depth)` (512).
    pub small_edge: u64,
    pub small_depth: u64,
    /// Depth block `kc` of gemm's `kernel_params` otherwise, `min(k, depth_block)`: 1024 from a 48 KiB
    /// 12-way L1 (a 32 KiB 8-way one gives 512, so 1024 is the safe side on both).
    pub depth_block: u64,
    /// The horizontal kernels take `m · n` up to this (16 × 16) without packing.
    pub horizontal_max: u64,
}

impl GemmPacking {
    /// Elements of the copy gemm allocates for one `[m × k] · [k × n]` call (see the type's docs);
    /// `lhs_unit_rows`: the left operand's row stride is 1; `contiguous_k`: both operands are contiguous
    /// along `k` (the weight-gradient layout).
    pub fn prepacked_elements(&self, m: u64, n: u64, k: u64, lhs_unit_rows: bool, contiguous_k: bool) -> u64 {
        if m <= 1 || n <= 1 || k <= 2 {
            return 0;
        }
        if contiguous_k && m * n <= self.horizontal_max {
            return 0;
        }
        if m > self.max_rows || (lhs_unit_rows && m.is_multiple_of(self.simd_lanes)) {
            return 0;
        }
        let kc = if m <= self.small_edge && n <= self.small_edge { self.small_depth } else { self.depth_block };
        k.min(kc) * m.next_multiple_of(self.kernel_rows.max(1))
    }
}

fn flex_kind() -> BackendKind {
    BackendKind::Flex
}

#[derive(Deserialize)]
struct BackendsFile {
    flex: BackendModel,
    cuda: BackendModel,
}

/// Environment variable naming a calibrated profile (written by `voxplan calibrate`) that replaces the
/// embedded constants of its backend for every plan this process makes (`plan`, `train`, `bench planner`).
pub const PROFILE_ENV: &str = "VOXPLAN_DEVICE_PROFILE";

/// How a calibrated profile was obtained: kept in the file beside the constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRecord {
    pub machine: String,
    /// UTC date and time of the run.
    pub date: String,
    pub command: String,
    pub zoo: String,
    /// Zoo entries measured and fitted.
    pub samples: usize,
    /// Root-mean-square relative error of the fit over its samples.
    pub rms_relative_error: f64,
    /// The fitted multipliers, relative to the embedded constants.
    pub activation_scale_factor: f64,
    pub workspace_factor_scale: f64,
}

/// A calibrated device profile file (`configs/devices/<name>.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub backend: BackendModel,
    pub calibration: CalibrationRecord,
}

/// Reads a calibrated profile file.
pub fn load_profile(path: &std::path::Path) -> Result<ProfileFile, PlanError> {
    let err = |problem: String| PlanError::File { path: path.display().to_string(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}

/// The embedded model of a backend, unless [`PROFILE_ENV`] names a calibrated profile for that backend.
pub fn backend_model(kind: BackendKind) -> Result<BackendModel, PlanError> {
    if let Some(path) = std::env::var_os(PROFILE_ENV) {
        let profile = load_profile(std::path::Path::new(&path))?;
        if profile.backend.kind == kind {
            return Ok(profile.backend);
        }
    }
    embedded_backend_model(kind)
}

/// The embedded constants for this machine (per-thread scratch folded in, as [`device_profile`] does), what
/// `voxplan calibrate` simulates its samples with, so that the predictions it prints are the planner's for
/// the machine the samples are measured on.
pub fn embedded_backend_model_for_this_machine(kind: BackendKind) -> Result<BackendModel, PlanError> {
    Ok(for_host(embedded_backend_model(kind)?, &CpuHost::this_machine()))
}

/// The constants compiled in from `configs/devices/backends.toml`.
pub fn embedded_backend_model(kind: BackendKind) -> Result<BackendModel, PlanError> {
    let file: BackendsFile = toml::from_str(BACKENDS_TOML)
        .map_err(|e| PlanError::DeviceTable { file: "configs/devices/backends.toml".into(), problem: e.to_string() })?;
    let mut m = match kind {
        BackendKind::Flex => file.flex,
        BackendKind::Cuda => file.cuda,
    };
    m.kind = kind;
    Ok(m)
}

/// Where the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda { index: usize },
}

/// A device with the memory the planner may use and what it computes fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub name: String,
    pub kind: DeviceKind,
    /// Physical memory of the device, bytes.
    pub total_bytes: u64,
    /// Memory free for this run when profiled (RAM available, or GPU free memory), bytes.
    pub free_bytes: u64,
    /// Fast bfloat16 (Ampere or newer); selects bf16 mixed precision.
    pub bf16: bool,
    /// Fast float16 (tensor cores); selects f16 mixed precision when bf16 is missing.
    pub fp16_fast: bool,
    pub backend: BackendModel,
    /// Where the figures come from ("sysinfo", "NVML", "gpus.toml").
    pub source: String,
    /// The CPU's facts the flex backend's figures were folded with ([`for_host`]); none for a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuHost>,
}

/// What `--device` / `--gpu` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    Cpu,
    Cuda(usize),
    /// A GPU from the table, planned for without the card.
    Gpu(String),
}

impl FromStr for DeviceSelector {
    type Err = PlanError;

    /// Parses `cpu`, `cuda` (index 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, PlanError> {
        let t = s.trim().to_ascii_lowercase();
        if t == "cpu" {
            return Ok(Self::Cpu);
        }
        if t == "cuda" {
            return Ok(Self::Cuda(0));
        }
        if let Some(i) = t.strip_prefix("cuda:")
            && let Ok(index) = i.parse()
        {
            return Ok(Self::Cuda(index));
        }
        Err(PlanError::InvalidSize {
            field: "--device".into(),
            value: s.into(),
            problem: "expected cpu, cuda or cuda:N".into(),
        })
    }
}

#[derive(Deserialize)]
struct GpuFile {
    gpu: Vec<GpuEntry>,
}

#[derive(Deserialize)]
struct GpuEntry {
    name: String,
    aliases: Vec<String>,
    total_mib: u64,
    compute_capability: String,
    bf16: bool,
    fp16_fast: bool,
}

fn gpu_table() -> Result<Vec<GpuEntry>, PlanError> {
    let f: GpuFile = toml::from_str(GPUS_TOML)
        .map_err(|e| PlanError::DeviceTable { file: "configs/devices/gpus.toml".into(), problem: e.to_string() })?;
    Ok(f.gpu)
}

/// Names accepted by `--gpu`.
pub fn known_gpus() -> Result<Vec<String>, PlanError> {
    Ok(gpu_table()?.into_iter().map(|g| g.name).collect())
}

/// Profiles the selected device for a plan: a CPU is this machine with any figure that
/// `VOXPLAN_CPU_L2` / `VOXPLAN_CPU_THREADS` state in its place ([`CpuHost::planned_for`]).
pub fn device_profile(device: &DeviceSelector) -> Result<DeviceProfile, PlanError> {
    let cpu = match device {
        DeviceSelector::Cpu => CpuHost::planned_for()?,
        _ => CpuHost::this_machine(),
    };
    device_profile_with_cpu(device, cpu)
}

/// Profiles the selected device, a CPU with the facts `cpu` gives (ignored for GPUs). A process that runs
/// the step it plans (`train`, `predict`) or compares a plan with steps measured here passes this machine's
/// facts ([`CpuHost::this_machine`], or the pool it computes on), never a stated CPU: gemm and rayon size
/// their buffers from the machine.
pub fn device_profile_with_cpu(device: &DeviceSelector, cpu: CpuHost) -> Result<DeviceProfile, PlanError> {
    match device {
        DeviceSelector::Cpu => cpu_profile(cpu),
        DeviceSelector::Cuda(index) => cuda_profile(*index),
        DeviceSelector::Gpu(name) => table_profile(name),
    }
}

fn cpu_profile(cpu: CpuHost) -> Result<DeviceProfile, PlanError> {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let total = sys.total_memory();
    if total == 0 {
        return Err(PlanError::Device { device: "cpu".into(), problem: "sysinfo reports no memory".into() });
    }
    Ok(DeviceProfile {
        name: format!("CPU ({} logical cores)", std::thread::available_parallelism().map_or(1, |n| n.get())),
        kind: DeviceKind::Cpu,
        total_bytes: total,
        free_bytes: sys.available_memory(),
        // flex computes bf16/f16 but not faster than f32 (burn-0.21.md §5: 0.18 s vs 0.20 s), so auto stays f32.
        bf16: false,
        fp16_fast: false,
        backend: for_host(backend_model(BackendKind::Flex)?, &cpu),
        source: format!("sysinfo (available RAM); {}", cpu.describe()),
        cpu: Some(cpu),
    })
}

/// [`for_machine`] with the compute threads and L2 share of `cpu`.
pub fn for_host(backend: BackendModel, cpu: &CpuHost) -> BackendModel {
    for_machine(backend, cpu.compute_threads, cpu.l2_bytes_per_core)
}

/// `backend` on a machine with `threads` compute threads and `l2_bytes` of L2 cache per core: the
/// per-thread scratch becomes part of the step overhead. gemm's slab is thread-local, so every thread that
/// multiplies matrices during a step has one. With voxplan's tiled conv kernels (vendor/burn-flex) every
/// conv gemm runs on rayon's `threads` workers, never on the thread that drives the step (flex 0.21's own
/// convs ran single-tile gemms there too, one slab more). Measured on 16³ steps at batch 1–4 and on
/// d3-f8-gn-16 at `RAYON_NUM_THREADS` = 1 / 2 / 4 (docs/planner-accuracy.md).
pub fn for_machine(mut backend: BackendModel, threads: usize, l2_bytes: u64) -> BackendModel {
    let per_thread = match backend.per_thread_scratch {
        PerThreadScratch::None => 0,
        PerThreadScratch::L2Cache => l2_bytes,
    };
    backend.step_overhead_bytes += per_thread * threads as u64;
    backend.per_thread_scratch = PerThreadScratch::None;
    // The tiled kernels split their tiles into one chunk per rayon thread.
    if let ConvWorkspace::Tiled { tiles_in_flight: t @ 0, .. } = &mut backend.conv_workspace {
        *t = threads.max(1) as u64;
    }
    backend
}

fn cuda_profile(index: usize) -> Result<DeviceProfile, PlanError> {
    let dev_name = format!("cuda:{index}");
    let err =
        |e: nvml_wrapper::error::NvmlError| PlanError::Device { device: dev_name.clone(), problem: e.to_string() };
    let nvml = nvml_wrapper::Nvml::init().map_err(err)?;
    let idx = u32::try_from(index)
        .map_err(|_| PlanError::Device { device: dev_name.clone(), problem: "index out of range".into() })?;
    let d = nvml.device_by_index(idx).map_err(err)?;
    let mem = d.memory_info().map_err(err)?;
    let cc = d.cuda_compute_capability().map_err(err)?;
    Ok(DeviceProfile {
        name: format!("{} (sm_{}{})", d.name().map_err(err)?, cc.major, cc.minor),
        kind: DeviceKind::Cuda { index },
        total_bytes: mem.total,
        free_bytes: mem.free,
        bf16: cc.major >= 8,
        fp16_fast: cc.major >= 7,
        backend: backend_model(BackendKind::Cuda)?,
        source: "NVML (free memory)".into(),
        cpu: None,
    })
}

fn table_profile(name: &str) -> Result<DeviceProfile, PlanError> {
    let table = gpu_table()?;
    let want = name.trim().to_ascii_lowercase();
    let Some(g) = table.iter().find(|g| g.name.to_ascii_lowercase() == want || g.aliases.contains(&want)) else {
        let known = table.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(PlanError::UnknownGpu { name: name.into(), known });
    };
    let total = g.total_mib << 20;
    Ok(DeviceProfile {
        name: format!("{} (sm_{})", g.name, g.compute_capability.replace('.', "")),
        kind: DeviceKind::Cuda { index: 0 },
        total_bytes: total,
        free_bytes: total,
        bf16: g.bf16,
        fp16_fast: g.fp16_fast,
        backend: backend_model(BackendKind::Cuda)?,
        source: "configs/devices/gpus.toml (a whole idle card)".into(),
        cpu: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_scratch_is_folded_in_once_for_the_machine() {
        const MIB: u64 = 1 << 20;
        let flex = backend_model(BackendKind::Flex).unwrap();
        assert_eq!(flex.per_thread_scratch, PerThreadScratch::L2Cache, "flex keeps gemm's slab per thread");
        // One slab per rayon worker: 2 on two threads, 8 on eight.
        let two = for_machine(flex.clone(), 2, 2 * MIB);
        assert_eq!(two.step_overhead_bytes - flex.step_overhead_bytes, 2 * 2 * MIB);
        let eight = for_machine(flex.clone(), 8, MIB);
        assert_eq!(eight.step_overhead_bytes - flex.step_overhead_bytes, 8 * MIB);
        assert_eq!(eight.per_thread_scratch, PerThreadScratch::None);
        assert!(matches!(flex.conv_workspace, ConvWorkspace::Tiled { tiles_in_flight: 0, .. }));
        assert!(matches!(eight.conv_workspace, ConvWorkspace::Tiled { tiles_in_flight: 8, .. }));
        // Folding a folded model again adds nothing: a profile cannot count the threads twice.
        assert_eq!(for_machine(eight.clone(), 8, MIB), eight);
        let here = CpuHost::this_machine();
        let cpu = device_profile_with_cpu(&DeviceSelector::Cpu, here).unwrap();
        assert_eq!(cpu.backend, for_host(flex.clone(), &here));
        assert_eq!(cpu.cpu, Some(here));
        // A stated CPU is folded in the same way, and the profile says which CPU it is for.
        let stated = CpuHost::stated(Some("2MiB"), Some("16")).unwrap();
        let planned = device_profile_with_cpu(&DeviceSelector::Cpu, stated).unwrap();
        assert_eq!(planned.backend, for_machine(flex, 16, 2 * MIB));
        assert!(planned.source.contains("16 compute threads, L2 2.0 MiB per core; stated by"), "{}", planned.source);
    }

    #[test]
    fn selectors_parse() {
        assert_eq!("cpu".parse::<DeviceSelector>().unwrap(), DeviceSelector::Cpu);
        assert_eq!("cuda:1".parse::<DeviceSelector>().unwrap(), DeviceSelector::Cuda(1));
        assert_eq!("CUDA".parse::<DeviceSelector>().unwrap(), DeviceSelector::Cuda(0));
        assert!("tpu".parse::<DeviceSelector>().unwrap_err().to_string().contains("--device"));
    }

    #[test]
    fn gpu_table_has_the_listed_cards_with_bf16_flags() {
        let h100 = device_profile(&DeviceSelector::Gpu("H100".into())).unwrap();
        assert!(h100.bf16 && h100.total_bytes > 79 << 30);
        let t4 = device_profile(&DeviceSelector::Gpu("t4".into())).unwrap();
        assert!(!t4.bf16 && t4.fp16_fast && t4.backend.pooled);
        for n in ["v100", "v100-32", "3090", "4090", "a100", "a100-80", "l40s"] {
            assert!(device_profile(&DeviceSelector::Gpu(n.into())).is_ok(), "{n}");
        }
    }

    #[test]
    fn unknown_gpu_is_named() {
        let e = device_profile(&DeviceSelector::Gpu("GTX-480".into())).unwrap_err().to_string();
        assert!(e.contains("GTX-480") && e.contains("H100-80GB"), "{e}");
    }

    #[test]
    fn this_cpu_has_memory() {
        let p = device_profile(&DeviceSelector::Cpu).unwrap();
        assert!(p.total_bytes > 0 && p.free_bytes <= p.total_bytes);
        assert_eq!(p.backend.kind, BackendKind::Flex);
    }
}
