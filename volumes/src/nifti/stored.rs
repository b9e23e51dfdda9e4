//! Images kept in their stored type: the loader's decode path.
//!
//! Converting a BraTS int16 channel to `f32` is a memory-bound pass over 54 MB that cost 2–4 ms of a
//! 12–15 ms decode here (see docs/benchmarks.md), and the `f32` copy doubles the case's memory. A patch
//! only ever needs a few percent of a case's voxels, so [`read_stored`] inflates the files straight into
//! one buffer and stops there (big-endian files get an in-place byte swap, nothing else); the scaling
//! (`scl_slope`/`scl_inter`, kept per channel as a linear map), the normalisation and the augmentation are
//! applied later in one per-voxel map while a patch is cut (`crate::stored_case`).
//!
//! Only types that `f32` holds exactly and that gain from staying narrow are kept: unsigned and signed 8
//! and 16-bit integers. Everything else (32/64-bit, floats) takes the `f32` path of [`super::read_volume`].

use std::path::Path;

use super::buffer::reuse_or_zeroed_f32;
use super::datatype::DataType;
use super::header::Header;
use super::raw::Endian;
use super::read::{read_header, read_stored_bytes, stored_room};
use crate::error::{Result, VolumeError};
use crate::volume::Affine;

/// Stored voxels start at a multiple of this many bytes in the buffer: the widest kept type.
const STORED_ALIGN: usize = 2;

/// A voxel type kept as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    U8,
    I8,
    U16,
    I16,
}

impl StoredType {
    /// The kept type for a NIfTI datatype, `None` for types decoded to `f32` instead.
    pub fn of(datatype: DataType) -> Option<Self> {
        match datatype {
            DataType::U8 => Some(Self::U8),
            DataType::I8 => Some(Self::I8),
            DataType::U16 => Some(Self::U16),
            DataType::I16 => Some(Self::I16),
            _ => None,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
        }
    }
}

/// A Rust type holding one [`StoredType`]; lets code that walks voxels be written once, generically.
pub trait StoredValue: bytemuck::Pod + Send + Sync {
    const TYPE: StoredType;
    /// Exact: every kept type fits in `f32`'s 24-bit mantissa.
    fn to_f32(self) -> f32;
    fn to_i64(self) -> i64;
}

macro_rules! stored_value {
    ($t:ty, $variant:ident) => {
        impl StoredValue for $t {
            const TYPE: StoredType = StoredType::$variant;
            fn to_f32(self) -> f32 {
                f32::from(self)
            }
            fn to_i64(self) -> i64 {
                i64::from(self)
            }
        }
    };
}
stored_value!(u8, U8);
stored_value!(i8, I8);
stored_value!(u16, U16);
stored_value!(i16, I16);

/// One channel of a [`StoredImage`]: where its voxels start and nibabel's map from stored value to
/// intensity, `value · slope + inter` (the header's scaling after nibabel's rules: slope 1 and inter 0 when
/// the slope is 0 or not finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredChannel {
    /// Index of the channel's first voxel in the buffer viewed as the stored type.
    start: usize,
    pub slope: f64,
    pub inter: f64,
}

/// A multi-channel image in its stored type: one or several files (3-D per channel, or 4-D) decoded into
/// one buffer. The buffer is `f32`-typed only so that it comes from, and goes back to, the decode pool
/// (`super::buffer`) that `f32` decodes share; its bytes are the stored voxels.
#[derive(Debug)]
pub struct StoredImage {
    storage: Vec<f32>,
    pub stored: StoredType,
    channels: Vec<StoredChannel>,
    /// `(x, y, z)` voxels.
    pub shape: [usize; 3],
    pub affine: Affine,
}

impl StoredImage {
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Channel `c`'s scaling and place.
    pub fn channel_info(&self, c: usize) -> Option<StoredChannel> {
        self.channels.get(c).copied()
    }

    /// Channel `c`'s voxels (x fastest), or `None` when `T` is not the stored type or `c` is out of range.
    pub fn channel<T: StoredValue>(&self, c: usize) -> Option<&[T]> {
        if T::TYPE != self.stored {
            return None;
        }
        let info = self.channels.get(c)?;
        let n = self.shape.iter().product::<usize>();
        // Never fails: f32's size and alignment are multiples of every kept type's.
        let all: &[T] = bytemuck::cast_slice(&self.storage);
        all.get(info.start..info.start + n)
    }

    /// Bytes held: the whole decode buffer (headers' lead and alignment padding are a few hundred bytes).
    pub fn resident_bytes(&self) -> u64 {
        (self.storage.len() * std::mem::size_of::<f32>()) as u64
    }

    /// The buffer, for the decode pool (`crate::nifti::give_back_f32`).
    pub fn into_storage(self) -> Vec<f32> {
        self.storage
    }
}

/// The type every image of a case is kept in, when they all share one kept type; `None` sends the case
/// down the `f32` path.
pub fn common_stored_type(headers: &[Header]) -> Option<StoredType> {
    let first = StoredType::of(headers.first()?.datatype)?;
    headers.iter().all(|h| StoredType::of(h.datatype) == Some(first)).then_some(first)
}

/// Bytes [`read_stored`] will hold for images with these headers (the buffer, rounded to whole `f32`s).
pub fn stored_bytes(headers: &[Header]) -> Option<u64> {
    let mut total = 0usize;
    for h in headers {
        total = total.checked_add(region_bytes(h)?)?;
    }
    Some((total.div_ceil(4) * 4) as u64)
}

/// One file's share of the buffer: its decode room, rounded so that the next file's region starts aligned.
fn region_bytes(header: &Header) -> Option<usize> {
    stored_room(header, STORED_ALIGN)?.checked_next_multiple_of(STORED_ALIGN)
}

/// Decodes the images `paths` (one or more files, each 3-D or 4-D, channels in order) in their stored type
/// into one buffer from this thread's decode pool. `Ok(None)` when they do not all share a kept type
/// ([`StoredType::of`]): the caller reads them as `f32` instead. Files must share one grid
/// ([`VolumeError::Mismatch`] otherwise); every other error is [`super::read_volume`]'s, naming the file.
pub fn read_stored(paths: &[&Path]) -> Result<Option<StoredImage>> {
    let headers = paths.iter().map(|p| read_header(p)).collect::<Result<Vec<_>>>()?;
    let (Some(first), Some(stored)) = (headers.first(), common_stored_type(&headers)) else {
        return Ok(None);
    };
    let (shape, affine) = (first.shape, first.affine());
    for (p, h) in paths.iter().zip(&headers) {
        if h.shape != shape {
            return Err(VolumeError::Mismatch {
                path: p.to_path_buf(),
                reference: paths[0].to_path_buf(),
                problem: format!("channel shape {:?} vs {:?}", h.shape, shape),
            });
        }
    }
    let overflow = || VolumeError::BadHeader {
        path: paths[0].to_path_buf(),
        problem: "voxel data size of the case overflows".into(),
    };
    let bytes = stored_bytes(&headers).ok_or_else(overflow)?;
    let floats = usize::try_from(bytes / 4).map_err(|_| overflow())?;
    let mut storage = reuse_or_zeroed_f32(floats);
    let mut channels = Vec::new();
    let mut at = 0usize;
    {
        let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut storage);
        for (p, h) in paths.iter().zip(&headers) {
            let room = region_bytes(h).ok_or_else(overflow)?;
            let region = &mut buf[at..at + room];
            let voxels_at = at + read_stored_bytes(p, h, region, STORED_ALIGN)?;
            let data = &mut buf[voxels_at..voxels_at + h.data_bytes()];
            if h.endian != Endian::NATIVE && stored.size() > 1 {
                swap_pairs(data);
            }
            let n = h.voxel_count() / h.channels.max(1);
            for c in 0..h.channels {
                let start = voxels_at / stored.size() + c * n;
                channels.push(StoredChannel { start, slope: h.scl_slope, inter: h.scl_inter });
            }
            at += room;
        }
    }
    Ok(Some(StoredImage { storage, stored, channels, shape, affine }))
}

/// Reverses the byte order of every 2-byte value in place.
fn swap_pairs(data: &mut [u8]) {
    // The region starts at an even offset of a 4-aligned buffer and holds whole values, so this view of it
    // as u16 never fails; a chunked byte swap stays as the fallback rather than a panic.
    match bytemuck::try_cast_slice_mut::<u8, u16>(data) {
        Ok(values) => values.iter_mut().for_each(|v| *v = v.swap_bytes()),
        Err(_) => data.chunks_exact_mut(2).for_each(|p| p.swap(0, 1)),
    }
}

/// Mean and population standard deviation of stored values, in one pass of exact integer sums (a 16-bit
/// square is below 2^31, so `i64` holds the sum of squares of 2^32 voxels; the `f32` path's f64 sums of the
/// same integers are exact too, so unscaled cases get the very same statistics). Scaled intensities
/// `v · slope + inter` have mean `mean · slope + inter` and std `std · |slope|`.
pub fn stored_mean_std<T: StoredValue>(values: &[T]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let (sum, sum_sq) = values.iter().fold((0i64, 0i64), |(s, q), &v| {
        let v = v.to_i64();
        (s + v, q + v * v)
    });
    let n = values.len() as f64;
    let mean = sum as f64 / n;
    (mean, (sum_sq as f64 / n - mean * mean).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_a_two_pass_computation() {
        let values: Vec<i16> = (0..1000).map(|i| ((i * 37) % 401 - 200) as i16).collect();
        let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let mean = wide.iter().sum::<f64>() / 1000.0;
        let std = (wide.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 1000.0).sqrt();
        let (m, s) = stored_mean_std(&values);
        assert!((m - mean).abs() < 1e-9 && (s - std).abs() < 1e-9, "{m} {s} vs {mean} {std}");
    }

    #[test]
    fn only_narrow_integer_types_are_kept() {
        let kept: Vec<DataType> = DataType::ALL.into_iter().filter(|d| StoredType::of(*d).is_some()).collect();
        assert_eq!(kept, vec![DataType::U8, DataType::I8, DataType::U16, DataType::I16]);
        assert!(kept.iter().all(|d| StoredType::of(*d).is_some_and(|s| s.size() == d.size())));
    }
}
