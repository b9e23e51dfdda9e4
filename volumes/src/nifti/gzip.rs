//! Gzip decoding: libdeflate over the whole buffer for the voxels (the output size is known from the
//! header, so no streaming is needed and libdeflate is the fastest inflater measured here), a streaming
//! decoder only for the few hundred header bytes.
//!
//! Files may hold several concatenated gzip members (Python's gzip reads them all), so the loop restarts
//! at every member boundary; `libdeflater` does not report where a member ends, which is why the raw
//! `libdeflate_gzip_decompress_ex` from `libdeflate-sys` is called here behind a small safe wrapper.

use std::io::Read;
use std::path::Path;
use std::ptr::NonNull;

use crate::error::{Result, VolumeError};

/// First two bytes of every gzip member (RFC 1952). Compression is detected by content, not by suffix.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand less than this: its longest match (258 bytes) costs at least 2 bits, so one
/// compressed byte yields at most ~1032 output bytes. A header promising more than this ratio allows is
/// necessarily truncated, which is rejected before any allocation (no OOM on forged headers).
pub const MAX_DEFLATE_RATIO: u64 = 1032;

/// True when `bytes` starts like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Inflates at most `n` bytes from the start of a (possibly multi-member) gzip stream: enough to parse a
/// header without decoding the voxels.
pub fn inflate_prefix(path: &Path, compressed: impl Read, n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n.min(1 << 16));
    match flate2::read::MultiGzDecoder::new(std::io::BufReader::new(compressed)).take(n as u64).read_to_end(&mut out) {
        // A stream cut inside the header: say so, rather than "too short for a NIfTI header".
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && out.len() < MIN_HEADER => Err(corrupt(
            path,
            format!("the stream is cut short: it ends after {} decompressed bytes, inside the header", out.len()),
        )),
        // Cut later: keep what it produced; the voxel read reports the truncation.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(out),
        Err(e) => Err(corrupt(path, e.to_string())),
        Ok(_) => Ok(out),
    }
}

/// The smallest header (NIfTI-1 / Analyze).
const MIN_HEADER: usize = super::raw::NIFTI1_HEADER_SIZE;

/// Inflates the first `out.len()` bytes of the stream into `out`, over as many members as needed.
/// Fewer bytes in the stream than `out` holds is [`VolumeError::Truncated`]; more is ignored (nibabel
/// also ignores data past the end of the array).
pub fn inflate_exact(path: &Path, compressed: &[u8], out: &mut [u8]) -> Result<()> {
    let mut inflater = Inflater::new().ok_or_else(|| corrupt(path, "libdeflate could not allocate".into()))?;
    let (mut in_pos, mut out_pos) = (0usize, 0usize);
    while out_pos < out.len() {
        let rest = &compressed[in_pos..];
        if !is_gzip(rest) {
            return Err(VolumeError::Truncated {
                path: path.to_path_buf(),
                offset: 0,
                expected: out.len() as u64,
                available: out_pos as u64,
            });
        }
        match inflater.gzip_member(rest, &mut out[out_pos..]) {
            Ok((read, written)) => {
                in_pos += read;
                out_pos += written;
            }
            // The member holds more than we still need: decode the prefix we need, streaming, then the
            // rest of the member into nothing, so that its CRC is still checked (a damaged stream can
            // inflate to more bytes than it should, and the voxels decoded so far would be wrong).
            Err(MemberError::InsufficientSpace) => {
                let mut decoder = flate2::read::GzDecoder::new(rest);
                decoder.read_exact(&mut out[out_pos..]).map_err(|e| corrupt(path, e.to_string()))?;
                match std::io::copy(&mut decoder, &mut std::io::sink()) {
                    // Cut after the voxels: everything needed was read (nibabel reads no further either).
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                    Err(e) => {
                        return Err(corrupt(path, format!("gzip member at byte {in_pos}, after the voxels: {e}")));
                    }
                    Ok(_) => {}
                }
                out_pos = out.len();
            }
            Err(MemberError::BadData) => return Err(explain_bad_member(path, rest, in_pos, out_pos, out.len())),
        }
    }
    Ok(())
}

/// libdeflate says only "bad data"; a streaming decode of the member tells a stream that simply stops
/// (a truncated download: [`VolumeError::Truncated`]) from one that is damaged.
fn explain_bad_member(path: &Path, member: &[u8], in_pos: usize, out_pos: usize, wanted: usize) -> VolumeError {
    let mut decoder = flate2::read::GzDecoder::new(member);
    let mut scratch = vec![0u8; 1 << 16];
    let mut decoded = 0usize;
    loop {
        match decoder.read(&mut scratch) {
            Ok(0) => break,
            Ok(k) => decoded += k,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return VolumeError::Truncated {
                    path: path.to_path_buf(),
                    offset: 0,
                    expected: wanted as u64,
                    available: (out_pos + decoded).min(wanted) as u64,
                };
            }
            Err(_) => break,
        }
    }
    corrupt(path, format!("invalid deflate data or checksum in the gzip member at byte {in_pos}"))
}

fn corrupt(path: &Path, problem: String) -> VolumeError {
    VolumeError::CorruptGzip { path: path.to_path_buf(), problem }
}

enum MemberError {
    BadData,
    InsufficientSpace,
}

/// Owns a libdeflate decompressor; freed on drop.
struct Inflater(NonNull<libdeflate_sys::libdeflate_decompressor>);

impl Inflater {
    fn new() -> Option<Self> {
        // SAFETY: plain constructor with no arguments; a null return (out of memory) is handled.
        NonNull::new(unsafe { libdeflate_sys::libdeflate_alloc_decompressor() }).map(Inflater)
    }

    /// Decodes one gzip member at the start of `input` into `out`: (bytes consumed, bytes written).
    fn gzip_member(&mut self, input: &[u8], out: &mut [u8]) -> std::result::Result<(usize, usize), MemberError> {
        let (mut read, mut written) = (0usize, 0usize);
        // SAFETY: the pointers and lengths come from live slices that outlive the call; libdeflate reads at
        // most `input.len()` bytes, writes at most `out.len()` bytes, and writes the two counters.
        let ret = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut read,
                &mut written,
            )
        };
        match ret {
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS => Ok((read, written)),
            libdeflate_sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Err(MemberError::InsufficientSpace),
            _ => Err(MemberError::BadData),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the pointer came from libdeflate_alloc_decompressor and is freed exactly once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("in-memory write");
        e.finish().expect("in-memory write")
    }

    #[test]
    fn reads_across_members_and_stops_when_full() {
        let mut stream = gz(b"hello ");
        stream.extend(gz(b"world, and more"));
        let mut out = [0u8; 11];
        inflate_exact(Path::new("m.gz"), &stream, &mut out).expect("two members");
        assert_eq!(&out, b"hello world");
        assert_eq!(inflate_prefix(Path::new("m.gz"), &stream[..], 8).expect("prefix"), b"hello wo");
    }

    #[test]
    fn short_stream_is_truncated_and_garbage_is_corrupt() {
        let stream = gz(b"abc");
        let mut out = [0u8; 4];
        assert!(matches!(inflate_exact(Path::new("s.gz"), &stream, &mut out), Err(VolumeError::Truncated { .. })));
        let mut bad = stream.clone();
        let crc_at = bad.len() - 8;
        bad[crc_at] ^= 0xff;
        let mut out = [0u8; 3];
        assert!(matches!(inflate_exact(Path::new("s.gz"), &bad, &mut out), Err(VolumeError::CorruptGzip { .. })));
    }

    #[test]
    fn a_member_longer_than_needed_still_has_its_crc_checked() {
        let stream = gz(b"voxels, then more bytes in the same member");
        let mut out = [0u8; 6];
        inflate_exact(Path::new("m.gz"), &stream, &mut out).expect("prefix of a good member");
        assert_eq!(&out, b"voxels");
        let mut bad = stream.clone();
        let crc_at = bad.len() - 8;
        bad[crc_at] ^= 0xff;
        assert!(matches!(inflate_exact(Path::new("m.gz"), &bad, &mut out), Err(VolumeError::CorruptGzip { .. })));
        // Cut after the bytes needed: what was needed is there.
        inflate_exact(Path::new("m.gz"), &stream[..stream.len() - 4], &mut out).expect("cut after the prefix");
        // Cut inside the first bytes: the prefix reader says it is cut short.
        let err = inflate_prefix(Path::new("m.gz"), &stream[..12], 348).expect_err("cut");
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
