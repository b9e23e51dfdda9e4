//! Analyze 7.5 headers (348 bytes, no NIfTI magic), read as nibabel's `nib.load` reads them: as SPM2
//! Analyze (`Spm2AnalyzeImage`, the first of nibabel's Analyze classes whose sniff accepts such a header).
//!
//! What differs from NIfTI-1 at the same offsets: no qform/sform (the affine comes from SPM's `origin`,
//! see `affine::spm_origin_affine`), scaling by SPM2's rules ([`spm2_scaling`]), and only Analyze's
//! datatypes. Field offsets are those of nibabel's `analyze.header_dtype` (dbh.h).

use std::path::Path;

use super::fields::Fields;
use super::raw::{Endian, Format, NIFTI1_HEADER_SIZE, RawHeader, c_string};
use crate::error::{Result, VolumeError};

/// Datatype codes Analyze 7.5 defines with a size (0 none, 1 binary and 255 "all" have none).
const ANALYZE_TYPES: [i16; 7] = [2, 4, 8, 16, 32, 64, 128];

pub fn parse(path: &Path, bytes: &[u8], endian: Endian) -> Result<RawHeader> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let f = Fields::<NIFTI1_HEADER_SIZE>::new(bytes, endian)
        .ok_or_else(|| bad(format!("Analyze 7.5 header needs {NIFTI1_HEADER_SIZE} bytes, file has {}", bytes.len())))?;
    let datatype = f.i16(70);
    if !ANALYZE_TYPES.contains(&datatype) {
        let what = if [0, 1, 255].contains(&datatype) { "has no voxel size" } else { "is not an Analyze 7.5 type" };
        return Err(bad(format!("Analyze 7.5 header (no NIfTI magic): datatype {datatype} {what}")));
    }
    let (scl_slope, scl_inter) = spm2_scaling(&f);
    let origin = f.i16s::<5>(253);
    Ok(RawHeader {
        format: Format::Analyze,
        endian,
        dim: f.i16s::<8>(40).map(i64::from),
        datatype,
        pixdim: f.f32s(76),
        vox_offset: f64::from(f.f32(108)),
        scl_slope,
        scl_inter,
        qform_code: 0,
        sform_code: 0,
        quatern: [0.0; 3],
        qoffset: [0.0; 3],
        srow: [[0.0; 4]; 3],
        origin: [origin[0], origin[1], origin[2]],
        descrip: c_string(&f.raw()[148..228]),
        magic_single: false,
        has_extensions: false,
    })
}

/// nibabel's `Spm2AnalyzeHeader.get_slope_inter` (after SPM2's `spm_vol_ana.m`): the slope in `funused1`
/// when finite and non-zero, with the intercept in `funused2` (0 if not finite); else a slope and intercept
/// mapping `glmin..glmax` onto `cal_min..cal_max` when both ranges are non-zero; else none, returned as
/// (1, 0). The arithmetic follows numpy's types (int32 and float32 differences, then f64).
fn spm2_scaling(f: &Fields<'_, NIFTI1_HEADER_SIZE>) -> (f64, f64) {
    let slope = f64::from(f.f32(112));
    if slope.is_finite() && slope != 0.0 {
        let inter = f64::from(f.f32(116));
        return (slope, if inter.is_finite() { inter } else { 0.0 });
    }
    let (cal_max, cal_min, glmax, glmin) = (f.f32(124), f.f32(128), f.i32(140), f.i32(144));
    let unscaled = glmax.wrapping_sub(glmin);
    let scaled = cal_max - cal_min;
    if unscaled != 0 && scaled != 0.0 {
        let slope = f64::from(scaled) / f64::from(unscaled);
        return (slope, f64::from(cal_min) - slope * f64::from(glmin));
    }
    (1.0, 0.0)
}
