//! Which header a file holds and in which byte order, decided the way nibabel's `nib.load` decides.
//!
//! nibabel tries its image classes in order and takes the first whose sniff accepts the bytes: NIfTI-1 when
//! the magic at byte 344 is `n+1`/`ni1` (whatever `sizeof_hdr` says: a wrong `sizeof_hdr` is only a
//! warning it fixes), else NIfTI-2 when `sizeof_hdr` is 540 in either byte order, else — for `.hdr`/`.img`
//! names only — Analyze 7.5 (read as SPM2 Analyze) when `sizeof_hdr` is 348. The byte order is then
//! guessed from `dim[0]` (`AnalyzeHeader.guessed_endian`), not from `sizeof_hdr`.

use std::path::Path;

use super::raw::{Endian, Format, NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE, c_string};
use crate::error::{Result, VolumeError};

/// NIfTI-1 magic values at byte 344: single file and header/image pair.
pub const NIFTI1_MAGICS: [&[u8; 4]; 2] = [b"n+1\0", b"ni1\0"];

/// Decides the header format of `bytes` (the start of a file, decompressed). `pair_named`: the file is a
/// `.hdr`/`.img`, the only names nibabel reads Analyze 7.5 headers from.
pub fn detect(path: &Path, bytes: &[u8], pair_named: bool) -> Result<(Format, Endian)> {
    let bad = |problem: String| VolumeError::BadHeader { path: path.to_path_buf(), problem };
    let Some(first) = bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Err(bad(format!("{} bytes is too short for a NIfTI header", bytes.len())));
    };
    let (le, be) = (i32::from_le_bytes(first), i32::from_be_bytes(first));
    let magic1 = bytes.get(344..NIFTI1_HEADER_SIZE);
    let format = if magic1.is_some_and(|m| NIFTI1_MAGICS.iter().any(|k| k.as_slice() == m)) {
        Format::Nifti1
    } else if le == NIFTI2_HEADER_SIZE as i32 || be == NIFTI2_HEADER_SIZE as i32 {
        Format::Nifti2
    } else if le == NIFTI1_HEADER_SIZE as i32 || be == NIFTI1_HEADER_SIZE as i32 {
        let Some(magic) = magic1 else {
            return Err(bad(format!("NIfTI-1 header needs {NIFTI1_HEADER_SIZE} bytes, file has {}", bytes.len())));
        };
        if !pair_named {
            return Err(bad(format!(
                "NIfTI-1 magic is {:?}, expected \"n+1\" or \"ni1\" (a header without one is Analyze 7.5, \
                 read only as a .hdr/.img pair)",
                c_string(magic)
            )));
        }
        Format::Analyze
    } else {
        return Err(bad(format!(
            "sizeof_hdr is {le} (little endian) / {be} (big endian), expected 348 or 540, and there is no \
             NIfTI-1 magic at byte 344"
        )));
    };
    Ok((format, guessed_endian(format, bytes)))
}

/// nibabel's `guessed_endian`, with little endian as the "native" order it tries first (the order of every
/// machine nibabel is run on in practice): `dim[0]` in 1..=7 read little endian means little endian; 0 is
/// decided by `sizeof_hdr` read big endian; anything else means big endian.
fn guessed_endian(format: Format, bytes: &[u8]) -> Endian {
    let (dim0, size): (i64, i32) = match format {
        Format::Nifti2 => (bytes.get(16..24).and_then(|b| b.try_into().ok()).map_or(0, i64::from_le_bytes), 540),
        _ => (bytes.get(40..42).and_then(|b| b.try_into().ok()).map_or(0, |b| i64::from(i16::from_le_bytes(b))), 348),
    };
    match dim0 {
        0 if bytes.get(..4).is_some_and(|b| b == size.to_be_bytes()) => Endian::Big,
        0..=7 => Endian::Little,
        _ => Endian::Big,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: i32, big: bool, dim0: i16, magic: &[u8; 4]) -> Vec<u8> {
        let mut b = vec![0u8; 348];
        b[..4].copy_from_slice(&if big { size.to_be_bytes() } else { size.to_le_bytes() });
        b[40..42].copy_from_slice(&if big { dim0.to_be_bytes() } else { dim0.to_le_bytes() });
        b[344..348].copy_from_slice(magic);
        b
    }

    #[test]
    fn magic_decides_nifti1_and_dim0_the_byte_order() {
        let p = Path::new("x.nii");
        assert_eq!(detect(p, &header(348, true, 3, b"n+1\0"), false).ok(), Some((Format::Nifti1, Endian::Big)));
        // A wrong sizeof_hdr is only a warning in nibabel.
        assert_eq!(detect(p, &header(0, false, 3, b"ni1\0"), false).ok(), Some((Format::Nifti1, Endian::Little)));
        assert_eq!(detect(p, &header(0, true, 3, b"n+1\0"), false).ok(), Some((Format::Nifti1, Endian::Big)));
        // dim[0] = 0 falls back on sizeof_hdr.
        assert_eq!(detect(p, &header(348, true, 0, b"n+1\0"), false).ok(), Some((Format::Nifti1, Endian::Big)));
    }

    #[test]
    fn no_magic_is_analyze_for_pairs_only() {
        let h = header(348, false, 3, b"\0\0\0\0");
        assert_eq!(detect(Path::new("x.hdr"), &h, true).ok(), Some((Format::Analyze, Endian::Little)));
        assert!(matches!(detect(Path::new("x.nii"), &h, false), Err(VolumeError::BadHeader { .. })));
        assert!(detect(Path::new("x.nii"), &header(7, false, 3, b"xyz\0"), false).is_err());
    }
}
