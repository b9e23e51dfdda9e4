//! The header fields voxplan uses, in the widest type either NIfTI version stores them in.
//!
//! NIfTI-1 and NIfTI-2 hold the same fields at different widths and offsets; both parsers fill this one
//! struct so that validation ([`super::header`]) is written once.

/// Byte order of a file's header and voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// The order of the machine we run on: voxels in this order need no swap.
    pub const NATIVE: Endian = if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big };

    /// `"little"` / `"big"`, for `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Endian::Little => "little",
            Endian::Big => "big",
        }
    }
}

/// Size in bytes of a NIfTI-1 header (`sizeof_hdr`).
pub const NIFTI1_HEADER_SIZE: usize = 348;
/// Size in bytes of a NIfTI-2 header (`sizeof_hdr`).
pub const NIFTI2_HEADER_SIZE: usize = 540;

/// The header layouts voxplan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti1,
    Nifti2,
    /// Analyze 7.5 without a NIfTI magic, read as nibabel reads it (`Spm2AnalyzeImage`: SPM origin, SPM2
    /// scaling).
    Analyze,
}

impl Format {
    /// Bytes of the header proper (`sizeof_hdr`).
    pub fn header_size(self) -> usize {
        if self == Format::Nifti2 { NIFTI2_HEADER_SIZE } else { NIFTI1_HEADER_SIZE }
    }

    /// 1 or 2 for NIfTI, 0 for Analyze 7.5 (`inspect`'s `nifti_version`).
    pub fn version(self) -> u8 {
        match self {
            Format::Nifti1 => 1,
            Format::Nifti2 => 2,
            Format::Analyze => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Nifti1 => "NIfTI-1",
            Format::Nifti2 => "NIfTI-2",
            Format::Analyze => "Analyze 7.5",
        }
    }
}

/// Header fields as stored, before any validation or nibabel fix-up.
#[derive(Debug, Clone, PartialEq)]
pub struct RawHeader {
    pub format: Format,
    pub endian: Endian,
    /// `dim[0]` is the rank; negative entries are kept so validation can name them.
    pub dim: [i64; 8],
    pub datatype: i16,
    pub pixdim: [f64; 8],
    pub vox_offset: f64,
    /// For Analyze, the scaling nibabel's SPM2 rules resolved (slope 0 when there is none).
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    /// SPM's voxel origin (1-based, Analyze `originator` bytes); zeros for NIfTI.
    pub origin: [i16; 3],
    pub descrip: String,
    /// Magic says "voxels follow in this file" (`n+1`/`n+2`) rather than "voxels in the .img" (`ni1`/`ni2`).
    /// Only the file name decides where nibabel looks for the voxels; this matters for validation.
    pub magic_single: bool,
    /// First byte of the 4-byte extender after the header is non-zero: extensions follow.
    pub has_extensions: bool,
}

/// Text of a NUL-padded header string field, lossily decoded.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
