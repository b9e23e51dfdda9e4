//! The voxel-to-world affine, chosen exactly as nibabel's `get_best_affine`: sform if its code is set, else
//! the qform quaternion, else the centred, x-flipped "base" affine of Analyze; for Analyze 7.5 headers
//! SPM's origin affine.
//!
//! Hand-written rather than the `nifti` crate's `nalgebra_affine` feature: that `qform_affine` panics on
//! negative pixdims or a bad qfac (voxplan must return errors, never panic) and pulls in nalgebra.

// 3×3/4×4 matrix algebra reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use std::path::Path;

use super::raw::{Format, RawHeader};
use crate::error::{Result, VolumeError};
use crate::volume::Affine;

/// nibabel's `quaternion_threshold`: three epsilons of the type the header stores (float32 in NIfTI-1,
/// float64 in NIfTI-2). A |w|² below it is rounding noise of a 180° rotation (w = 0), not an invalid
/// quaternion.
fn quatern_w2_tolerance(format: Format) -> f64 {
    if format == Format::Nifti2 { 3.0 * f64::EPSILON } else { 3.0 * f32::EPSILON as f64 }
}

/// The best affine of a header whose pixdims and codes have already had nibabel's load-time fixes applied.
pub fn best_affine(path: &Path, h: &RawHeader, rank: usize) -> Result<Affine> {
    if h.format == Format::Analyze {
        Ok(spm_origin_affine(h))
    } else if h.sform_code != 0 {
        Ok(sform(h))
    } else if h.qform_code != 0 {
        qform(path, h)
    } else {
        Ok(base_affine(h, rank))
    }
}

/// The `srow_*` rows as a 4×4 matrix.
pub fn sform(h: &RawHeader) -> Affine {
    [h.srow[0], h.srow[1], h.srow[2], [0.0, 0.0, 0.0, 1.0]]
}

/// The quaternion affine: rotation from (b, c, d) with w filled in, times pixdim zooms, the third negated
/// when qfac (pixdim[0]) is -1.
pub fn qform(path: &Path, h: &RawHeader) -> Result<Affine> {
    let [b, c, d] = h.quatern;
    let bad = |what: &str| VolumeError::BadHeader {
        path: path.to_path_buf(),
        problem: format!("qform quaternion (b, c, d) = ({b}, {c}, {d}) {what}"),
    };
    if !(b.is_finite() && c.is_finite() && d.is_finite()) {
        // nibabel computes a NaN affine from it, which voxplan refuses (docs/nifti.md).
        return Err(bad("is not finite"));
    }
    let w2 = 1.0 - (b * b + c * c + d * d);
    let w = if w2.abs() < quatern_w2_tolerance(h.format) {
        0.0
    } else if w2 < 0.0 {
        return Err(bad("has a norm above 1"));
    } else {
        w2.sqrt()
    };
    let r = quaternion_to_rotation([w, b, c, d]);
    let qfac = if h.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
    let zooms = [h.pixdim[1], h.pixdim[2], h.pixdim[3] * qfac];
    let mut out = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = r[i][j] * zooms[j];
        }
        out[i][3] = h.qoffset[i];
    }
    out[3][3] = 1.0;
    Ok(out)
}

/// Rotation matrix of a (w, x, y, z) quaternion, normalised as nibabel's `quat2mat` does.
pub fn quaternion_to_rotation(q: [f64; 4]) -> [[f64; 3]; 3] {
    let [w, x, y, z] = q;
    let n = w * w + x * x + y * y + z * z;
    if n < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / n;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [[1.0 - (yy + zz), xy - wz, xz + wy], [xy + wz, 1.0 - (xx + zz), yz - wx], [xz - wy, yz + wx, 1.0 - (xx + yy)]]
}

/// Analyze's affine when neither form is set: zooms on the diagonal, x flipped (radiological), origin at
/// the volume centre (nibabel `shape_zoom_affine(dim, pixdim, x_flip=True)`).
pub fn base_affine(h: &RawHeader, rank: usize) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for i in 0..3 {
        let (n, zoom) = if i < rank { (h.dim[i + 1] as f64, h.pixdim[i + 1]) } else { (1.0, 1.0) };
        let zoom = if i == 0 { -zoom } else { zoom };
        out[i][i] = zoom;
        out[i][3] = -(n - 1.0) / 2.0 * zoom;
    }
    out[3][3] = 1.0;
    out
}

/// nibabel's `Spm99AnalyzeHeader.get_origin_affine`: zooms on the diagonal with x flipped, translations
/// from SPM's 1-based `origin` when it is set and within (-dim, 2·dim) on each axis, else from the volume
/// centre. It uses `dim[1..=3]` and `pixdim[1..=3]` whatever the rank, in int16 arithmetic as numpy does.
pub fn spm_origin_affine(h: &RawHeader) -> Affine {
    let dims: [i16; 3] = std::array::from_fn(|i| h.dim[i + 1] as i16);
    let o = h.origin;
    let usable =
        o.iter().any(|&v| v != 0) && (0..3).all(|i| o[i] > dims[i].wrapping_neg() && o[i] < dims[i].wrapping_mul(2));
    let mut out = [[0.0; 4]; 4];
    for i in 0..3 {
        let centre = if usable { f64::from(o[i].wrapping_sub(1)) } else { f64::from(dims[i].wrapping_sub(1)) / 2.0 };
        let zoom = if i == 0 { -h.pixdim[1] } else { h.pixdim[i + 1] };
        out[i][i] = zoom;
        out[i][3] = -centre * zoom;
    }
    out[3][3] = 1.0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_turn_quaternion_flips_two_axes() {
        let r = quaternion_to_rotation([0.0, 1.0, 0.0, 0.0]);
        assert_eq!(r, [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]);
    }

    #[test]
    fn base_affine_matches_nibabel_docstring() {
        // nibabel AnalyzeHeader.get_base_affine docstring: shape (3, 5, 7), zooms (3, 2, 1).
        let h = RawHeader {
            format: Format::Nifti1,
            endian: super::super::raw::Endian::Little,
            dim: [3, 3, 5, 7, 1, 1, 1, 1],
            datatype: 2,
            pixdim: [1.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            origin: [0; 3],
            descrip: String::new(),
            magic_single: true,
            has_extensions: false,
        };
        let a = base_affine(&h, 3);
        assert_eq!(a, [[-3.0, 0.0, 0.0, 3.0], [0.0, 2.0, 0.0, -4.0], [0.0, 0.0, 1.0, -3.0], [0.0, 0.0, 0.0, 1.0]]);
        // nibabel Spm99AnalyzeHeader.get_origin_affine docstring: the same without an origin, then with
        // origin (3, 4, 5) (1-based).
        let spm = RawHeader { format: Format::Analyze, ..h };
        assert_eq!(spm_origin_affine(&spm), a);
        let spm = RawHeader { origin: [3, 4, 5], ..spm };
        assert_eq!(
            spm_origin_affine(&spm),
            [[-3.0, 0.0, 0.0, 6.0], [0.0, 2.0, 0.0, -6.0], [0.0, 0.0, 1.0, -4.0], [0.0, 0.0, 0.0, 1.0]]
        );
    }
}
