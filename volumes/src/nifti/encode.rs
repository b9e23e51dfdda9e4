//! NIfTI-1 header bytes for the files voxplan writes (little endian, single file, voxels at byte 352).
//!
//! Hand-written: the `nifti` crate's writer exists only with its `ndarray_volumes` feature (ndarray
//! arrays in, several copies), and its header serialiser is private. The layout is nifti1.h's.

// 3×3/4×4 matrix algebra reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::affine::quaternion_to_rotation;
use super::datatype::DataType;
use super::raw::NIFTI1_HEADER_SIZE;
use crate::volume::{Affine, spacing_of};

/// Header plus the 4-byte "no extensions" extender: voxels start here.
pub const VOX_OFFSET: usize = NIFTI1_HEADER_SIZE + 4;
/// `NIFTI_XFORM_SCANNER_ANAT`: the affine maps to scanner (RAS+) millimetres.
const XFORM_SCANNER: i16 = 1;

/// The qform and sform codes a written file declares (nifti1.h: 0 unknown, 1 scanner, 2 aligned, 3
/// Talairach, 4 MNI, 5 template). A file made from another, such as a prediction of an input, keeps the
/// input's codes ([`XformCodes::of`]), so a viewer or registration tool reads both in the same space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XformCodes {
    pub qform: i16,
    pub sform: i16,
}

impl Default for XformCodes {
    /// Scanner coordinates in both: what voxplan's own files (phantoms) declare.
    fn default() -> Self {
        Self { qform: XFORM_SCANNER, sform: XFORM_SCANNER }
    }
}

impl XformCodes {
    /// The codes of a header read from disk (already limited to 0..=5 as nibabel does).
    pub fn of(header: &super::header::Header) -> Self {
        let code = |c: i32| i16::try_from(c).unwrap_or(0);
        Self { qform: code(header.qform_code), sform: code(header.sform_code) }
    }
}
/// `NIFTI_UNITS_MM`.
const UNITS_MM: u8 = 2;
/// A rotation recovered from the affine must be orthonormal to this tolerance to be stored as a qform;
/// otherwise (sheared affines) only the sform is written, as nibabel does.
const ORTHONORMAL_TOLERANCE: f64 = 1e-4;
/// Written into `descrip` so files can be traced back.
const DESCRIPTION: &[u8] = b"voxplan";

/// Little-endian field writer over a fixed header buffer.
struct Out([u8; VOX_OFFSET]);

impl Out {
    fn put(&mut self, at: usize, b: &[u8]) {
        self.0[at..at + b.len()].copy_from_slice(b);
    }
    fn i16(&mut self, at: usize, v: i16) {
        self.put(at, &v.to_le_bytes());
    }
    fn i32(&mut self, at: usize, v: i32) {
        self.put(at, &v.to_le_bytes());
    }
    fn f32(&mut self, at: usize, v: f64) {
        self.put(at, &(v as f32).to_le_bytes());
    }
}

/// The 352 bytes preceding the voxels of a `.nii` holding `dims` (x, y, z[, channels]) of `datatype`. The
/// affine goes into the sform and, when it is a rotation times zooms, the qform, each with its code from
/// `codes`; a form whose code is 0 is left empty, as readers ignore it (a sheared affine has no qform).
pub fn nifti1_header(dims: &[usize], datatype: DataType, affine: &Affine, codes: XformCodes) -> [u8; VOX_OFFSET] {
    let mut h = Out([0u8; VOX_OFFSET]);
    h.i32(0, NIFTI1_HEADER_SIZE as i32);
    h.i16(40, dims.len() as i16);
    for (i, &d) in dims.iter().enumerate() {
        h.i16(42 + 2 * i, i16::try_from(d).unwrap_or(i16::MAX));
    }
    for i in dims.len()..7 {
        h.i16(42 + 2 * i, 1);
    }
    h.i16(70, datatype.code());
    h.i16(72, (datatype.size() * 8) as i16);
    let zooms = spacing_of(affine);
    let q = quaternion_of(affine);
    h.f32(76, q.map_or(1.0, |q| q.qfac));
    for (i, z) in zooms.iter().enumerate() {
        h.f32(80 + 4 * i, *z);
    }
    for i in 3..7 {
        h.f32(80 + 4 * i, 1.0);
    }
    h.f32(108, VOX_OFFSET as f64);
    h.f32(112, 1.0); // scl_slope: values are stored unscaled
    h.put(123, &[UNITS_MM]);
    h.put(148, DESCRIPTION);
    if let Some(q) = q.filter(|_| codes.qform > 0) {
        h.i16(252, codes.qform);
        for (i, v) in q.bcd.iter().enumerate() {
            h.f32(256 + 4 * i, *v);
        }
        for i in 0..3 {
            h.f32(268 + 4 * i, affine[i][3]);
        }
    }
    if codes.sform > 0 {
        h.i16(254, codes.sform);
        for i in 0..3 {
            for j in 0..4 {
                h.f32(280 + 16 * i + 4 * j, affine[i][j]);
            }
        }
    }
    h.put(344, b"n+1\0");
    h.0
}

/// A qform decomposition: quaternion (b, c, d) with w ≥ 0 and the handedness flag qfac.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quaternion {
    pub bcd: [f64; 3],
    pub qfac: f64,
}

/// The qform equivalent of `affine`, or `None` when its 3×3 part is not a rotation times zooms.
pub fn quaternion_of(affine: &Affine) -> Option<Quaternion> {
    let zooms = spacing_of(affine);
    if zooms.iter().any(|&z| z == 0.0 || !z.is_finite()) {
        return None;
    }
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = affine[i][j] / zooms[j];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    for row in &mut r {
        row[2] *= qfac;
    }
    // Shepperd's method: pick the largest of the four diagonal combinations for stability.
    let t = r[0][0] + r[1][1] + r[2][2];
    let (w, x, y, z) = if t > 0.0 {
        let s = (t + 1.0).sqrt() * 2.0;
        (0.25 * s, (r[2][1] - r[1][2]) / s, (r[0][2] - r[2][0]) / s, (r[1][0] - r[0][1]) / s)
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        ((r[2][1] - r[1][2]) / s, 0.25 * s, (r[0][1] + r[1][0]) / s, (r[0][2] + r[2][0]) / s)
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        ((r[0][2] - r[2][0]) / s, (r[0][1] + r[1][0]) / s, 0.25 * s, (r[1][2] + r[2][1]) / s)
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        ((r[1][0] - r[0][1]) / s, (r[0][2] + r[2][0]) / s, (r[1][2] + r[2][1]) / s, 0.25 * s)
    };
    let sign = if w < 0.0 { -1.0 } else { 1.0 };
    let q = [w * sign, x * sign, y * sign, z * sign];
    // Reject shears: the quaternion must reproduce the rotation.
    let back = quaternion_to_rotation(q);
    let close = (0..3).all(|i| (0..3).all(|j| (back[i][j] - r[i][j]).abs() < ORTHONORMAL_TOLERANCE));
    close.then_some(Quaternion { bcd: [q[1], q[2], q[3]], qfac })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lps_rotated_affine_round_trips_through_quaternion() {
        // 90° about z, then x and y flipped (LPS-like), third axis mirrored (qfac -1), zooms 2, 3, 4.
        let a: Affine = [[0.0, 3.0, 0.0, 1.0], [-2.0, 0.0, 0.0, 2.0], [0.0, 0.0, -4.0, 3.0], [0.0, 0.0, 0.0, 1.0]];
        let q = quaternion_of(&a).expect("a rotation with zooms");
        let r = quaternion_to_rotation([
            (1.0 - q.bcd.iter().map(|v| v * v).sum::<f64>()).max(0.0).sqrt(),
            q.bcd[0],
            q.bcd[1],
            q.bcd[2],
        ]);
        let zooms = [2.0, 3.0, 4.0 * q.qfac];
        for i in 0..3 {
            for j in 0..3 {
                assert!((r[i][j] * zooms[j] - a[i][j]).abs() < 1e-9, "{i},{j}");
            }
        }
    }

    #[test]
    fn sheared_affine_has_no_qform() {
        let a: Affine = [[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert!(quaternion_of(&a).is_none());
    }
}
