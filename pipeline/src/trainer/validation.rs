//! Validation: whole held-out volumes, predicted by sliding windows exactly as `voxplan predict` does, scored
//! by hard Dice per foreground class. Patch-level Dice would flatter the model (patches are foreground-biased);
//! whole volumes measure what a user gets.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use voxplan_volumes::{CaseSource, LabelSpace};

use crate::dice::{dice_per_class, mean_foreground_dice};
use crate::error::PipelineError;
use crate::model::UNet;
use crate::sliding_window::predict_volume;
use crate::trainer::stop::StopRequest;

/// Dice of one validation pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationResult {
    /// Mean over cases of each case's mean foreground Dice; `None` when no case has any foreground class.
    pub mean_dice: Option<f64>,
    /// Per foreground class (index 0 = class 1), mean over the cases where the class is defined.
    pub per_class: Vec<Option<f64>>,
    pub cases: usize,
    pub seconds: f64,
}

impl ValidationResult {
    /// The per-class Dice keyed by each foreground class's declared name.
    pub fn by_name(&self, labels: &LabelSpace) -> std::collections::BTreeMap<String, Option<f64>> {
        self.per_class.iter().enumerate().map(|(i, d)| (labels.name_of(i + 1), *d)).collect()
    }

    /// `L1 0.912, L2 0.880, L3 –` in class order, for the log.
    pub fn summary(&self, labels: &LabelSpace) -> String {
        let dice = |d: &Option<f64>| d.map_or_else(|| "–".to_string(), |d| format!("{d:.3}"));
        let parts: Vec<String> =
            self.per_class.iter().enumerate().map(|(i, d)| format!("{} {}", labels.name_of(i + 1), dice(d))).collect();
        parts.join(", ")
    }
}

/// Scores `model` on `cases` of `source`; `None` when `stop` was requested before the last case (a pass over
/// large volumes can take minutes, more than a batch system's grace period).
#[allow(clippy::too_many_arguments)] // each is a separate input of one validation pass
pub fn validate<B: Backend>(
    model: &UNet<B>,
    source: &Arc<dyn CaseSource>,
    cases: &[usize],
    patch_size: [usize; 3],
    classes: usize,
    windows_per_pass: usize,
    stop: &StopRequest,
    device: &B::Device,
) -> Result<Option<ValidationResult>, PipelineError> {
    let start = Instant::now();
    let mut case_means = Vec::new();
    let mut class_sums = vec![(0.0f64, 0usize); classes.saturating_sub(1)];
    for &i in cases {
        if stop.is_requested() {
            return Ok(None);
        }
        let (volume, labels) = source.load(i)?;
        let probs = predict_volume(model, &volume, patch_size, classes, windows_per_pass, device)?;
        let predicted = probs.argmax(volume.affine);
        let per_class = dice_per_class(&predicted.data, &labels.data, classes, None);
        for (sum, d) in class_sums.iter_mut().zip(per_class.iter().skip(1)) {
            if let Some(d) = d {
                sum.0 += d;
                sum.1 += 1;
            }
        }
        if let Some(m) = mean_foreground_dice(&per_class) {
            case_means.push(m);
        }
    }
    let mean_dice = (!case_means.is_empty()).then(|| case_means.iter().sum::<f64>() / case_means.len() as f64);
    let per_class = class_sums.iter().map(|&(s, n)| (n > 0).then(|| s / n as f64)).collect();
    Ok(Some(ValidationResult { mean_dice, per_class, cases: cases.len(), seconds: start.elapsed().as_secs_f64() }))
}
