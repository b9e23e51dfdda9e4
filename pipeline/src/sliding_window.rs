//! Sliding-window inference over a whole volume: the grid of patches at 50 % overlap, several windows per
//! forward pass, softmax probabilities blended with a gaussian importance map (nnU-Net's scheme, so voxels
//! near a window's border, where the receptive field is cut off, weigh less).
//!
//! Shared by validation during training and by `voxplan predict`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, activation};
use voxplan_volumes::grid::{Aggregator, Blend, GridSampler};
use voxplan_volumes::volume::voxel_count;
use voxplan_volumes::{Labels, Volume};

use crate::error::PipelineError;
use crate::model::UNet;

/// nnU-Net's window step: half a patch.
pub const WINDOW_OVERLAP: f64 = 0.5;
/// nnU-Net's gaussian: sigma = 1/8 of the patch edge.
pub const GAUSSIAN_SIGMA_SCALE: f64 = 0.125;

/// Per-class probabilities `[C, z, y, x]` (x fastest) of a whole volume.
pub struct Probabilities {
    pub data: Vec<f32>,
    pub classes: usize,
    pub shape: [usize; 3],
    /// Bytes the stitching accumulator held (output sum + weight map + importance map).
    pub accumulator_bytes: u64,
    pub windows: usize,
}

impl Probabilities {
    /// The most probable class per voxel, with the volume's affine.
    pub fn argmax(&self, affine: voxplan_volumes::Affine) -> Labels {
        let n = voxel_count(self.shape);
        let mut best = vec![0u16; n];
        let mut best_p = self.data[..n.min(self.data.len())].to_vec();
        for c in 1..self.classes {
            let p = &self.data[c * n..(c + 1) * n];
            for ((b, bp), &v) in best.iter_mut().zip(best_p.iter_mut()).zip(p) {
                if v > *bp {
                    *bp = v;
                    *b = c as u16;
                }
            }
        }
        Labels { data: best, shape: self.shape, affine }
    }
}

/// Runs `model` over `volume` window by window, `windows_per_pass` at a time.
pub fn predict_volume<B: Backend>(
    model: &UNet<B>,
    volume: &Volume,
    patch_size: [usize; 3],
    classes: usize,
    windows_per_pass: usize,
    device: &B::Device,
) -> Result<Probabilities, PipelineError> {
    // A backend that fails to run or read a pass (CUDA) is an error, never a silently empty window.
    let failed = |problem: String| PipelineError::Device {
        requested: format!("{device:?}"),
        problem: format!("sliding-window inference: {problem}"),
    };
    let sampler = GridSampler::new(volume, patch_size, WINDOW_OVERLAP);
    let blend = Blend::Gaussian { sigma_scale: GAUSSIAN_SIGMA_SCALE };
    let mut aggregator = Aggregator::new(volume.shape, classes, patch_size, blend);
    let accumulator_bytes = aggregator.bytes();
    let origins = sampler.origins().to_vec();
    let [px, py, pz] = patch_size;
    let window_voxels = voxel_count(patch_size);
    let per_window = classes * window_voxels;
    let indices: Vec<usize> = (0..origins.len()).collect();
    for chunk in indices.chunks(windows_per_pass.max(1)) {
        let mut images = Vec::with_capacity(chunk.len() * volume.channels * window_voxels);
        for &k in chunk {
            images.extend_from_slice(&sampler.patch(k));
        }
        let x = Tensor::<B, 5>::from_data(TensorData::new(images, [chunk.len(), volume.channels, pz, py, px]), device);
        let logits =
            model.forward(x).into_iter().next().ok_or_else(|| failed("the network returned no output".into()))?;
        let probs = activation::softmax(logits, 1)
            .try_into_data()
            .map_err(|e| failed(e.to_string()))?
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| failed(format!("{e:?}")))?;
        for (w, &k) in chunk.iter().enumerate() {
            let p = probs.get(w * per_window..(w + 1) * per_window).ok_or_else(|| {
                failed(format!("{} probabilities for {} windows of {per_window}", probs.len(), chunk.len()))
            })?;
            aggregator.add(origins[k], p);
        }
    }
    Ok(Probabilities {
        data: aggregator.finish(),
        classes,
        shape: volume.shape,
        accumulator_bytes,
        windows: origins.len(),
    })
}
