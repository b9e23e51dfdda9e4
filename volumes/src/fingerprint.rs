//! A dataset fingerprint: what the planner and CT normalisation need to know about the data.
//!
//! Shapes and spacings come from headers ([`CaseSource::geometry`]); intensities and class frequencies from
//! one streaming pass that holds a single case at a time. Foreground mean and standard deviation are exact;
//! the 0.5/99.5 percentiles are computed over at most [`PERCENTILE_SAMPLES_PER_CASE`] foreground voxels per
//! case, evenly strided (nnU-Net samples 10,000 per case too), so memory stays flat for large datasets.

use crate::error::Result;
use crate::source::CaseSource;

/// Foreground voxels kept per case and channel for the percentile estimate.
pub const PERCENTILE_SAMPLES_PER_CASE: usize = 10_000;

/// Foreground intensity statistics of one channel. Serialisable because a trained model's checkpoint
/// records the statistics its inputs were normalised with.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntensityStats {
    pub mean: f64,
    pub std: f64,
    pub p0_5: f64,
    pub p99_5: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub cases: usize,
    pub channels: usize,
    /// Per-axis median `(x, y, z)` of the case shapes.
    pub median_shape: [usize; 3],
    /// Per-axis median `(x, y, z)` spacing in mm.
    pub median_spacing: [f64; 3],
    /// Foreground (label > 0) statistics per channel.
    pub intensity: Vec<IntensityStats>,
    /// Fraction of all voxels carrying each class (index = class index of the source's label space).
    pub class_frequencies: Vec<f64>,
}

impl Fingerprint {
    /// Number of classes seen (largest label + 1).
    pub fn num_classes(&self) -> usize {
        self.class_frequencies.len()
    }
}

/// Per-axis median; for an even count the lower middle value, so it is a shape that exists in the data.
fn median_by_axis<T: Copy + PartialOrd>(items: &[[T; 3]]) -> Option<[T; 3]> {
    let first = items.first()?;
    let mut out = *first;
    for (axis, slot) in out.iter_mut().enumerate() {
        let mut v: Vec<T> = items.iter().map(|s| s[axis]).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        *slot = v[(v.len() - 1) / 2];
    }
    Some(out)
}

/// Linear-interpolated percentile `q` (0–100) of sorted values, numpy's default method.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Fingerprints `source` (which should apply no intensity normalisation: raw values are the point).
pub fn fingerprint(source: &dyn CaseSource) -> Result<Fingerprint> {
    let n = source.len();
    let mut shapes = Vec::with_capacity(n);
    let mut spacings = Vec::with_capacity(n);
    let mut channels = 0;
    for i in 0..n {
        let g = source.geometry(i)?;
        shapes.push(g.shape);
        spacings.push(g.spacing);
        channels = channels.max(g.channels);
    }
    // Exact sums per channel, sampled values for percentiles, voxel counts per class.
    let mut sum = vec![0.0f64; channels];
    let mut sum_sq = vec![0.0f64; channels];
    let mut fg_count = 0u64;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); channels];
    let mut class_counts: Vec<u64> = Vec::new();
    let mut total_voxels = 0u64;
    for i in 0..n {
        let (volume, labels) = source.load(i)?;
        total_voxels += labels.data.len() as u64;
        let foreground: Vec<usize> = (0..labels.data.len()).filter(|&v| labels.data[v] > 0).collect();
        for &l in &labels.data {
            let l = usize::from(l);
            if l >= class_counts.len() {
                class_counts.resize(l + 1, 0);
            }
            class_counts[l] += 1;
        }
        fg_count += foreground.len() as u64;
        let stride = foreground.len().div_ceil(PERCENTILE_SAMPLES_PER_CASE).max(1);
        for c in 0..volume.channels.min(channels) {
            let ch = volume.channel(c);
            for &v in &foreground {
                let x = f64::from(ch[v]);
                sum[c] += x;
                sum_sq[c] += x * x;
            }
            samples[c].extend(foreground.iter().step_by(stride).map(|&v| f64::from(ch[v])));
        }
    }
    let intensity = (0..channels)
        .map(|c| {
            let count = fg_count.max(1) as f64;
            let mean = sum[c] / count;
            let std = (sum_sq[c] / count - mean * mean).max(0.0).sqrt();
            let s = &mut samples[c];
            s.sort_by(f64::total_cmp);
            IntensityStats { mean, std, p0_5: percentile(s, 0.5), p99_5: percentile(s, 99.5) }
        })
        .collect();
    Ok(Fingerprint {
        cases: n,
        channels,
        median_shape: median_by_axis(&shapes).unwrap_or([0; 3]),
        median_spacing: median_by_axis(&spacings).unwrap_or([1.0; 3]),
        intensity,
        class_frequencies: class_counts.iter().map(|&k| k as f64 / total_voxels.max(1) as f64).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert!((percentile(&v, 99.5) - 9.95).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 0.0);
    }

    #[test]
    fn median_is_per_axis() {
        let m = median_by_axis(&[[1, 9, 5], [3, 2, 5], [2, 4, 1]]);
        assert_eq!(m, Some([2, 4, 5]));
    }
}
