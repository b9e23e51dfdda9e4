//! Reading whole images: header, voxels decoded straight into the output buffer, labels checked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::buffer::zeroed_f32;
use super::convert::{Layout, buffer_floats, convert_tail_in_place};
use super::files::{pair_images, resolve};
use super::gzip::{MAX_DEFLATE_RATIO, inflate_exact, inflate_prefix, is_gzip};
use super::header::{Header, parse};
use super::raw::NIFTI2_HEADER_SIZE;
use crate::error::{Result, VolumeError};
use crate::volume::{Labels, Volume};

/// Largest class index a label map may hold (labels are stored as `u16`).
const MAX_LABEL: f32 = u16::MAX as f32;

/// Reads and validates the header of `path` without touching voxel data (a `.gz` is inflated only as
/// far as the header).
pub fn read_header(path: &Path) -> Result<Header> {
    let header_file = resolve(path).header;
    let mut file = File::open(&header_file).map_err(|e| VolumeError::io(&header_file, e))?;
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut file, &mut magic).map_err(|e| VolumeError::io(&header_file, e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| VolumeError::io(&header_file, e))?;
    let prefix = if is_gzip(&magic[..got]) {
        inflate_prefix(&header_file, file, NIFTI2_HEADER_SIZE)?
    } else {
        let mut buf = vec![0u8; NIFTI2_HEADER_SIZE];
        let n = read_up_to(&mut file, &mut buf).map_err(|e| VolumeError::io(&header_file, e))?;
        buf.truncate(n);
        buf
    };
    parse(&header_file, &prefix)
}

/// Reads an image as scaled `f32` voxels; a 4-D image's fourth axis becomes channels.
pub fn read_volume(path: &Path) -> Result<Volume> {
    let header = read_header(path)?;
    let data = read_voxels(path, &header)?;
    Ok(Volume { data, shape: header.shape, channels: header.channels, affine: header.affine() })
}

/// Reads a label map: one channel of integral values in `0..=65535` after scaling.
pub fn read_labels(path: &Path) -> Result<Labels> {
    labels_from_volume(path, read_volume(path)?)
}

/// Decodes a complete single-file image (`.nii` bytes, gzipped or not) held in memory. `name` only labels
/// errors. This is the entry point fuzzing drives: it must return an error, never panic, on any input.
pub fn read_volume_from_bytes(name: &Path, bytes: &[u8]) -> Result<Volume> {
    let gz = is_gzip(bytes);
    let prefix = if gz { inflate_prefix(name, bytes, NIFTI2_HEADER_SIZE)? } else { bytes.to_vec() };
    let header = parse(name, &prefix)?;
    if !header.single_file {
        return Err(VolumeError::Unsupported {
            path: name.to_path_buf(),
            problem: "header of a .hdr/.img pair; its voxels are in a separate file".into(),
        });
    }
    let data = if gz {
        decode_gzip(name, bytes, &header)?
    } else {
        decode_plain(name, &mut std::io::Cursor::new(bytes), bytes.len() as u64, &header)?
    };
    Ok(Volume { data, shape: header.shape, channels: header.channels, affine: header.affine() })
}

/// [`read_labels`] for in-memory bytes.
pub fn read_labels_from_bytes(name: &Path, bytes: &[u8]) -> Result<Labels> {
    labels_from_volume(name, read_volume_from_bytes(name, bytes)?)
}

/// Voxels of `path` as scaled floats, from whichever file holds them.
fn read_voxels(path: &Path, header: &Header) -> Result<Vec<f32>> {
    let set = resolve(path);
    let data_file = if header.single_file {
        set.header.clone()
    } else {
        let candidates = if set.images.is_empty() { pair_images(path) } else { set.images };
        first_existing(&set.header, candidates)?
    };
    let mut file = File::open(&data_file).map_err(|e| VolumeError::io(&data_file, e))?;
    let len = file.metadata().map_err(|e| VolumeError::io(&data_file, e))?.len();
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut file, &mut magic).map_err(|e| VolumeError::io(&data_file, e))?;
    if is_gzip(&magic[..got]) {
        let mut compressed = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0)).map_err(|e| VolumeError::io(&data_file, e))?;
        file.read_to_end(&mut compressed).map_err(|e| VolumeError::io(&data_file, e))?;
        decode_gzip(&data_file, &compressed, header)
    } else {
        decode_plain(&data_file, &mut file, len, header)
    }
}

fn first_existing(header: &Path, candidates: Vec<PathBuf>) -> Result<PathBuf> {
    let missing = candidates.first().cloned().unwrap_or_else(|| header.with_extension("img"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        VolumeError::io(missing, std::io::Error::new(std::io::ErrorKind::NotFound, "image file of the pair not found"))
    })
}

fn layout(header: &Header) -> Layout {
    Layout { datatype: header.datatype, endian: header.endian, slope: header.scl_slope, inter: header.scl_inter }
}

/// Uncompressed data: checks the size first, then reads straight into the tail of the output buffer.
fn decode_plain(path: &Path, src: &mut (impl Read + Seek), len: u64, header: &Header) -> Result<Vec<f32>> {
    let need = header.data_bytes() as u64;
    if header.vox_offset > len {
        return Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("vox_offset {} is past the end of the file ({len} bytes)", header.vox_offset),
        });
    }
    let end = header.vox_offset.checked_add(need);
    if end.is_none_or(|end| end > len) {
        return Err(VolumeError::Truncated {
            path: path.to_path_buf(),
            offset: header.vox_offset,
            expected: need,
            available: len.saturating_sub(header.vox_offset),
        });
    }
    let n = header.voxel_count();
    let mut buf = alloc_floats(path, n, header, 0)?;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    let tail = bytes.len() - header.data_bytes();
    src.seek(SeekFrom::Start(header.vox_offset)).map_err(|e| VolumeError::io(path, e))?;
    src.read_exact(&mut bytes[tail..]).map_err(|e| VolumeError::io(path, e))?;
    Ok(convert_tail_in_place(buf, n, layout(header)))
}

/// Gzipped data: the stream from byte 0 (header, extensions, gap, voxels) is inflated in one libdeflate
/// pass into the tail of the output buffer, so the voxels end exactly at its end.
fn decode_gzip(path: &Path, compressed: &[u8], header: &Header) -> Result<Vec<f32>> {
    let need = header.data_bytes() as u64;
    let lead = header.vox_offset;
    let total = lead.checked_add(need);
    let ceiling = (compressed.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
    if total.is_none_or(|t| t > ceiling) {
        // Not even maximal deflate compression fits that much in this file: report what it could hold.
        return Err(VolumeError::Truncated {
            path: path.to_path_buf(),
            offset: lead,
            expected: need,
            available: ceiling.saturating_sub(lead),
        });
    }
    let lead = lead as usize;
    let n = header.voxel_count();
    let mut buf = alloc_floats(path, n, header, lead)?;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    let from = bytes.len() - header.data_bytes() - lead;
    inflate_exact(path, compressed, &mut bytes[from..]).map_err(|e| match e {
        VolumeError::Truncated { path, available, .. } => VolumeError::Truncated {
            path,
            offset: lead as u64,
            expected: need,
            available: (available).saturating_sub(lead as u64),
        },
        other => other,
    })?;
    Ok(convert_tail_in_place(buf, n, layout(header)))
}

fn alloc_floats(path: &Path, n: usize, header: &Header, lead: usize) -> Result<Vec<f32>> {
    let floats = buffer_floats(n, header.datatype.size(), lead).ok_or_else(|| VolumeError::BadHeader {
        path: path.to_path_buf(),
        problem: "voxel data size overflows".into(),
    })?;
    Ok(zeroed_f32(floats))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Checks that every voxel is a class index and narrows to `u16`.
fn labels_from_volume(path: &Path, v: Volume) -> Result<Labels> {
    let not_labels = |problem: String| VolumeError::NotLabels { path: path.to_path_buf(), problem };
    if v.channels != 1 {
        return Err(not_labels(format!("{} channels; a label map has one", v.channels)));
    }
    if let Some((i, &bad)) =
        v.data.iter().enumerate().find(|(_, x)| !(x.fract() == 0.0 && (0.0..=MAX_LABEL).contains(*x)))
    {
        return Err(not_labels(format!("voxel {i} holds {bad}; labels must be integers in 0..={}", u16::MAX)));
    }
    let data = v.data.iter().map(|&x| x as u16).collect();
    Ok(Labels { data, shape: v.shape, affine: v.affine })
}
