//! Any byte string handed to the NIfTI decoder must yield a volume or a typed error, never a panic, an
//! abort or an allocation the input cannot justify.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use voxplan_volumes::nifti;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.nii");
    let _ = nifti::parse_header_bytes(name, data);
    if let Ok(v) = nifti::read_volume_from_bytes(name, data) {
        // A decoded volume must be self-consistent.
        assert_eq!(v.data.len(), v.voxels() * v.channels);
        let _ = nifti::orientation_codes(&v.affine);
        let _ = nifti::reorient_volume_to_ras(v);
    }
    let _ = nifti::read_labels_from_bytes(name, data);
});
