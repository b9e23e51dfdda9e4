//! NIfTI-2 (540-byte header) field parsing, written by hand.
//!
//! The `nifti` crate rejects NIfTI-2 outright (its issue #89), so the field offsets of nifti2.h are read
//! here directly. The layout is fixed-width and little else than byte-order-aware loads.

use std::path::Path;

use super::fields::Fields;
use super::raw::{Endian, Format, NIFTI2_HEADER_SIZE, RawHeader, c_string};
use crate::error::{Result, VolumeError};

/// Magic of a NIfTI-2 single file (`.nii`): voxels follow the header.
pub const MAGIC_SINGLE: &[u8; 4] = b"n+2\0";
/// Magic of a NIfTI-2 header/image pair (`.hdr` + `.img`).
pub const MAGIC_PAIR: &[u8; 4] = b"ni2\0";
/// The 4 bytes after the magic that catch end-of-line conversion (`eol_check`).
const EOL_CHECK: [u8; 4] = [0x0d, 0x0a, 0x1a, 0x0a];

/// Parses a NIfTI-2 header in byte order `endian` (guessed from `dim[0]`, as nibabel does).
pub fn parse(path: &Path, bytes: &[u8], endian: Endian) -> Result<RawHeader> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let f = Fields::<NIFTI2_HEADER_SIZE>::new(bytes, endian)
        .ok_or_else(|| bad(format!("NIfTI-2 header needs {NIFTI2_HEADER_SIZE} bytes, file has {}", bytes.len())))?;
    let magic = f.array::<4>(4);
    if &magic != MAGIC_SINGLE && &magic != MAGIC_PAIR {
        return Err(bad(format!("NIfTI-2 magic is {:?}, expected \"n+2\" or \"ni2\"", c_string(&magic))));
    }
    // nibabel accepts all zeros (and fixes them); anything else is a file damaged by EOL conversion.
    let eol = f.array::<4>(8);
    if eol != EOL_CHECK && eol != [0; 4] {
        return Err(bad(format!(
            "NIfTI-2 eol_check is {eol:?}, expected [13, 10, 26, 10]: the file was damaged by end-of-line conversion"
        )));
    }
    Ok(RawHeader {
        format: Format::Nifti2,
        endian,
        dim: std::array::from_fn(|i| f.i64(16 + 8 * i)),
        datatype: f.i16(12),
        pixdim: f.f64s(104),
        vox_offset: f.i64(168) as f64,
        scl_slope: f.f64(176),
        scl_inter: f.f64(184),
        qform_code: f.i32(344),
        sform_code: f.i32(348),
        quatern: f.f64s(352),
        qoffset: f.f64s(376),
        srow: [f.f64s(400), f.f64s(432), f.f64s(464)],
        origin: [0; 3],
        descrip: c_string(&f.raw()[240..320]),
        magic_single: &magic == MAGIC_SINGLE,
        has_extensions: bytes.get(NIFTI2_HEADER_SIZE).is_some_and(|&b| b != 0),
    })
}
