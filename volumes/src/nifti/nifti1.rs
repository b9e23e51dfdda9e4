//! NIfTI-1 (348-byte header) field parsing, delegated to the `nifti` crate.
//!
//! `nifti::NiftiHeader::from_reader` reads every field correctly in either byte order; what the crate gets
//! wrong lies after the header (vox_offset gaps, NaN slopes, single-member gzip, qform panics), and
//! voxplan handles all of that itself from the [`RawHeader`] filled here.

use std::path::Path;

use super::raw::{Endian, RawHeader, c_string};
use crate::error::{Result, VolumeError};

/// Parses the first 348 bytes of `bytes` as a NIfTI-1 header in byte order `endian` (already detected
/// from `sizeof_hdr`).
pub fn parse(path: &Path, bytes: &[u8], endian: Endian) -> Result<RawHeader> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let h = nifti::NiftiHeader::from_reader(bytes).map_err(|e| bad(format!("NIfTI-1 header: {e}")))?;
    // The crate picks the byte order from dim[0] (> 7 means swapped); sizeof_hdr is the authority
    // (nibabel's rule), so a disagreement means dim[0] is out of range.
    let crate_endian = match h.endianness {
        nifti::Endianness::Little => Endian::Little,
        nifti::Endianness::Big => Endian::Big,
    };
    if crate_endian != endian {
        return Err(bad("dim[0] is not a rank between 1 and 7 in the byte order sizeof_hdr implies".into()));
    }
    let mut dim = [0i64; 8];
    for (d, &raw) in dim.iter_mut().zip(&h.dim) {
        // The crate stores dims as u16; the format defines them as signed (negative dims are errors).
        *d = i64::from(raw as i16);
    }
    Ok(RawHeader {
        version: 1,
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
        descrip: c_string(&h.descrip),
        single_file: &h.magic == nifti::header::MAGIC_CODE_NIP1,
    })
}
