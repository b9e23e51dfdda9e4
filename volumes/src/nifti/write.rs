//! Writing images as little-endian NIfTI-1: `.nii`, or `.nii.gz` when the name ends in `.gz`.
//!
//! Values are stored exactly or not at all: writing 2.5 as int16 is an error, not a silent rounding,
//! because label maps and test fixtures must read back bit for bit.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::datatype::DataType;
use super::encode::{XformCodes, nifti1_header};
use crate::error::{Result, VolumeError};
use crate::volume::{Affine, Labels, Volume};

/// Gzip level 1: nibabel's default too; about 3× faster to write than level 6 for ~10 % larger files.
const GZIP_LEVEL: u32 = 1;
/// NIfTI-1 stores dimensions as int16.
const MAX_NIFTI1_DIM: usize = i16::MAX as usize;

/// Writes a volume (4-D when it has several channels) with voxels stored as `dtype`, in scanner coordinates.
pub fn write_volume(path: &Path, v: &Volume, dtype: DataType) -> Result<()> {
    write_volume_with_codes(path, v, dtype, XformCodes::default())
}

/// [`write_volume`] declaring `codes` (those of the file it was made from).
pub fn write_volume_with_codes(path: &Path, v: &Volume, dtype: DataType, codes: XformCodes) -> Result<()> {
    let dims: Vec<usize> =
        if v.channels > 1 { vec![v.shape[0], v.shape[1], v.shape[2], v.channels] } else { v.shape.to_vec() };
    let bytes = encode_values(path, dtype, v.data.iter().map(|&x| f64::from(x)), v.data.len())?;
    write_file(path, &dims, dtype, &v.affine, codes, &bytes)
}

/// Writes a label map with voxels stored as `dtype` (every label must fit in it), in scanner coordinates.
pub fn write_labels(path: &Path, l: &Labels, dtype: DataType) -> Result<()> {
    write_labels_with_codes(path, l, dtype, XformCodes::default())
}

/// [`write_labels`] declaring `codes` (those of the file it was made from).
pub fn write_labels_with_codes(path: &Path, l: &Labels, dtype: DataType, codes: XformCodes) -> Result<()> {
    let bytes = encode_values(path, dtype, l.data.iter().map(|&x| f64::from(x)), l.data.len())?;
    write_file(path, &l.shape, dtype, &l.affine, codes, &bytes)
}

fn write_file(
    path: &Path,
    dims: &[usize],
    dtype: DataType,
    affine: &Affine,
    codes: XformCodes,
    voxels: &[u8],
) -> Result<()> {
    if let Some(&big) = dims.iter().find(|&&d| d > MAX_NIFTI1_DIM || d == 0) {
        return Err(VolumeError::Unrepresentable {
            path: path.to_path_buf(),
            datatype: dtype.to_string(),
            problem: format!("dimension {big} outside NIfTI-1's 1..={MAX_NIFTI1_DIM}"),
        });
    }
    let header = nifti1_header(dims, dtype, affine, codes);
    let io = |e| VolumeError::io(path, e);
    let file = BufWriter::new(File::create(path).map_err(io)?);
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if gz {
        let mut enc = GzEncoder::new(file, Compression::new(GZIP_LEVEL));
        enc.write_all(&header).map_err(io)?;
        enc.write_all(voxels).map_err(io)?;
        enc.finish().map_err(io)?.flush().map_err(io)
    } else {
        let mut file = file;
        file.write_all(&header).map_err(io)?;
        file.write_all(voxels).map_err(io)?;
        file.flush().map_err(io)
    }
}

/// Little-endian bytes of `values` as `dtype`, refusing any value the type cannot hold exactly.
fn encode_values(path: &Path, dtype: DataType, values: impl Iterator<Item = f64>, n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n * dtype.size());
    for (i, x) in values.enumerate() {
        let fail = || VolumeError::Unrepresentable {
            path: path.to_path_buf(),
            datatype: dtype.to_string(),
            problem: format!("voxel {i} is {x}"),
        };
        // Integer targets: the value must be integral and inside the type's range (checked in f64, which
        // holds every f32 exactly; 64-bit bounds are compared as the f64 nearest them).
        let int = |lo: f64, hi: f64| if x.fract() == 0.0 && x >= lo && x <= hi { Ok(x) } else { Err(fail()) };
        match dtype {
            DataType::U8 => out.push(int(0.0, 255.0)? as u8),
            DataType::I8 => out.push(int(-128.0, 127.0)? as i8 as u8),
            DataType::U16 => out.extend_from_slice(&(int(0.0, 65535.0)? as u16).to_le_bytes()),
            DataType::I16 => out.extend_from_slice(&(int(-32768.0, 32767.0)? as i16).to_le_bytes()),
            DataType::U32 => out.extend_from_slice(&(int(0.0, 4294967295.0)? as u32).to_le_bytes()),
            DataType::I32 => out.extend_from_slice(&(int(-2147483648.0, 2147483647.0)? as i32).to_le_bytes()),
            DataType::U64 => out.extend_from_slice(&(int(0.0, u64::MAX as f64)? as u64).to_le_bytes()),
            DataType::I64 => out.extend_from_slice(&(int(i64::MIN as f64, i64::MAX as f64)? as i64).to_le_bytes()),
            DataType::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            DataType::F64 => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    Ok(out)
}
