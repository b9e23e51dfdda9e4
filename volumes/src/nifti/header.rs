//! A validated NIfTI-1/2 header: what the voxel decoder and `voxplan inspect` need, with nibabel's
//! load-time fix-ups applied and every size computed with checked arithmetic.

use std::path::Path;

use super::affine::best_affine;
use super::datatype::DataType;
use super::raw::{Endian, NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE, RawHeader};
use super::{nifti1, nifti2};
use crate::error::{Result, VolumeError};
use crate::volume::{Affine, spacing_of};

/// Highest rank voxplan accepts: x, y, z and channels (a 5th axis, dim5 > 1, holds vectors/tensors).
const MAX_RANK: usize = 5;
/// The NIfTI xform codes nibabel recognises (0 unknown … 5 template); others are reset to 0 as nibabel does.
const VALID_XFORM_CODES: std::ops::RangeInclusive<i32> = 0..=5;

/// A NIfTI header, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    pub endian: Endian,
    /// Voxels follow the header in the same file (`n+1`/`n+2`); otherwise they are in the `.img`.
    pub single_file: bool,
    /// `dim[1..=dim[0]]` exactly as stored (trailing unit dimensions included).
    pub dims: Vec<usize>,
    /// Spatial shape `[nx, ny, nz]`, 1 for missing axes.
    pub shape: [usize; 3],
    /// Size of the 4th axis (channels or time points), 1 for a 3-D image.
    pub channels: usize,
    pub datatype: DataType,
    /// `pixdim`, after nibabel's fixes (qfac ±1, negative spatial pixdims made positive, zeros made 1).
    pub pixdim: [f64; 8],
    pub qform_code: i32,
    pub sform_code: i32,
    /// Slope actually applied to stored values: 1 when the header's slope is 0 or not finite.
    pub scl_slope: f64,
    /// Intercept actually applied: 0 when the slope is not used.
    pub scl_inter: f64,
    /// Byte offset of the first voxel in the data file.
    pub vox_offset: u64,
    pub description: String,
    affine: Affine,
}

impl Header {
    /// Voxel-to-world affine (sform > qform > base), as nibabel's `img.affine`.
    pub fn affine(&self) -> Affine {
        self.affine
    }

    /// Voxel size along each voxel axis in millimetres (column norms of the affine).
    pub fn spacing(&self) -> [f64; 3] {
        spacing_of(&self.affine)
    }

    /// Number of voxels over all channels (cannot overflow: checked when the header was parsed).
    pub fn voxel_count(&self) -> usize {
        self.shape.iter().product::<usize>() * self.channels
    }

    /// Bytes of voxel data the header promises.
    pub fn data_bytes(&self) -> usize {
        self.voxel_count() * self.datatype.size()
    }

    /// True when stored values are multiplied/offset on reading.
    pub fn is_scaled(&self) -> bool {
        self.scl_slope != 1.0 || self.scl_inter != 0.0
    }
}

/// Which header a file starts with, decided by `sizeof_hdr` in either byte order (nibabel's rule).
pub fn detect(path: &Path, bytes: &[u8]) -> Result<(u8, Endian)> {
    let Some(first) = bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("{} bytes is too short for a NIfTI header", bytes.len()),
        });
    };
    let (le, be) = (i32::from_le_bytes(first), i32::from_be_bytes(first));
    match (le, be) {
        (348, _) => Ok((1, Endian::Little)),
        (_, 348) => Ok((1, Endian::Big)),
        (540, _) => Ok((2, Endian::Little)),
        (_, 540) => Ok((2, Endian::Big)),
        _ => Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("sizeof_hdr is {le} (little endian) / {be} (big endian); expected 348 or 540"),
        }),
    }
}

/// Bytes to read before [`parse`] can run: the header proper plus nothing else.
pub fn header_size(version: u8) -> usize {
    if version == 1 { NIFTI1_HEADER_SIZE } else { NIFTI2_HEADER_SIZE }
}

/// Parses and validates a header from the first bytes of a file (after decompression).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let (version, endian) = detect(path, bytes)?;
    let size = header_size(version);
    if bytes.len() < size {
        return Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("NIfTI-{version} header needs {size} bytes, file has {}", bytes.len()),
        });
    }
    let raw = if version == 1 { nifti1::parse(path, bytes, endian)? } else { nifti2::parse(path, bytes, endian)? };
    validate(path, raw)
}

/// Applies nibabel's fixes and voxplan's limits to the raw fields.
pub fn validate(path: &Path, mut raw: RawHeader) -> Result<Header> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let unsupported = |problem: String| VolumeError::Unsupported { path: path.to_path_buf(), problem };

    let rank = raw.dim[0];
    if !(1..=7).contains(&rank) {
        return Err(bad(format!("dim[0] = {rank}; the rank must be 1 to 7")));
    }
    let rank = rank as usize;
    let mut dims = Vec::with_capacity(rank);
    for (axis, &d) in raw.dim[1..=rank].iter().enumerate() {
        if d <= 0 {
            return Err(bad(format!("dim[{}] = {d}; dimensions must be positive", axis + 1)));
        }
        dims.push(usize::try_from(d).map_err(|_| bad(format!("dim[{}] = {d} does not fit in memory", axis + 1)))?);
    }
    if rank > MAX_RANK {
        return Err(unsupported(format!("{rank}-D image {dims:?}; voxplan reads at most 4-D (x, y, z, channels)")));
    }
    let datatype = DataType::from_code(path, raw.datatype)?;
    let kept = dims.iter().rposition(|&d| d != 1).map_or(1, |last| last + 1);
    if kept > 4 {
        return Err(unsupported(format!("5-D image {dims:?} (vectors per voxel); voxplan reads at most 4-D")));
    }
    let dim_or_1 = |i: usize| if i < kept { dims[i] } else { 1 };
    let shape = [dim_or_1(0), dim_or_1(1), dim_or_1(2)];
    let channels = dim_or_1(3);
    shape
        .iter()
        .chain(std::iter::once(&channels))
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(datatype.size()))
        .filter(|&bytes| bytes <= isize::MAX as usize / 4)
        .ok_or_else(|| bad(format!("dimensions {dims:?} of {datatype} overflow the addressable size")))?;

    // nibabel's load-time fixes (Nifti1Header._chk_*): they change the affine, so apply them first.
    if raw.pixdim[0] != 1.0 && raw.pixdim[0] != -1.0 {
        raw.pixdim[0] = 1.0;
    }
    for p in &mut raw.pixdim[1..4] {
        if *p == 0.0 {
            *p = 1.0;
        } else {
            *p = p.abs();
        }
    }
    for code in [&mut raw.qform_code, &mut raw.sform_code] {
        if !VALID_XFORM_CODES.contains(code) {
            *code = 0;
        }
    }

    let (scl_slope, scl_inter) = if raw.scl_slope == 0.0 || !raw.scl_slope.is_finite() {
        (1.0, 0.0)
    } else if !raw.scl_inter.is_finite() {
        return Err(bad(format!("scl_slope {} is valid but scl_inter is {}", raw.scl_slope, raw.scl_inter)));
    } else {
        (raw.scl_slope, raw.scl_inter)
    };

    let vox_offset = raw.vox_offset;
    if !vox_offset.is_finite() || vox_offset < 0.0 || vox_offset > u64::MAX as f64 {
        return Err(bad(format!("vox_offset {vox_offset} is not a byte offset")));
    }
    let vox_offset = vox_offset as u64;
    let header_end = header_size(raw.version) as u64;
    if raw.single_file && vox_offset < header_end {
        return Err(bad(format!("vox_offset {vox_offset} lies inside the {header_end}-byte header")));
    }

    let affine = best_affine(path, &raw, rank)?;
    if affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(bad("the affine holds NaN or infinite values".into()));
    }
    Ok(Header {
        version: raw.version,
        endian: raw.endian,
        single_file: raw.single_file,
        dims,
        shape,
        channels,
        datatype,
        pixdim: raw.pixdim,
        qform_code: raw.qform_code,
        sform_code: raw.sform_code,
        scl_slope,
        scl_inter,
        vox_offset,
        description: raw.descrip,
        affine,
    })
}
