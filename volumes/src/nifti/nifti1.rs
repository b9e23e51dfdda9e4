//! NIfTI-1 (348-byte header) field parsing, delegated to the `nifti` crate.
//!
//! `nifti::NiftiHeader::from_reader` reads every field correctly in either byte order; what the crate gets
//! wrong lies after the header (vox_offset gaps, NaN slopes, single-member gzip, qform panics), and
//! voxplan handles all of that itself from the [`RawHeader`] filled here.
//!
//! Byte order: the crate swaps when `dim[0]` read little endian exceeds 7 as a `u16`, which is nibabel's
//! `guessed_endian` for every `dim[0]` but 0 (nibabel then asks `sizeof_hdr`) — and a `dim[0]` of 0 is
//! rejected by validation in either order. `sizeof_hdr` itself is not checked: nibabel only warns about it.

use std::path::Path;

use super::raw::{Endian, Format, NIFTI1_HEADER_SIZE, RawHeader, c_string};
use crate::error::{Result, VolumeError};

/// Parses the first 348 bytes of `bytes` (and the extender after them, when present) as a NIfTI-1 header.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<RawHeader> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let h = nifti::NiftiHeader::from_reader(bytes).map_err(|e| bad(format!("NIfTI-1 header: {e}")))?;
    let endian = match h.endianness {
        nifti::Endianness::Little => Endian::Little,
        nifti::Endianness::Big => Endian::Big,
    };
    let mut dim = [0i64; 8];
    for (d, &raw) in dim.iter_mut().zip(&h.dim) {
        // The crate stores dims as u16; the format defines them as signed (negative dims are errors).
        *d = i64::from(raw as i16);
    }
    Ok(RawHeader {
        format: Format::Nifti1,
        endian,
        dim,
        datatype: h.datatype,
        pixdim: h.pixdim.map(f64::from),
        vox_offset: f64::from(h.vox_offset),
        scl_slope: f64::from(h.scl_slope),
        scl_inter: f64::from(h.scl_inter),
        qform_code: i32::from(h.qform_code),
        sform_code: i32::from(h.sform_code),
        quatern: [h.quatern_b, h.quatern_c, h.quatern_d].map(f64::from),
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from),
        srow: [h.srow_x.map(f64::from), h.srow_y.map(f64::from), h.srow_z.map(f64::from)],
        origin: [0; 3],
        descrip: c_string(&h.descrip),
        magic_single: &h.magic == nifti::header::MAGIC_CODE_NIP1,
        has_extensions: bytes.get(NIFTI1_HEADER_SIZE).is_some_and(|&b| b != 0),
    })
}
