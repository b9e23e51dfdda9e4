//! NIfTI-2 (540-byte header) field parsing, written by hand.
//!
//! The `nifti` crate rejects NIfTI-2 outright (its issue #89), so the field offsets of nifti2.h are read
//! here directly. The layout is fixed-width and little else than byte-order-aware loads.

use std::path::Path;

use super::raw::{Endian, NIFTI2_HEADER_SIZE, RawHeader, c_string};
use crate::error::{Result, VolumeError};

/// Magic of a NIfTI-2 single file (`.nii`): voxels follow the header.
pub const MAGIC_SINGLE: &[u8; 8] = b"n+2\0\r\n\x1a\n";
/// Magic of a NIfTI-2 header/image pair (`.hdr` + `.img`).
pub const MAGIC_PAIR: &[u8; 8] = b"ni2\0\r\n\x1a\n";

/// Byte-order-aware loads at fixed offsets of a buffer known to be at least 540 bytes long.
struct Fields<'a> {
    bytes: &'a [u8; NIFTI2_HEADER_SIZE],
    endian: Endian,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[at..at + N]);
        out
    }
    fn i16(&self, at: usize) -> i16 {
        let b = self.array::<2>(at);
        if self.endian == Endian::Little { i16::from_le_bytes(b) } else { i16::from_be_bytes(b) }
    }
    fn i32(&self, at: usize) -> i32 {
        let b = self.array::<4>(at);
        if self.endian == Endian::Little { i32::from_le_bytes(b) } else { i32::from_be_bytes(b) }
    }
    fn i64(&self, at: usize) -> i64 {
        let b = self.array::<8>(at);
        if self.endian == Endian::Little { i64::from_le_bytes(b) } else { i64::from_be_bytes(b) }
    }
    fn f64(&self, at: usize) -> f64 {
        let b = self.array::<8>(at);
        if self.endian == Endian::Little { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) }
    }
    fn f64s<const N: usize>(&self, at: usize) -> [f64; N] {
        std::array::from_fn(|i| self.f64(at + 8 * i))
    }
}

/// Parses a NIfTI-2 header whose byte order was detected from `sizeof_hdr`.
pub fn parse(path: &Path, bytes: &[u8], endian: Endian) -> Result<RawHeader> {
    let bytes: &[u8; NIFTI2_HEADER_SIZE] =
        bytes.get(..NIFTI2_HEADER_SIZE).and_then(|b| b.try_into().ok()).ok_or_else(|| VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("NIfTI-2 header needs {NIFTI2_HEADER_SIZE} bytes, file has {}", bytes.len()),
        })?;
    let f = Fields { bytes, endian };
    let magic = f.array::<8>(4);
    if &magic != MAGIC_SINGLE && &magic != MAGIC_PAIR {
        return Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("NIfTI-2 magic is {:?}, expected \"n+2\" or \"ni2\"", c_string(&magic)),
        });
    }
    Ok(RawHeader {
        version: 2,
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
        descrip: c_string(&bytes[240..320]),
        single_file: &magic == MAGIC_SINGLE,
    })
}
