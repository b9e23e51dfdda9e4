//! NIfTI-1/2 reading and writing with nibabel's semantics.
//!
//! Reading: [`read_header`] (header only), [`read_volume`] (scaled `f32`, 4-D → channels), [`read_labels`]
//! (checked class indices), [`read_stored`] (images kept in their stored 8/16-bit type, for the loader),
//! [`PatchReader`] (memory-mapped patches). Writing: [`write_volume`],
//! [`write_labels`]. Geometry: [`orientation_codes`], [`reorient_volume_to_ras`]. The `nifti` crate parses
//! NIfTI-1 header fields; everything it lacks (NIfTI-2, vox_offset gaps, NaN slopes, multi-member gzip,
//! in-place decoding) is here. See `docs/nifti.md` for the behaviour and its verification against nibabel.

mod affine;
mod analyze;
mod buffer;
mod convert;
mod datatype;
mod encode;
mod extensions;
mod fields;
mod files;
mod format;
mod gzip;
mod header;
mod nifti1;
mod nifti2;
mod orientation;
mod patch_reader;
mod raw;
mod read;
mod stored;
mod write;

pub use affine::quaternion_to_rotation;
pub use buffer::COMPRESSED_SPARE_MAX_BYTES;
pub(crate) use buffer::{give_back_f32, give_back_u16, reuse_or_zeroed_f32, zeroed_f32, zeroed_u16};
pub use datatype::DataType;
pub use encode::{Quaternion, XformCodes, quaternion_of};
pub use gzip::is_gzip;
pub use header::Header;
pub use orientation::{
    AxisCodes, Reorientation, io_orientation, orientation_codes, reorient_labels_to_ras, reorient_volume_to_ras,
};
pub use patch_reader::PatchReader;
pub use raw::{Endian, Format};
pub use read::{
    decode_room, read_header, read_labels, read_labels_from_bytes, read_volume, read_volume_from_bytes,
    read_volume_into, stored_room,
};
pub use stored::{
    StoredChannel, StoredImage, StoredType, StoredValue, common_stored_type, read_stored, stored_bytes, stored_mean_std,
};
pub use write::{write_labels, write_labels_with_codes, write_volume, write_volume_with_codes};

/// Parses a header from the first bytes of a file (already decompressed), for tools and fuzzing.
pub fn parse_header_bytes(name: &std::path::Path, bytes: &[u8]) -> crate::error::Result<Header> {
    header::parse(name, bytes)
}
