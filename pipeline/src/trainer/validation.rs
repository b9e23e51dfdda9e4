//! Validation: whole held-out volumes, predicted by sliding windows exactly as `voxplan predict` does, scored
//! by hard Dice per foreground class. Patch-level Dice would flatter the model (patches are foreground-biased);
//! whole volumes measure what a user gets.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use voxplan_volumes::{CaseSource, LabelSpace};

use crate::data_parallel::Peer;
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
    let scores = score_cases(model, source, cases, patch_size, classes, windows_per_pass, stop, device)?;
    Ok(scores.map(|s| summarize(&s, classes, start.elapsed().as_secs_f64())))
}

/// Each case's Dice per class (background first), in `cases` order; `None` when stopped before the last.
#[allow(clippy::too_many_arguments)] // as `validate`
pub fn score_cases<B: Backend>(
    model: &UNet<B>,
    source: &Arc<dyn CaseSource>,
    cases: &[usize],
    patch_size: [usize; 3],
    classes: usize,
    windows_per_pass: usize,
    stop: &StopRequest,
    device: &B::Device,
) -> Result<Option<Vec<Vec<Option<f64>>>>, PipelineError> {
    let mut scores = Vec::with_capacity(cases.len());
    for &i in cases {
        if stop.is_requested() {
            return Ok(None);
        }
        let (volume, labels) = source.load(i)?;
        let probs = predict_volume(model, &volume, patch_size, classes, windows_per_pass, device)?;
        let predicted = probs.argmax(volume.affine);
        scores.push(dice_per_class(&predicted.data, &labels.data, classes, None));
    }
    Ok(Some(scores))
}

/// The pass's figures from each case's Dice per class, in case order (the order fixes the float sums, so a
/// sharded pass gathered back into case order reports what one device reports).
pub fn summarize(scores: &[Vec<Option<f64>>], classes: usize, seconds: f64) -> ValidationResult {
    let mut case_means = Vec::new();
    let mut class_sums = vec![(0.0f64, 0usize); classes.saturating_sub(1)];
    for per_class in scores {
        for (sum, d) in class_sums.iter_mut().zip(per_class.iter().skip(1)) {
            if let Some(d) = d {
                sum.0 += d;
                sum.1 += 1;
            }
        }
        if let Some(m) = mean_foreground_dice(per_class) {
            case_means.push(m);
        }
    }
    let mean_dice = (!case_means.is_empty()).then(|| case_means.iter().sum::<f64>() / case_means.len() as f64);
    let per_class = class_sums.iter().map(|&(s, n)| (n > 0).then(|| s / n as f64)).collect();
    ValidationResult { mean_dice, per_class, cases: scores.len(), seconds }
}

/// [`validate`] split over the ranks of a data-parallel run: rank `r` of `W` scores cases `r, r+W, …`, and
/// the scores are gathered back into case order, so every rank returns the figures one device computes on
/// the same weights. A stop is not looked at inside (every rank must reach the gather); the caller votes
/// on it afterwards.
#[allow(clippy::too_many_arguments)] // as `validate`, plus the rank
pub fn validate_sharded<B: AutodiffBackend>(
    model: &UNet<B::InnerBackend>,
    source: &Arc<dyn CaseSource>,
    cases: &[usize],
    patch_size: [usize; 3],
    classes: usize,
    windows_per_pass: usize,
    peer: &Peer,
    device: &B::Device,
) -> Result<ValidationResult, PipelineError> {
    let start = Instant::now();
    let mine: Vec<usize> = cases.iter().skip(peer.rank).step_by(peer.world).copied().collect();
    let never = StopRequest::new();
    let scored = score_cases(model, source, &mine, patch_size, classes, windows_per_pass, &never, device)?;
    // Two numbers per case and class: whether the Dice is defined, and its value; zeros from every other rank.
    let mut gathered = vec![0.0; cases.len() * classes * 2];
    for (j, per_class) in scored.unwrap_or_default().iter().enumerate() {
        let case = peer.rank + j * peer.world;
        for (class, d) in per_class.iter().enumerate() {
            let at = (case * classes + class) * 2;
            gathered[at] = f64::from(d.is_some());
            gathered[at + 1] = d.unwrap_or(0.0);
        }
    }
    let gathered = peer.sum::<B>(&gathered, device)?;
    let scores: Vec<Vec<Option<f64>>> = gathered
        .chunks(classes * 2)
        .map(|case| case.chunks(2).map(|p| (p[0] > 0.5).then_some(p[1])).collect())
        .collect();
    Ok(summarize(&scores, classes, start.elapsed().as_secs_f64()))
}
