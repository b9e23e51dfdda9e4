//! A decoded case kept in its stored type (8/16-bit integers), normalised only as patches are cut.
//!
//! [`crate::case_view::InMemoryCase`] holds a case as normalised `f32`: decoding widens every voxel, and
//! normalising rewrites every voxel again, though a patch reads a few percent of them. [`StoredCase`] keeps
//! the stored voxels ([`crate::nifti::read_stored`]) and folds everything that turns a stored value into a
//! network input — nibabel's `scl_slope`/`scl_inter`, the case's normalisation (MRI per-volume z-score, CT
//! clip + dataset z-score, as `crate::preprocess` defines them) and the patch's intensity augmentation —
//! into the one per-voxel map of the fused cut ([`crop_transformed_filled`]). An int16 case then holds half
//! the memory of its `f32` form, and the two full passes over it at open time become one read-only pass
//! (the z-score statistics, exact integer sums).
//!
//! Values equal the `f32` path's to float rounding (tested in `tests/stored_case.rs`): the map is evaluated
//! in `f32` around a centre, so large offsets never cancel, and the rest of the offset is added in `f64`.

use crate::augment::PatchTransform;
use crate::case_view::CaseView;
use crate::crop::crop_transformed_filled;
use crate::error::Result;
use crate::nifti::{StoredImage, StoredType, StoredValue, stored_mean_std};
use crate::preprocess::{MIN_STD, Normalization, Preprocessing};
use crate::volume::{Labels, voxel_count};

/// One channel's map from stored value `v` to normalised intensity, before augmentation:
/// `(clip(v) − centre) · gain + offset`, where `clip` is the identity for [`Clip::None`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct ChannelMap {
    clip: Clip,
    /// In the stored domain for [`Clip::None`], in the intensity domain for [`Clip::Scaled`].
    centre: f32,
    gain: f64,
    /// What the rounding of `centre` to `f32` left out, times `gain`: added back exactly.
    offset: f64,
}

/// Whether intensities are clipped (CT) before normalising; clipping needs the scaled intensity.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clip {
    None,
    /// `clamp(v · slope + inter, lo, hi)`.
    Scaled {
        slope: f32,
        inter: f32,
        lo: f32,
        hi: f32,
    },
}

impl ChannelMap {
    /// `x ↦ (x − centre) · gain` with `centre` rounded to `f32`, the remainder moved into `offset`.
    fn centred(clip: Clip, centre: f64, gain: f64) -> Self {
        let rounded = centre as f32;
        Self { clip, centre: rounded, gain, offset: (f64::from(rounded) - centre) * gain }
    }

    /// The map for one channel with nibabel scaling `(slope, inter)` under `normalization`; `values` are the
    /// channel's stored voxels (read once, for per-volume statistics).
    fn new<T: StoredValue>(
        values: &[T],
        slope: f64,
        inter: f64,
        channel: usize,
        normalization: &Normalization,
    ) -> Self {
        match normalization {
            Normalization::PerVolumeZScore => {
                // (v·slope + inter − mean) / std = (v − stored mean) · slope / std.
                let (mean, std) = stored_mean_std(values);
                Self::centred(Clip::None, mean, slope / (std * slope.abs()).max(MIN_STD))
            }
            Normalization::DatasetClipZScore(stats) => match stats.get(channel).or(stats.last()) {
                Some(s) => {
                    let clip = Clip::Scaled {
                        slope: slope as f32,
                        inter: inter as f32,
                        lo: s.p0_5 as f32,
                        hi: s.p99_5 as f32,
                    };
                    Self::centred(clip, s.mean, 1.0 / s.std.max(MIN_STD))
                }
                None => Self::scaling_only(slope, inter),
            },
            Normalization::None => Self::scaling_only(slope, inter),
        }
    }

    /// `v · slope + inter`, nothing else.
    fn scaling_only(slope: f64, inter: f64) -> Self {
        Self::centred(Clip::None, -inter / slope, slope)
    }
}

/// A whole case in its stored type: images, label map, and per channel the map to normalised intensities.
pub struct StoredCase {
    image: StoredImage,
    labels: Labels,
    maps: Vec<ChannelMap>,
}

impl StoredCase {
    /// Wraps a decoded case; for per-volume z-scoring this reads every channel once for its statistics.
    pub fn new(image: StoredImage, labels: Labels, preprocessing: &Preprocessing) -> Self {
        let maps = (0..image.channels())
            .map(|c| {
                let (slope, inter) = image.channel_info(c).map_or((1.0, 0.0), |i| (i.slope, i.inter));
                let n = &preprocessing.normalization;
                match image.stored {
                    StoredType::U8 => ChannelMap::new::<u8>(channel(&image, c), slope, inter, c, n),
                    StoredType::I8 => ChannelMap::new::<i8>(channel(&image, c), slope, inter, c, n),
                    StoredType::U16 => ChannelMap::new::<u16>(channel(&image, c), slope, inter, c, n),
                    StoredType::I16 => ChannelMap::new::<i16>(channel(&image, c), slope, inter, c, n),
                }
            })
            .collect();
        Self { image, labels, maps }
    }

    /// Cuts channel `c` as type `T` (the stored type) with `transform`, into `out`.
    fn cut<T: StoredValue>(
        &self,
        c: usize,
        origin: [isize; 3],
        size: [usize; 3],
        transform: &PatchTransform,
        out: &mut [f32],
    ) {
        let (src, map) = (channel::<T>(&self.image, c), self.maps[c]);
        let (scale, shift) = transform.intensity.unwrap_or((1.0, 0.0));
        // The f32 path pads with the normalised 0, then augments it: 0 · scale + shift.
        let padded = match transform.intensity {
            Some(_) => 0.0 * scale + shift,
            None => 0.0,
        };
        // Normalised value (x − centre)·gain + offset, then ·scale + shift: one multiply-add after centring.
        let a = (map.gain * f64::from(scale)) as f32;
        let b = (map.offset * f64::from(scale) + f64::from(shift)) as f32;
        let (shape, g) = (self.image.shape, &transform.geometry);
        match map.clip {
            Clip::None => {
                let centre = map.centre;
                crop_transformed_filled(src, shape, origin, size, g, padded, |v| (v.to_f32() - centre) * a + b, out);
            }
            Clip::Scaled { slope, inter, lo, hi } => {
                let centre = map.centre;
                let f = |v: T| ((v.to_f32() * slope + inter).clamp(lo, hi) - centre) * a + b;
                crop_transformed_filled(src, shape, origin, size, g, padded, f, out);
            }
        }
    }
}

/// Channel `c` of `image` as `T`; empty when `T` is not its stored type (callers dispatch on it first).
fn channel<T: StoredValue>(image: &StoredImage, c: usize) -> &[T] {
    image.channel::<T>(c).unwrap_or_default()
}

impl CaseView for StoredCase {
    fn shape(&self) -> [usize; 3] {
        self.image.shape
    }
    fn channels(&self) -> usize {
        self.image.channels()
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn image_patch(&mut self, origin: [isize; 3], size: [usize; 3]) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; voxel_count(size) * self.channels()];
        self.augmented_patch(origin, size, &PatchTransform::default(), &mut out)?;
        Ok(out)
    }
    fn augmented_patch(
        &mut self,
        origin: [isize; 3],
        size: [usize; 3],
        transform: &PatchTransform,
        out: &mut [f32],
    ) -> Result<()> {
        let n = voxel_count(size);
        for (c, dst) in out.chunks_exact_mut(n).enumerate().take(self.channels()) {
            match self.image.stored {
                StoredType::U8 => self.cut::<u8>(c, origin, size, transform, dst),
                StoredType::I8 => self.cut::<i8>(c, origin, size, transform, dst),
                StoredType::U16 => self.cut::<u16>(c, origin, size, transform, dst),
                StoredType::I16 => self.cut::<i16>(c, origin, size, transform, dst),
            }
        }
        Ok(())
    }
    fn resident_bytes(&self) -> u64 {
        self.image.resident_bytes() + (self.labels.data.len() * 2) as u64
    }
    fn recycle(self: Box<Self>) {
        crate::nifti::give_back_f32(self.image.into_storage());
        crate::nifti::give_back_u16(self.labels.data);
    }
}
