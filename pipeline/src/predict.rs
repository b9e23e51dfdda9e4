//! `voxplan predict`: segments NIfTI volumes with a trained checkpoint by sliding-window inference, writing
//! label maps (and optionally class probabilities) with the input's shape and affine, so they overlay the
//! input in any viewer.
//!
//! Inputs go through the preprocessing the checkpoint recorded (CT clipping and dataset statistics, or
//! per-volume z-score; resampling to the training spacing) by the same code training used. A prediction
//! made on a resampled grid is brought back onto the input's grid: labels by nearest neighbour, probabilities
//! trilinearly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::tensor::backend::Backend;
use voxplan_planner::{DeviceSelector, plan_inference};
use voxplan_volumes::nifti::{
    AxisCodes, DataType, Reorientation, XformCodes, read_header, read_volume, write_labels_with_codes,
    write_volume_with_codes,
};
use voxplan_volumes::{LabelSpace, Labels, Volume};

use crate::device::{self, ComputeDevice, DeviceRequest};
use crate::error::PipelineError;
use crate::model::{UNet, UNetConfig};
use crate::sliding_window::predict_volume;
use crate::trainer::checkpoint::{self, TrainState};
use crate::trainer::stop::StopRequest;

/// Suffix of the sidecar that names a probabilities file's channels.
const CHANNELS_SIDECAR_SUFFIX: &str = ".json";

#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// A run directory (its best checkpoint is used) or a checkpoint directory.
    pub checkpoint: PathBuf,
    /// A `.nii`/`.nii.gz` file, or a directory of them.
    pub input: PathBuf,
    pub output: PathBuf,
    /// Also write per-class probabilities as a 4-D float32 image.
    pub probabilities: bool,
    pub device: DeviceRequest,
    /// Memory budget for choosing windows per pass, bytes (default: the device's free memory).
    pub budget_bytes: Option<u64>,
    /// Leave inputs whose outputs already exist alone: a requeued job finishes what an interrupted one
    /// left (outputs appear by rename, so one that exists is whole).
    pub skip_existing: bool,
    /// Set (by a signal handler) to stop before the next file.
    pub stop: StopRequest,
}

/// One segmented file.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictedFile {
    pub input: PathBuf,
    pub labels: PathBuf,
    pub probabilities: Option<PathBuf>,
    pub shape: [usize; 3],
    /// The grid the network ran on: `shape` unless the checkpoint resamples to a target spacing.
    pub network_shape: [usize; 3],
    pub windows: usize,
    pub windows_per_pass: usize,
    /// Bytes of the stitching accumulator, as counted while predicting.
    pub accumulator_bytes: u64,
    /// The same, as the inference planner predicted it.
    pub planned_accumulator_bytes: u64,
    pub seconds: f64,
}

/// Segments every input; returns what was written.
pub fn predict(options: &PredictOptions) -> Result<Vec<PredictedFile>, PipelineError> {
    let device = device::resolve(options.device)?;
    tracing::info!("predicting on {device}");
    let dir = checkpoint::resolve_inference_dir(&options.checkpoint)
        .map_err(|e| crate::trainer::session::as_option("--checkpoint", e))?;
    let state = checkpoint::load_state(&dir)?;
    let inputs = list_inputs(&options.input)?;
    std::fs::create_dir_all(&options.output)
        .map_err(|source| PipelineError::Io { path: options.output.clone(), source })?;
    match device {
        ComputeDevice::Cpu => predict_on::<Flex>(options, &dir, &state, &inputs, &FlexDevice, DeviceSelector::Cpu),
        ComputeDevice::Cuda(index) => predict_cuda(options, &dir, &state, &inputs, index),
    }
}

#[cfg(feature = "cuda")]
fn predict_cuda(
    options: &PredictOptions,
    dir: &Path,
    state: &TrainState,
    inputs: &[PathBuf],
    index: usize,
) -> Result<Vec<PredictedFile>, PipelineError> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    predict_on::<Cuda>(options, dir, state, inputs, &CudaDevice::new(index), DeviceSelector::Cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn predict_cuda(
    _: &PredictOptions,
    _: &Path,
    _: &TrainState,
    _: &[PathBuf],
    index: usize,
) -> Result<Vec<PredictedFile>, PipelineError> {
    Err(PipelineError::Device {
        requested: format!("cuda:{index}"),
        problem: "built without the `cuda` feature".into(),
    })
}

fn predict_on<B: Backend>(
    options: &PredictOptions,
    dir: &Path,
    state: &TrainState,
    inputs: &[PathBuf],
    device: &B::Device,
    selector: DeviceSelector,
) -> Result<Vec<PredictedFile>, PipelineError> {
    let plan = &state.plan;
    let classes = plan.network.num_classes;
    let label_space = state.label_space();
    let model: UNet<B> = UNetConfig::new(plan.network.clone(), plan.precision).init(device);
    let model = checkpoint::load_model(model, dir, device)?;
    let profile = device::run_profile(&selector)?;
    let preprocessing = &state.preprocessing;
    let mut out = Vec::with_capacity(inputs.len());
    for (done, input) in inputs.iter().enumerate() {
        if options.stop.is_requested() {
            return Err(PipelineError::PredictInterrupted { done, total: inputs.len() });
        }
        let name = file_name(input);
        let labels_path = options.output.join(&name);
        let probabilities_path = options.output.join(probabilities_name(&name));
        if options.skip_existing && labels_path.is_file() && (!options.probabilities || probabilities_path.is_file()) {
            tracing::info!("{}: {} exists, skipped", input.display(), labels_path.display());
            continue;
        }
        let started = Instant::now();
        // The output declares the input's qform/sform codes as well as its affine, so a viewer places both
        // in the same space.
        let codes = XformCodes::of(&read_header(input)?);
        let raw: Volume = read_volume(input)?;
        let (shape, affine) = (raw.shape, raw.affine);
        // The network saw every case in one orientation; an input whose axes point other ways is brought to
        // it (axes permuted and flipped, never interpolated) and the outputs taken back.
        let to_trained = preprocessing.orientation.and_then(|target| Reorientation::to(&affine, shape, target));
        if let (Some(_), Some(target)) = (&to_trained, preprocessing.orientation) {
            tracing::info!(
                "{}: {} reoriented to {target} for the network and back",
                input.display(),
                AxisCodes::of(&affine)
            );
        }
        let oriented = match &to_trained {
            Some(r) => r.apply_volume(&raw),
            None => raw,
        };
        let (oriented_shape, oriented_affine) = (oriented.shape, oriented.affine);
        let volume = network_input(state, oriented, input)?;
        let inference = plan_inference(
            &plan.network,
            plan.patch_size,
            volume.shape,
            plan.precision,
            &profile,
            options.budget_bytes,
        )?;
        let probs = predict_volume(&model, &volume, plan.patch_size, classes, inference.windows_per_pass, device)?;
        let on_input_grid = preprocessing.restore_labels(probs.argmax(volume.affine), oriented_shape, oriented_affine);
        let mut labels = match &to_trained {
            Some(r) => Labels { affine, ..r.inverse().apply_labels(&on_input_grid) },
            None => on_input_grid,
        };
        label_space.decode_in_place(&mut labels.data);
        let probabilities = if options.probabilities {
            let path = probabilities_path;
            let on_network_grid =
                Volume { data: probs.data.clone(), shape: probs.shape, channels: classes, affine: volume.affine };
            let restored = preprocessing.restore_volume(on_network_grid, oriented_shape, oriented_affine);
            let restored = match &to_trained {
                Some(r) => Volume { affine, ..r.inverse().apply_volume(&restored) },
                None => restored,
            };
            write_channel_names(&path, &label_space)?;
            write_whole(&path, |partial| write_volume_with_codes(partial, &restored, DataType::F32, codes))?;
            Some(path)
        } else {
            None
        };
        // Last, so that a label map that exists means its probabilities do too (--skip-existing).
        write_whole(&labels_path, |partial| {
            write_labels_with_codes(partial, &labels, label_datatype(&label_space), codes)
        })?;
        tracing::info!(
            "{} → {} ({} windows, {} per pass, {:.1} s)",
            input.display(),
            labels_path.display(),
            probs.windows,
            inference.windows_per_pass,
            started.elapsed().as_secs_f64()
        );
        out.push(PredictedFile {
            input: input.clone(),
            labels: labels_path,
            probabilities,
            shape,
            network_shape: volume.shape,
            windows: probs.windows,
            windows_per_pass: inference.windows_per_pass,
            accumulator_bytes: probs.accumulator_bytes,
            planned_accumulator_bytes: inference.output_accumulator_bytes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(out)
}

/// What the network sees of `volume` (read from `input`): the checkpoint's recorded preprocessing applied by
/// the code training used ([`Preprocessing::apply_to_image`](voxplan_volumes::preprocess::Preprocessing)), so
/// it equals the training-time case to the last bit. Checks the channel count and that every voxel is a
/// finite number first.
pub fn network_input(state: &TrainState, volume: Volume, input: &Path) -> Result<Volume, PipelineError> {
    let expected = state.plan.network.in_channels;
    if volume.channels != expected {
        return Err(PipelineError::Option {
            field: "--input".into(),
            problem: format!("{}: {} channels, the model takes {expected}", input.display(), volume.channels),
        });
    }
    // One NaN or infinity spreads through the z-score to every voxel and the volume would come back as
    // background, silently; training stops on such a case (non-finite loss), so prediction refuses it too.
    let non_finite = volume.data.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        return Err(PipelineError::Option {
            field: "--input".into(),
            problem: format!(
                "{}: {non_finite} of {} voxels are NaN or infinite; the network cannot segment them (replace \
                 them, e.g. with the background value, and predict again)",
                input.display(),
                volume.data.len()
            ),
        });
    }
    Ok(state.preprocessing.apply_to_image(volume))
}

/// The largest volume among the inputs `input` names (per axis, from headers): what a queue plans a
/// prediction job's memory for.
pub fn largest_input_shape(input: &Path) -> Result<[usize; 3], PipelineError> {
    let mut out = [1usize; 3];
    for path in list_inputs(input)? {
        let shape = read_header(&path)?.shape;
        for (o, s) in out.iter_mut().zip(shape) {
            *o = (*o).max(s);
        }
    }
    Ok(out)
}

/// The NIfTI files to segment: `input` itself, or the `.nii`/`.nii.gz` files in it, sorted.
fn list_inputs(input: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let io = |source| PipelineError::Io { path: input.to_path_buf(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_nifti(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PipelineError::Option {
            field: "--input".into(),
            problem: format!("{}: no .nii or .nii.gz files", input.display()),
        });
    }
    Ok(files)
}

fn is_nifti(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "prediction.nii.gz".into())
}

/// Writes `path` through a hidden partial file in the same folder and a rename, so that an interrupted
/// prediction never leaves a truncated image under the real name. The partial name keeps the extension,
/// which decides whether the writer compresses.
fn write_whole(path: &Path, write: impl FnOnce(&Path) -> voxplan_volumes::Result<()>) -> Result<(), PipelineError> {
    let partial = path.with_file_name(format!(".partial.{}", file_name(path)));
    write(&partial)?;
    std::fs::rename(&partial, path).map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })
}

/// The smallest NIfTI type that holds every declared value: `uint8` for values up to 255 (most masks),
/// `int16` up to 32767 (what most tools expect of larger atlases), `uint16` beyond.
fn label_datatype(labels: &LabelSpace) -> DataType {
    match labels.max_value() {
        0..=255 => DataType::U8,
        256..=32767 => DataType::I16,
        _ => DataType::U16,
    }
}

/// Writes `<probabilities>.json` beside a probabilities file: its channels in order, each with the label
/// value and name it stands for (a 4-D NIfTI has no place for channel names).
fn write_channel_names(probabilities: &Path, labels: &LabelSpace) -> Result<(), PipelineError> {
    let channels: Vec<serde_json::Value> = labels
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({ "channel": i, "value": c.value, "name": c.name }))
        .collect();
    let text = serde_json::json!({ "file": file_name(probabilities), "channels": channels });
    let path = channel_names_path(probabilities);
    let pretty = serde_json::to_string_pretty(&text).unwrap_or_else(|_| text.to_string());
    std::fs::write(&path, pretty).map_err(|source| PipelineError::Io { path, source })
}

/// `case_probabilities.nii.gz` → `case_probabilities.json`.
pub fn channel_names_path(probabilities: &Path) -> PathBuf {
    let name = file_name(probabilities);
    let stem = name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).unwrap_or(&name);
    probabilities.with_file_name(format!("{stem}{CHANNELS_SIDECAR_SUFFIX}"))
}

/// `case.nii.gz` → `case_probabilities.nii.gz`.
fn probabilities_name(name: &str) -> String {
    for ext in [".nii.gz", ".nii"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return format!("{stem}_probabilities{ext}");
        }
    }
    format!("{name}_probabilities.nii.gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_file_keeps_the_extension() {
        assert_eq!(probabilities_name("a.nii.gz"), "a_probabilities.nii.gz");
        assert_eq!(probabilities_name("b.nii"), "b_probabilities.nii");
        assert_eq!(channel_names_path(Path::new("out/a_probabilities.nii.gz")), Path::new("out/a_probabilities.json"));
    }

    #[test]
    fn label_files_hold_the_largest_declared_value() {
        use voxplan_volumes::LabelSource;
        let space = |max: u16| {
            LabelSpace::new([(0, "bg".into()), (max, "x".into())], LabelSource::Experiment, Path::new("t")).unwrap()
        };
        assert_eq!(label_datatype(&space(255)), DataType::U8);
        assert_eq!(label_datatype(&space(256)), DataType::I16);
        assert_eq!(label_datatype(&space(40000)), DataType::U16);
    }
}
