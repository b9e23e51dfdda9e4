//! The extension chain after a NIfTI header, checked as nibabel reads it (`Nifti1Extensions.from_fileobj`):
//! voxplan never uses extension contents, but a chain nibabel cannot read is a broken file.
//!
//! When the extender's first byte is non-zero, records of `esize` bytes (8-byte head `esize`, `ecode`,
//! then content) follow the header: in a single file up to `vox_offset` (fewer than 16 bytes left ends the
//! chain), in a `.hdr` up to the end of the file. An `esize` below 8 or a record running past the end of
//! the file is an error in nibabel; an `esize` that is not a multiple of 16 is only a warning. A record
//! running past `vox_offset` is refused here (nibabel would go on reading the voxels as extensions and
//! fail in practically every case).

use std::io::Read;
use std::path::Path;

use super::header::Header;
use super::raw::Endian;
use super::read::read_up_to;
use crate::error::{Result, VolumeError};

/// Walks the chain of `header`'s file. `src` reads the (decompressed) file from byte 0; only the
/// extension heads are kept in memory, contents are skipped.
pub fn check(path: &Path, header: &Header, src: impl Read) -> Result<()> {
    let start = header.format.header_size() as u64 + 4;
    let mut src = src;
    let io = |e| VolumeError::io(path, e);
    if skip(&mut src, start).map_err(io)? < start {
        return Ok(()); // no extender at all: nothing follows the header
    }
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    // Bytes the chain may use: up to vox_offset in a single file, the rest of the file in a pair.
    let mut room = header.single_file.then(|| i128::from(header.vox_offset) - i128::from(start));
    let mut at = start;
    loop {
        if room.is_some_and(|r| r < 16) {
            return Ok(());
        }
        let mut head = [0u8; 8];
        let got = read_up_to(&mut src, &mut head).map_err(io)?;
        if got == 0 && room.is_none() {
            return Ok(());
        }
        if got < head.len() {
            return Err(bad(format!("the extension header at byte {at} is cut short by the end of the file")));
        }
        let size = [head[0], head[1], head[2], head[3]];
        let esize = if header.endian == Endian::Little { i32::from_le_bytes(size) } else { i32::from_be_bytes(size) };
        if esize < 8 {
            return Err(bad(format!("the extension at byte {at} has esize {esize}; a record is at least 8 bytes")));
        }
        if let Some(r) = room.as_mut() {
            if i128::from(esize) > *r {
                let end = header.vox_offset;
                return Err(bad(format!("the extension at byte {at} (esize {esize}) runs past vox_offset {end}")));
            }
            *r -= i128::from(esize);
        }
        let body = esize as u64 - 8;
        if skip(&mut src, body).map_err(io)? < body {
            return Err(bad(format!("the extension at byte {at} (esize {esize}) runs past the end of the file")));
        }
        at += esize as u64;
    }
}

/// Reads and drops `n` bytes; returns how many there were.
fn skip(src: &mut impl Read, n: u64) -> std::io::Result<u64> {
    std::io::copy(&mut src.take(n), &mut std::io::sink())
}
