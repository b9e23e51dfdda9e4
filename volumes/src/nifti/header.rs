//! A validated NIfTI-1/2 header: what the voxel decoder and `voxplan inspect` need, with nibabel's
//! load-time fix-ups applied and every size computed with checked arithmetic.

use std::path::Path;

use super::affine::best_affine;
use super::datatype::DataType;
use super::files::{Container, container};
use super::raw::{Endian, Format, NIFTI2_HEADER_SIZE, RawHeader};
use super::{analyze, format, nifti1, nifti2};
use crate::error::{Result, VolumeError};
use crate::volume::{Affine, spacing_of};

/// The NIfTI xform codes nibabel recognises (0 unknown … 5 template); others are reset to 0 as nibabel does.
const VALID_XFORM_CODES: std::ops::RangeInclusive<i32> = 0..=5;

/// A NIfTI header, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// 1 or 2; 0 for an Analyze 7.5 header.
    pub version: u8,
    pub format: Format,
    pub endian: Endian,
    /// Voxels follow the header in the same file (a `.nii`); otherwise they are in the `.img`.
    pub single_file: bool,
    /// The extender after the header flags extensions (checked by `extensions::check`).
    pub has_extensions: bool,
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

/// Bytes of the header plus its 4-byte extender, for either version: what [`parse`] wants to see.
pub const HEADER_PREFIX: usize = NIFTI2_HEADER_SIZE + 4;

/// Parses and validates a header from the first bytes of a file (after decompression). The file name
/// decides where the voxels are ([`Container`]) and whether a header without NIfTI magic may be Analyze.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let container = container(path);
    let (format, endian) = format::detect(path, bytes, container == Container::Pair)?;
    let raw = match format {
        Format::Nifti1 => nifti1::parse(path, bytes)?,
        Format::Nifti2 => nifti2::parse(path, bytes, endian)?,
        Format::Analyze => analyze::parse(path, bytes, endian)?,
    };
    validate(path, raw, container)
}

/// Applies nibabel's fixes and voxplan's limits to the raw fields.
pub fn validate(path: &Path, mut raw: RawHeader, container: Container) -> Result<Header> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let unsupported = |problem: String| VolumeError::Unsupported { path: path.to_path_buf(), problem };

    let rank = raw.dim[0];
    if rank == 0 {
        // nibabel reads this as an empty array of shape (0,); there is nothing to train on.
        return Err(bad("dim[0] = 0: the header describes no voxels".into()));
    }
    if !(1..=7).contains(&rank) {
        let order = raw.endian.name();
        return Err(bad(format!(
            "dim[0] = {rank} read {order} endian (the byte order guessed from dim[0]); the rank must be 1 to 7"
        )));
    }
    let rank = rank as usize;
    let mut dims = Vec::with_capacity(rank);
    for (axis, &d) in raw.dim[1..=rank].iter().enumerate() {
        if d <= 0 {
            return Err(bad(format!("dim[{}] = {d}; dimensions must be positive", axis + 1)));
        }
        dims.push(usize::try_from(d).map_err(|_| bad(format!("dim[{}] = {d} does not fit in memory", axis + 1)))?);
    }
    let datatype = DataType::from_code(path, raw.datatype)?;
    // Trailing unit dimensions carry nothing: a 7-D header of [x, y, z, 1, 1, 1, 1] is a 3-D image.
    let kept = dims.iter().rposition(|&d| d != 1).map_or(1, |last| last + 1);
    if kept > 4 {
        let what = if kept == 5 { " (vectors per voxel)" } else { "" };
        return Err(unsupported(format!(
            "{kept}-D image {dims:?}{what}; voxplan reads at most 4-D (x, y, z, channels)"
        )));
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

    let (scl_slope, scl_inter) = if raw.format == Format::Analyze {
        // Already resolved by SPM2's rules, which never reject an intercept.
        (raw.scl_slope, raw.scl_inter)
    } else if raw.scl_slope == 0.0 || !raw.scl_slope.is_finite() {
        (1.0, 0.0)
    } else if !raw.scl_inter.is_finite() {
        return Err(bad(format!("scl_slope {} is valid but scl_inter is {}", raw.scl_slope, raw.scl_inter)));
    } else {
        (raw.scl_slope, raw.scl_inter)
    };

    // nibabel scales integers in the narrowest float type that holds the scaled extremes of the type
    // (`int_scinter_ftype`) and raises when none does: a NaN slope (Analyze gl/cal) or one so large that
    // even float64 overflows.
    let overflows = |(lo, hi): (f64, f64)| ![lo, hi].iter().all(|v| (v * scl_slope + scl_inter).is_finite());
    if (scl_slope, scl_inter) != (1.0, 0.0) && datatype.integer_range().is_some_and(overflows) {
        return Err(bad(format!(
            "scaling {datatype} by slope {scl_slope} and intercept {scl_inter} gives non-finite values even in float64"
        )));
    }

    let single_file = match container {
        Container::Single => true,
        Container::Pair => false,
        Container::ByMagic => raw.magic_single,
    };
    let vox_offset = checked_vox_offset(&raw, single_file).map_err(bad)?;
    let affine = best_affine(path, &raw, rank)?;
    if affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(bad("the affine holds NaN or infinite values".into()));
    }
    Ok(Header {
        version: raw.format.version(),
        format: raw.format,
        endian: raw.endian,
        single_file,
        has_extensions: raw.has_extensions,
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

/// `vox_offset` as a byte offset. nibabel refuses a single-file magic (`n+1`/`n+2`) with an offset inside
/// the header and extender (352 / 544 bytes), 0 excepted (`Nifti1Header._chk_offset`); voxplan refuses 0
/// too when the voxels are in the header's own file (nibabel would read header bytes as voxels).
fn checked_vox_offset(raw: &RawHeader, single_file: bool) -> std::result::Result<u64, String> {
    let v = raw.vox_offset;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("vox_offset {v} is not a byte offset"));
    }
    let min = (raw.format.header_size() + 4) as f64;
    if raw.magic_single && v != 0.0 && v < min {
        return Err(format!(
            "vox_offset {v} is too low for a single-file {}: voxels start at {min} or later",
            raw.format.name()
        ));
    }
    if single_file && v < min {
        return Err(format!(
            "vox_offset {v} lies inside the {}-byte header and its 4-byte extender",
            raw.format.header_size()
        ));
    }
    Ok(v as u64)
}
