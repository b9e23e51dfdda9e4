//! The voxel types voxplan reads and writes, with their NIfTI codes.
//!
//! Complex, RGB and the 128-bit types are valid NIfTI but meaningless as network input, so they are
//! recognised (to name them in the error) and rejected as [`VolumeError::Unsupported`].

use std::path::Path;

use crate::error::{Result, VolumeError};

/// A real-valued voxel type that training can consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// Every supported type, for exhaustive round-trip tests and CLI parsing.
    pub const ALL: [DataType; 10] = [
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];

    /// The NIfTI `datatype` code (nifti1.h `NIFTI_TYPE_*`).
    pub fn code(self) -> i16 {
        match self {
            DataType::U8 => 2,
            DataType::I16 => 4,
            DataType::I32 => 8,
            DataType::F32 => 16,
            DataType::F64 => 64,
            DataType::I8 => 256,
            DataType::U16 => 512,
            DataType::U32 => 768,
            DataType::I64 => 1024,
            DataType::U64 => 1280,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
        }
    }

    /// True for the integer types (label maps must use one of these or hold integral floats).
    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64)
    }

    /// Smallest and largest stored value of an integer type, as f64 (`None` for floats).
    pub fn integer_range(self) -> Option<(f64, f64)> {
        Some(match self {
            DataType::U8 => (0.0, f64::from(u8::MAX)),
            DataType::I8 => (f64::from(i8::MIN), f64::from(i8::MAX)),
            DataType::U16 => (0.0, f64::from(u16::MAX)),
            DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            DataType::U32 => (0.0, f64::from(u32::MAX)),
            DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            DataType::U64 => (0.0, u64::MAX as f64),
            DataType::I64 => (i64::MIN as f64, i64::MAX as f64),
            DataType::F32 | DataType::F64 => return None,
        })
    }

    /// Lower-case name as numpy spells it (`int16`, `float32`, ...), used by `inspect --json`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::I16 => "int16",
            DataType::U32 => "uint32",
            DataType::I32 => "int32",
            DataType::U64 => "uint64",
            DataType::I64 => "int64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }

    /// Parses a numpy-style name (`int16`) back; the CLI accepts these.
    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Maps a header's datatype code, naming `path` when the type is unusable.
    pub fn from_code(path: &Path, code: i16) -> Result<DataType> {
        if let Some(dt) = DataType::ALL.into_iter().find(|d| d.code() == code) {
            return Ok(dt);
        }
        let unsupported = |what: &str| VolumeError::Unsupported {
            path: path.to_path_buf(),
            problem: format!("datatype {code} ({what}) has no real scalar value per voxel"),
        };
        Err(match code {
            1 => unsupported("binary"),
            32 | 1792 | 2048 => unsupported("complex"),
            128 | 2304 => unsupported("RGB"),
            1536 => unsupported("float128"),
            _ => VolumeError::BadHeader { path: path.to_path_buf(), problem: format!("unknown datatype code {code}") },
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for dt in DataType::ALL {
            assert_eq!(DataType::from_code(Path::new("x"), dt.code()).ok(), Some(dt));
            assert_eq!(DataType::from_name(dt.name()), Some(dt));
        }
    }

    #[test]
    fn complex_and_rgb_are_unsupported_unknown_is_bad_header() {
        assert!(matches!(DataType::from_code(Path::new("x"), 32), Err(VolumeError::Unsupported { .. })));
        assert!(matches!(DataType::from_code(Path::new("x"), 128), Err(VolumeError::Unsupported { .. })));
        assert!(matches!(DataType::from_code(Path::new("x"), 7), Err(VolumeError::BadHeader { .. })));
    }
}
