//! Every failure is a typed error naming the file, never a panic.

mod nifti_common;

use std::path::Path;

use nifti_common::{Spec, encode, gzip, put};
use voxplan_volumes::nifti::{self, DataType};
use voxplan_volumes::{Labels, Volume, VolumeError};

fn ramp() -> Vec<u8> {
    encode("int16", &(0..24).map(f64::from).collect::<Vec<_>>(), false)
}

/// The error's message names the file (every variant must).
fn assert_names(err: &VolumeError, path: &Path) {
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "message does not name {}: {msg}", path.display());
}

#[test]
fn missing_file_is_io_naming_it() {
    let path = Path::new("/nonexistent/brain.nii.gz");
    let err = nifti::read_volume(path).expect_err("missing");
    assert!(matches!(err, VolumeError::Io { .. }));
    assert_names(&err, path);
    let err = nifti::read_volume(Path::new("/nonexistent/pair.hdr")).expect_err("missing pair");
    assert!(matches!(err, VolumeError::Io { .. }));
}

#[test]
fn bad_sizeof_hdr_bad_magic_and_short_files_are_bad_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = Spec::default().single_file(&ramp());
    // Neither NIfTI-1 magic nor a sizeof_hdr of 348/540 (a wrong sizeof_hdr alone is only a warning in
    // nibabel: nifti_nibabel_oddities.rs).
    let mut wrong_size = good.clone();
    wrong_size[0..4].copy_from_slice(&349i32.to_le_bytes());
    wrong_size[344..348].copy_from_slice(b"n+9\0");
    let mut wrong_magic = good.clone();
    wrong_magic[344..348].copy_from_slice(b"xyz\0");
    let mut n2_magic = Spec { version: 2, ..Spec::default() }.single_file(&ramp());
    n2_magic[4] = b'Q';
    for (name, bytes) in [
        ("size.nii", wrong_size),
        ("magic.nii", wrong_magic),
        ("magic2.nii", n2_magic),
        ("short.nii", good[..200].to_vec()),
        ("empty.nii", Vec::new()),
        ("text.nii.gz", b"this is not a nifti file at all".to_vec()),
    ] {
        let path = put(dir.path(), name, &bytes);
        let err = nifti::read_volume(&path).expect_err(name);
        assert!(matches!(err, VolumeError::BadHeader { .. }), "{name}: {err:?}");
        assert_names(&err, &path);
    }
}

#[test]
fn truncated_voxels_plain_gzip_and_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = Spec::default().single_file(&ramp());
    let cut = &full[..full.len() - 10];
    for (name, bytes) in [("cut.nii", cut.to_vec()), ("cut.nii.gz", gzip(cut))] {
        let path = put(dir.path(), name, &bytes);
        match nifti::read_volume(&path) {
            Err(e @ VolumeError::Truncated { expected: 48, .. }) => assert_names(&e, &path),
            other => panic!("{name}: {other:?}"),
        }
    }
    // A gzip stream cut mid-member is truncated, not merely corrupt.
    let noise: Vec<u8> = (0..2 * 32 * 32 * 32u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let big = gzip(&Spec { dim: vec![3, 32, 32, 32], ..Spec::default() }.single_file(&noise));
    let path = put(dir.path(), "midstream.nii.gz", &big[..big.len() / 2]);
    let got = nifti::read_volume(&path);
    assert!(matches!(got, Err(VolumeError::Truncated { .. })), "{got:?}");
}

#[test]
fn non_positive_and_overflowing_dims_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, spec) in [
        ("zero.nii", Spec { dim: vec![3, 4, 0, 2], ..Spec::default() }),
        ("negative.nii", Spec { dim: vec![3, 4, -3, 2], ..Spec::default() }),
        ("rank0.nii", Spec { dim: vec![0, 4, 3, 2], ..Spec::default() }),
        ("rank9.nii", Spec { dim: vec![9, 4, 3, 2], ..Spec::default() }),
        ("overflow.nii", Spec { version: 2, dim: vec![4, 1 << 40, 1 << 40, 1 << 40, 2], ..Spec::default() }),
    ] {
        let path = put(dir.path(), name, &spec.single_file(&ramp()));
        let err = nifti::read_header(&path).expect_err(name);
        assert!(matches!(err, VolumeError::BadHeader { .. }), "{name}: {err:?}");
        assert_names(&err, &path);
    }
}

#[test]
fn huge_dims_in_a_tiny_gzip_fail_before_allocating() {
    // 2^31 int16 voxels (4 GiB) claimed by a file of a few hundred bytes: must be refused, not allocated.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec { version: 2, dim: vec![3, 2048, 2048, 512], ..Spec::default() };
    let path = put(dir.path(), "bomb.nii.gz", &gzip(&spec.single_file(&ramp())));
    assert!(matches!(nifti::read_volume(&path), Err(VolumeError::Truncated { .. })));
}

#[test]
fn corrupt_gzip_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gz = gzip(&Spec::default().single_file(&ramp()));
    let crc = gz.len() - 8;
    gz[crc] ^= 0x55;
    let path = put(dir.path(), "crc.nii.gz", &gz);
    let err = nifti::read_volume(&path).expect_err("bad crc");
    assert!(matches!(err, VolumeError::CorruptGzip { .. }), "{err:?}");
    assert_names(&err, &path);
    // Garbage right after a valid gzip header is corrupt already when reading the header.
    let mut garbage = gzip(b"x");
    garbage.truncate(10);
    garbage.extend_from_slice(&[0xff; 400]);
    let path = put(dir.path(), "garbage.nii.gz", &garbage);
    assert!(matches!(nifti::read_header(&path), Err(VolumeError::CorruptGzip { .. })));
}

#[test]
fn vox_offset_past_the_end_and_inside_the_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = Spec::default().single_file(&ramp());
    bytes[108..112].copy_from_slice(&1.0e6f32.to_le_bytes());
    let path = put(dir.path(), "far.nii", &bytes);
    let err = nifti::read_volume(&path).expect_err("past end");
    assert!(err.to_string().contains("past the end"), "{err}");
    assert_names(&err, &path);
    let path = put(dir.path(), "inside.nii", &Spec { vox_offset: Some(100), ..Spec::default() }.single_file(&ramp()));
    assert!(matches!(nifti::read_header(&path), Err(VolumeError::BadHeader { .. })));
}

#[test]
fn label_maps_must_hold_class_indices() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, values, dtype) in [
        ("fraction", vec![0.0, 1.5], "float32"),
        ("negative", vec![0.0, -1.0], "int16"),
        ("too_big", vec![0.0, 70000.0], "int32"),
        ("nan", vec![0.0, f64::NAN], "float32"),
    ] {
        let (code, bits) = nifti_common::code_of(dtype);
        let spec = Spec { dim: vec![3, 2, 1, 1], datatype: code, bitpix: bits, ..Spec::default() };
        let path = put(dir.path(), &format!("{name}.nii"), &spec.single_file(&encode(dtype, &values, false)));
        let err = nifti::read_labels(&path).expect_err(name);
        assert!(matches!(err, VolumeError::NotLabels { .. }), "{name}: {err:?}");
        assert_names(&err, &path);
    }
}

#[test]
fn writing_values_a_type_cannot_hold_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = Volume { data: vec![0.0, 2.5], shape: [2, 1, 1], channels: 1, affine: voxplan_volumes::IDENTITY_AFFINE };
    let path = dir.path().join("frac.nii");
    assert!(matches!(nifti::write_volume(&path, &v, DataType::I16), Err(VolumeError::Unrepresentable { .. })));
    let l = Labels { data: vec![0, 300], shape: [2, 1, 1], affine: voxplan_volumes::IDENTITY_AFFINE };
    assert!(matches!(nifti::write_labels(&path, &l, DataType::U8), Err(VolumeError::Unrepresentable { .. })));
    let err = nifti::write_volume(Path::new("/nonexistent/dir/x.nii"), &v, DataType::F32).expect_err("no dir");
    assert!(matches!(err, VolumeError::Io { .. }));
}
