//! Reading whole images: header, voxels decoded straight into the output buffer, labels checked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::buffer::{reuse_or_zeroed_f32, reuse_or_zeroed_u16, with_compressed_buffer};
use super::convert::{BadLabel, Layout, buffer_units, convert_tail_in_place, convert_tail_slice, labels_tail_in_place};
use super::extensions;
use super::files::{pair_images, resolve, spm_mat};
use super::gzip::{MAX_DEFLATE_RATIO, inflate_exact, inflate_prefix, is_gzip};
use super::header::{HEADER_PREFIX, Header, parse};
use super::raw::Format;
use crate::error::{Result, VolumeError};
use crate::volume::{Labels, Volume};

/// The element a read produces: scaled `f32` for images, checked `u16` for label maps.
trait Output: bytemuck::Pod {
    /// A buffer of `n` elements to decode into: fresh zeros (huge pages advised when large), or for images
    /// the thread's spare buffer of that type (see `buffer::give_back_f32`).
    fn fresh(n: usize) -> Vec<Self>;
}

impl Output for f32 {
    fn fresh(n: usize) -> Vec<f32> {
        reuse_or_zeroed_f32(n)
    }
}

impl Output for u16 {
    fn fresh(n: usize) -> Vec<u16> {
        reuse_or_zeroed_u16(n)
    }
}

/// Stored bytes, for decoding an image in its stored type ([`read_stored_bytes`]); only ever decoded into a
/// caller's buffer, so `fresh` is a plain allocation.
impl Output for u8 {
    fn fresh(n: usize) -> Vec<u8> {
        vec![0; n]
    }
}

/// Where a decode puts the stored voxels: the tail of a region of `units` outputs it asks for once the
/// file's sizes have been checked (so a forged header never triggers a huge allocation).
trait Room<T> {
    fn room(&mut self, path: &Path, units: usize) -> Result<&mut [T]>;
}

/// A fresh buffer of exactly the size asked for.
struct Fresh<T>(Vec<T>);

impl<T: Output> Room<T> for Fresh<T> {
    fn room(&mut self, _: &Path, units: usize) -> Result<&mut [T]> {
        self.0 = T::fresh(units);
        Ok(&mut self.0)
    }
}

/// The front of a caller's buffer; records how much was used.
struct Given<'a, T> {
    buf: &'a mut [T],
    used: usize,
}

impl<T> Room<T> for Given<'_, T> {
    fn room(&mut self, path: &Path, units: usize) -> Result<&mut [T]> {
        let len = self.buf.len();
        self.used = units;
        self.buf.get_mut(..units).ok_or_else(|| VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("decoding needs room for {units} values; the buffer holds {len}"),
        })
    }
}

/// A caller's byte buffer, of which the decode uses the region that puts the stored voxels at a multiple of
/// `align` bytes from the buffer's start (the region's lead, header bytes of a gzip stream, goes before).
struct Aligned<'a> {
    buf: &'a mut [u8],
    data_bytes: usize,
    align: usize,
    voxels_at: usize,
}

impl Room<u8> for Aligned<'_> {
    fn room(&mut self, path: &Path, units: usize) -> Result<&mut [u8]> {
        let lead = units.saturating_sub(self.data_bytes);
        let start = lead.next_multiple_of(self.align) - lead;
        self.voxels_at = start + lead;
        let len = self.buf.len();
        self.buf.get_mut(start..start + units).ok_or_else(|| VolumeError::BadHeader {
            path: path.to_path_buf(),
            problem: format!("decoding needs room for {} bytes; the buffer holds {len}", start + units),
        })
    }
}

/// Bytes a buffer must offer [`read_stored_bytes`] for an image with this header: the gzip stream's lead,
/// the stored voxels and up to `align - 1` bytes of alignment padding.
pub fn stored_room(header: &Header, align: usize) -> Option<usize> {
    usize::try_from(header.vox_offset).ok()?.checked_add(header.data_bytes())?.checked_add(align.saturating_sub(1))
}

/// Decodes the voxels of `path` (whose header the caller has read) as stored, byte order untouched, into
/// `out` (at least [`stored_room`] bytes, its start aligned to `align`): libdeflate inflates straight into
/// it, with no conversion pass. Returns the byte index in `out` where the voxels start, a multiple of
/// `align`; the `data_bytes()` from there are the voxels, anything before is scratch.
pub fn read_stored_bytes(path: &Path, header: &Header, out: &mut [u8], align: usize) -> Result<usize> {
    let mut room = Aligned { buf: out, data_bytes: header.data_bytes(), align: align.max(1), voxels_at: 0 };
    read_voxels::<u8>(path, header, &mut room)?;
    Ok(room.voxels_at)
}

/// Reads and validates the header of `path` without touching voxel data (a `.gz` is inflated only as
/// far as the header and, when flagged, its extension chain).
pub fn read_header(path: &Path) -> Result<Header> {
    let header_file = resolve(path).header;
    let open = || File::open(&header_file).map_err(|e| VolumeError::io(&header_file, e));
    let mut file = open()?;
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut file, &mut magic).map_err(|e| VolumeError::io(&header_file, e))?;
    let gz = is_gzip(&magic[..got]);
    file.seek(SeekFrom::Start(0)).map_err(|e| VolumeError::io(&header_file, e))?;
    let prefix = if gz {
        inflate_prefix(&header_file, file, HEADER_PREFIX)?
    } else {
        let mut buf = vec![0u8; HEADER_PREFIX];
        let n = read_up_to(&mut file, &mut buf).map_err(|e| VolumeError::io(&header_file, e))?;
        buf.truncate(n);
        buf
    };
    let header = parse(&header_file, &prefix)?;
    if header.has_extensions {
        let file = std::io::BufReader::new(open()?);
        if gz {
            extensions::check(&header_file, &header, flate2::bufread::MultiGzDecoder::new(file))?;
        } else {
            extensions::check(&header_file, &header, file)?;
        }
    }
    check_no_spm_mat(&header_file, &header)?;
    Ok(header)
}

/// nibabel takes an Analyze pair's affine from SPM's `.mat` file beside it; voxplan does not read MATLAB
/// files, so it refuses the image rather than use a different affine.
fn check_no_spm_mat(path: &Path, header: &Header) -> Result<()> {
    match spm_mat(path) {
        Some(mat) if header.format == Format::Analyze => Err(VolumeError::Unsupported {
            path: path.to_path_buf(),
            problem: format!("its affine is in {} (an SPM .mat file), which voxplan does not read", mat.display()),
        }),
        _ => Ok(()),
    }
}

/// Reads an image as scaled `f32` voxels; a 4-D image's fourth axis becomes channels.
pub fn read_volume(path: &Path) -> Result<Volume> {
    let header = read_header(path)?;
    let mut fresh = Fresh(Vec::new());
    read_voxels::<f32>(path, &header, &mut fresh)?;
    let raw = fresh.0;
    let data = convert_tail_in_place(raw, header.voxel_count(), layout(&header));
    Ok(Volume { data, shape: header.shape, channels: header.channels, affine: header.affine() })
}

/// Reads a label map: one channel of integral values in `0..=65535` after scaling, decoded straight to
/// `u16` (never through a full `f32` volume).
pub fn read_labels(path: &Path) -> Result<Labels> {
    let header = read_header(path)?;
    check_one_channel(path, &header)?;
    let mut fresh = Fresh(Vec::new());
    read_voxels::<u16>(path, &header, &mut fresh)?;
    labels_of(path, &header, fresh.0)
}

/// Floats a buffer must offer [`read_volume_into`] for an image with this header: the decoded voxels take
/// the first `voxel_count()` of them, the rest is room for the stored bytes and the gzip stream's lead.
pub fn decode_room(header: &Header) -> Option<usize> {
    buffer_units(header.voxel_count(), header.datatype.size(), usize::try_from(header.vox_offset).ok()?, 4)
}

/// Decodes the image at `path` (whose header the caller has read) as scaled `f32` into the front of `out`,
/// which must hold [`decode_room`] floats: `out[..voxel_count]` receives the voxels, the rest is scratch.
/// Lets a caller decode several channel files into one buffer, each straight into its place, with no
/// per-channel allocation and no copy.
pub fn read_volume_into(path: &Path, header: &Header, out: &mut [f32]) -> Result<()> {
    let mut given = Given { buf: out, used: 0 };
    read_voxels::<f32>(path, header, &mut given)?;
    let used = given.used;
    convert_tail_slice(&mut out[..used], header.voxel_count(), layout(header));
    Ok(())
}

/// Decodes a complete single-file image (`.nii` bytes, gzipped or not) held in memory. `name` only labels
/// errors. This is the entry point fuzzing drives: it must return an error, never panic, on any input.
pub fn read_volume_from_bytes(name: &Path, bytes: &[u8]) -> Result<Volume> {
    let header = header_of_bytes(name, bytes)?;
    let mut fresh = Fresh(Vec::new());
    voxels_of_bytes::<f32>(name, bytes, &header, &mut fresh)?;
    let data = convert_tail_in_place(fresh.0, header.voxel_count(), layout(&header));
    Ok(Volume { data, shape: header.shape, channels: header.channels, affine: header.affine() })
}

/// [`read_labels`] for in-memory bytes.
pub fn read_labels_from_bytes(name: &Path, bytes: &[u8]) -> Result<Labels> {
    let header = header_of_bytes(name, bytes)?;
    check_one_channel(name, &header)?;
    let mut fresh = Fresh(Vec::new());
    voxels_of_bytes::<u16>(name, bytes, &header, &mut fresh)?;
    labels_of(name, &header, fresh.0)
}

fn header_of_bytes(name: &Path, bytes: &[u8]) -> Result<Header> {
    let gz = is_gzip(bytes);
    let prefix = if gz { inflate_prefix(name, bytes, HEADER_PREFIX)? } else { bytes.to_vec() };
    let header = parse(name, &prefix)?;
    if header.has_extensions {
        if gz {
            extensions::check(name, &header, flate2::bufread::MultiGzDecoder::new(bytes))?;
        } else {
            extensions::check(name, &header, bytes)?;
        }
    }
    if !header.single_file {
        return Err(VolumeError::Unsupported {
            path: name.to_path_buf(),
            problem: "header of a .hdr/.img pair; its voxels are in a separate file".into(),
        });
    }
    Ok(header)
}

fn voxels_of_bytes<T: Output>(name: &Path, bytes: &[u8], header: &Header, dest: &mut impl Room<T>) -> Result<()> {
    if is_gzip(bytes) {
        decode_gzip(name, bytes, header, dest)
    } else {
        decode_plain(name, &mut std::io::Cursor::new(bytes), bytes.len() as u64, header, dest)
    }
}

/// Voxels of `path` as stored, at the tail of an output buffer, from whichever file holds them.
fn read_voxels<T: Output>(path: &Path, header: &Header, dest: &mut impl Room<T>) -> Result<()> {
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
        file.seek(SeekFrom::Start(0)).map_err(|e| VolumeError::io(&data_file, e))?;
        with_compressed_buffer(|compressed| {
            compressed.clear();
            compressed.reserve(len as usize);
            file.read_to_end(compressed).map_err(|e| VolumeError::io(&data_file, e))?;
            decode_gzip(&data_file, compressed, header, dest)
        })
    } else {
        decode_plain(&data_file, &mut file, len, header, dest)
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
fn decode_plain<T: Output>(
    path: &Path,
    src: &mut (impl Read + Seek),
    len: u64,
    header: &Header,
    dest: &mut impl Room<T>,
) -> Result<()> {
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
    let region = dest.room(path, units::<T>(path, header, 0)?)?;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(region);
    let tail = bytes.len() - header.data_bytes();
    src.seek(SeekFrom::Start(header.vox_offset)).map_err(|e| VolumeError::io(path, e))?;
    src.read_exact(&mut bytes[tail..]).map_err(|e| VolumeError::io(path, e))?;
    Ok(())
}

/// Gzipped data: the stream from byte 0 (header, extensions, gap, voxels) is inflated in one libdeflate
/// pass into the tail of the output buffer, so the voxels end exactly at its end.
fn decode_gzip<T: Output>(path: &Path, compressed: &[u8], header: &Header, dest: &mut impl Room<T>) -> Result<()> {
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
    let region = dest.room(path, units::<T>(path, header, lead)?)?;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(region);
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
    Ok(())
}

/// Outputs a region must hold for the outputs and, at its end, `lead` bytes plus the stored voxels.
fn units<T: Output>(path: &Path, header: &Header, lead: usize) -> Result<usize> {
    let width = std::mem::size_of::<T>();
    buffer_units(header.voxel_count(), header.datatype.size(), lead, width)
        .ok_or_else(|| VolumeError::BadHeader { path: path.to_path_buf(), problem: "voxel data size overflows".into() })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(super) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

fn check_one_channel(path: &Path, header: &Header) -> Result<()> {
    if header.channels != 1 {
        return Err(VolumeError::NotLabels {
            path: path.to_path_buf(),
            problem: format!("{} channels; a label map has one", header.channels),
        });
    }
    Ok(())
}

/// Converts the stored voxels at the tail of `raw` to class indices, naming the first voxel that is not one.
fn labels_of(path: &Path, header: &Header, raw: Vec<u16>) -> Result<Labels> {
    let data =
        labels_tail_in_place(raw, header.voxel_count(), layout(header)).map_err(|BadLabel { index, value }| {
            VolumeError::NotLabels {
                path: path.to_path_buf(),
                problem: format!("voxel {index} holds {value}; labels must be integers in 0..={}", u16::MAX),
            }
        })?;
    Ok(Labels { data, shape: header.shape, affine: header.affine() })
}
