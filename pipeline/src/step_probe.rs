//! Runs real training steps of one zoo configuration and measures their memory, for the planner-accuracy
//! benchmark (`voxplan bench planner`), the calibration command and the accuracy tests.
//!
//! The step is the trainer's own ([`crate::trainer::step`]): the model from `UNetConfig`, Dice + CE with deep
//! supervision, backward, the gradient accumulator, unscale and the optimizer update. Warm-up steps run
//! first, so the optimizer state exists and burn's lazy initialisation is done, as in a long run.
//!
//! CPU figures come from the counting allocator (`crate::memory`): every figure is the heap above what was
//! live before the model was built, so it contains parameters, gradients, optimizer state, the batch,
//! activations and flex's workspace, which is what the planner's peak minus its fixed (non-heap) overhead
//! models (see `voxplan_planner::accuracy`). CUDA figures: see [`crate::step_probe_cuda`].
//!
//! The counting allocator is process-wide, so one probe must run alone in its process; [`probe_in_child`]
//! runs each configuration in a fresh child process (the `voxplan` binary's hidden `probe-step` command) so
//! that no heap state leaks from one configuration to the next.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use voxplan_planner::accuracy::MeasuredStep;
use voxplan_planner::zoo::ZooConfig;

use crate::device::ComputeDevice;
use crate::error::PipelineError;
use crate::loss::DiceCeLoss;
use crate::memory::{heap_live_bytes, heap_peak_bytes, reset_heap_peak};
use crate::model::{UNet, UNetConfig};
use crate::optim::{TrainOptimizer, build_optimizer};
use crate::precision::LossScaler;
use crate::trainer::step::{MicroOutcome, StepPoint, micro_batch, optimizer_update};

/// Steps run before measuring: the first creates the optimizer state and initialises lazily built parts.
pub const DEFAULT_WARMUP_STEPS: usize = 1;
/// Measured steps; each figure is the largest over them (the allocator's reuse varies little step to step).
pub const DEFAULT_MEASURED_STEPS: usize = 2;
/// Learning rate of the probe's steps: any finite rate gives the same memory; small keeps the loss finite.
const PROBE_LR: f64 = 1e-4;
/// nnU-Net's weight decay, as the trainer uses by default.
const PROBE_WEIGHT_DECAY: f64 = 3e-5;

/// What to measure: one zoo configuration on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub config: ZooConfig,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub warmup_steps: usize,
    pub measured_steps: usize,
    /// CPU: the child's rayon threads (`RAYON_NUM_THREADS`); unset, it inherits this process's environment.
    /// Tests pin it so that what they measure is the same configuration on any host.
    #[serde(default)]
    pub compute_threads: Option<usize>,
}

impl ProbeRequest {
    pub fn new(config: ZooConfig, device: ComputeDevice) -> Self {
        let device = match device {
            ComputeDevice::Cpu => "cpu".to_string(),
            ComputeDevice::Cuda(i) => format!("cuda:{i}"),
        };
        Self {
            config,
            device,
            warmup_steps: DEFAULT_WARMUP_STEPS,
            measured_steps: DEFAULT_MEASURED_STEPS,
            compute_threads: None,
        }
    }
}

/// Reads memory at the step's points. `begin` starts a step; `point` returns `(live, peak since the last
/// call)`, both above the baseline taken when the reader was made.
pub trait MemoryReader {
    fn begin(&mut self) -> u64;
    fn point(&mut self) -> (u64, u64);
    /// The driver's device-wide used bytes, where there is a driver (CUDA).
    fn driver_used(&mut self) -> Option<u64> {
        None
    }
}

/// The counting allocator as a [`MemoryReader`].
pub struct HeapReader {
    baseline: u64,
}

impl HeapReader {
    /// Takes the baseline now: make it before the model is built.
    pub fn new() -> Self {
        Self { baseline: heap_live_bytes() }
    }
}

impl Default for HeapReader {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryReader for HeapReader {
    fn begin(&mut self) -> u64 {
        reset_heap_peak();
        heap_live_bytes().saturating_sub(self.baseline)
    }

    fn point(&mut self) -> (u64, u64) {
        let peak = heap_peak_bytes().saturating_sub(self.baseline);
        let live = heap_live_bytes().saturating_sub(self.baseline);
        reset_heap_peak();
        (live, peak)
    }
}

/// Measures `req` in this process on the device it names. Run one probe per process (see module docs).
pub fn probe(req: &ProbeRequest) -> Result<MeasuredStep, PipelineError> {
    let device: crate::device::DeviceRequest = req.device.parse()?;
    match crate::device::resolve(device)? {
        ComputeDevice::Cpu => {
            let mut reader = HeapReader::new();
            if req.config.checkpointing {
                run_steps::<Autodiff<Flex, BalancedCheckpointing>>(req, &FlexDevice, &mut reader)
            } else {
                run_steps::<Autodiff<Flex>>(req, &FlexDevice, &mut reader)
            }
        }
        ComputeDevice::Cuda(index) => crate::step_probe_cuda::probe_cuda(req, index),
    }
}

/// A deterministic batch: unit-variance-ish images and labels cycling through every class, built on the
/// host as the loader would hand them over (the host buffers are part of the step's batch memory).
fn make_batch<B: AutodiffBackend>(cfg: &ZooConfig, seed: u64, device: &B::Device) -> (Tensor<B, 5>, Tensor<B, 4, Int>) {
    let [px, py, pz] = cfg.patch;
    let n = cfg.batch;
    let voxels = px * py * pz;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*: cheap, reproducible, good enough for input noise.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let images: Vec<f32> =
        (0..n * cfg.in_channels * voxels).map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
    let labels: Vec<i32> = (0..n * voxels).map(|i| ((i / 7 + (next() & 1) as usize) % cfg.classes) as i32).collect();
    let images = Tensor::<B, 5>::from_data(TensorData::new(images, [n, cfg.in_channels, pz, py, px]), device);
    let labels = Tensor::<B, 4, Int>::from_data(TensorData::new(labels, [n, pz, py, px]), device);
    (images, labels)
}

/// Warm-up, then measured steps of the trainer's step on backend `B`, read through `reader`.
pub fn run_steps<B: AutodiffBackend>(
    req: &ProbeRequest,
    device: &B::Device,
    reader: &mut dyn MemoryReader,
) -> Result<MeasuredStep, PipelineError> {
    let cfg = &req.config;
    let net = cfg.network()?;
    B::seed(device, 0);
    let mut model: UNet<B> = UNetConfig::new(net, cfg.precision).init(device);
    let mut optimizer: TrainOptimizer<B, UNet<B>> = build_optimizer(cfg.optimizer, PROBE_WEIGHT_DECAY);
    let mut scaler = LossScaler::for_precision(cfg.precision);
    let loss_fn = DiceCeLoss::new(cfg.classes, None);
    let mut out = MeasuredStep::default();
    let mut times = Vec::new();
    for step in 0..req.warmup_steps + req.measured_steps.max(1) {
        let measuring = step >= req.warmup_steps;
        let started = Instant::now();
        let before = reader.begin();
        let (images, labels) = make_batch::<B>(cfg, step as u64 + 1, device);
        let mut accumulator = GradientsAccumulator::<UNet<B>>::new();
        let mut points: Vec<(StepPoint, u64, u64)> = Vec::with_capacity(3);
        let mut record = |p: StepPoint| {
            let (live, peak) = reader.point();
            points.push((p, live, peak));
        };
        let outcome = micro_batch(&model, &loss_fn, images, labels, scaler.scale(), 1, &mut accumulator, &mut record);
        if let MicroOutcome::NonFiniteLoss { loss } = outcome {
            return Err(PipelineError::NonFiniteLoss { loss, step, epoch: 0, micro_batch: 0, last_checkpoint: None });
        }
        let single = crate::data_parallel::Peer::single();
        let (updated, _skipped) =
            optimizer_update(model, &mut optimizer, &mut scaler, &mut accumulator, PROBE_LR, &single, &mut record)?;
        model = updated;
        let driver = reader.driver_used();
        times.push(started.elapsed().as_secs_f64());
        if !measuring {
            continue;
        }
        for (p, live, peak) in points {
            match p {
                StepPoint::AfterForward => {
                    out.forward_peak_bytes = out.forward_peak_bytes.max(peak);
                    out.retained_after_forward_bytes =
                        out.retained_after_forward_bytes.max(live.saturating_sub(before));
                }
                StepPoint::AfterBackward => out.backward_peak_bytes = out.backward_peak_bytes.max(peak),
                StepPoint::AfterOptimizer => out.optimizer_peak_bytes = out.optimizer_peak_bytes.max(peak),
            }
        }
        out.driver_used_bytes = match (out.driver_used_bytes, driver) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    out.peak_bytes = out.forward_peak_bytes.max(out.backward_peak_bytes).max(out.optimizer_peak_bytes);
    let measured = &mut times[req.warmup_steps..];
    measured.sort_by(f64::total_cmp);
    out.step_seconds = measured.get(measured.len() / 2).copied().unwrap_or(0.0);
    Ok(out)
}

/// The hidden subcommand of the `voxplan` binary that runs one probe: request JSON on stdin, the
/// [`MeasuredStep`] JSON on stdout.
pub const PROBE_SUBCOMMAND: &str = "probe-step";

/// Runs `req` in a fresh process of `exe` (the `voxplan` binary) and returns its measurement.
pub fn probe_in_child(exe: &Path, req: &ProbeRequest) -> Result<MeasuredStep, PipelineError> {
    let io = |source: std::io::Error| PipelineError::Io { path: exe.to_path_buf(), source };
    let mut command = Command::new(exe);
    if let Some(threads) = req.compute_threads {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    let mut child = command
        .arg(PROBE_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    let json = serde_json::to_vec(req)
        .map_err(|e| PipelineError::Option { field: "probe request".into(), problem: e.to_string() })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).map_err(io)?;
    }
    let output = child.wait_with_output().map_err(io)?;
    let failed = |problem: String| PipelineError::Option { field: format!("probe of {}", req.config.name), problem };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(failed(format!(
            "child {} exited with {}: {}",
            exe.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| failed(format!("unreadable child output: {e}")))
}
