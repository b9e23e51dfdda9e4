//! Odd and broken headers found by the adversarial audit against nibabel 5.4.2 (`scripts/nifti_oddities.py`
//! writes each case with nibabel, patches header bytes, and compares `nib.load` with `voxplan inspect`).
//! Each test below is a case where voxplan used to disagree; the expected values are nibabel's.

mod nifti_common;

use std::path::Path;

use nifti_common::{Spec, encode, gzip, put};
use voxplan_volumes::VolumeError;
use voxplan_volumes::nifti::{self, Format};

/// 24 int16 voxels 0, 1, …, 23 for the default 4×3×2 spec.
fn ramp(big: bool) -> Vec<u8> {
    encode("int16", &(0..24).map(f64::from).collect::<Vec<_>>(), big)
}

fn ramp_f32() -> Vec<f32> {
    (0..24).map(|i| i as f32).collect()
}

fn expect_bad_header(path: &Path, contains: &str) {
    match nifti::read_volume(path) {
        Err(e @ VolumeError::BadHeader { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(contains), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        other => panic!("{}: {other:?}", path.display()),
    }
}

#[test]
fn a_wrong_sizeof_hdr_with_nifti1_magic_is_only_a_warning() {
    // nibabel picks NIfTI-1 by its magic and fixes sizeof_hdr (`_chk_sizeof_hdr`, level 30 < 40).
    let dir = tempfile::tempdir().expect("tempdir");
    for big in [false, true] {
        for size in [0i32, 349, 540] {
            let mut bytes = Spec { big_endian: big, ..Spec::default() }.single_file(&ramp(big));
            bytes[..4].copy_from_slice(&if big { size.to_be_bytes() } else { size.to_le_bytes() });
            let path = put(dir.path(), &format!("size{size}{big}.nii"), &bytes);
            let v = nifti::read_volume(&path).unwrap_or_else(|e| panic!("sizeof_hdr {size}: {e}"));
            assert_eq!(v.data, ramp_f32());
            assert_eq!(nifti::read_header(&path).expect("header").endian.name(), if big { "big" } else { "little" });
        }
    }
}

#[test]
fn trailing_unit_dims_do_not_count_towards_the_rank() {
    let dir = tempfile::tempdir().expect("tempdir");
    for version in [1u8, 2] {
        let spec = Spec { version, dim: vec![7, 4, 3, 2, 1, 1, 1, 1], ..Spec::default() };
        let path = put(dir.path(), &format!("seven{version}.nii"), &spec.single_file(&ramp(false)));
        let v = nifti::read_volume(&path).expect("7-D header of a 3-D image");
        assert_eq!((v.shape, v.channels), ([4, 3, 2], 1));
    }
    // A 6th axis of size 2 is still a 6-D image.
    let spec = Spec { dim: vec![6, 2, 3, 2, 1, 1, 2], ..Spec::default() };
    let path = put(dir.path(), "six.nii", &spec.single_file(&ramp(false)));
    assert!(matches!(nifti::read_volume(&path), Err(VolumeError::Unsupported { .. })));
}

#[test]
fn the_file_name_decides_where_the_voxels_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    for version in [1u8, 2] {
        // Pair magic in a .nii: nibabel reads the voxels from the .nii at vox_offset.
        let spec =
            Spec { version, pair: true, vox_offset: Some(if version == 1 { 352 } else { 544 }), ..Spec::default() };
        let path = put(dir.path(), &format!("pairmagic{version}.nii"), &spec.single_file(&ramp(false)));
        assert_eq!(nifti::read_volume(&path).expect("ni1/ni2 in a .nii").data, ramp_f32());
        assert!(nifti::read_header(&path).expect("header").single_file);
        // Single-file magic in a .hdr: the voxels are in the .img, at vox_offset (0 allowed there).
        let header = Spec { version, pair: false, vox_offset: Some(0), ..Spec::default() }.header();
        let hdr = put(dir.path(), &format!("singlemagic{version}.hdr"), &header);
        put(dir.path(), &format!("singlemagic{version}.img"), &ramp(false));
        assert_eq!(nifti::read_volume(&hdr).expect("n+1/n+2 in a .hdr").data, ramp_f32());
        let at = if version == 1 { 352 } else { 544 };
        let header = Spec { version, pair: false, vox_offset: Some(at), ..Spec::default() }.header();
        let hdr = put(dir.path(), &format!("singlemagic_at{version}.hdr"), &header);
        let mut img = vec![0xEEu8; at as usize];
        img.extend(ramp(false));
        put(dir.path(), &format!("singlemagic_at{version}.img"), &img);
        assert_eq!(nifti::read_volume(&hdr).expect("offset into the .img").data, ramp_f32());
    }
}

#[test]
fn single_file_magic_with_an_offset_inside_header_and_extender_is_refused() {
    // nibabel's `_chk_offset`: magic n+1/n+2 and 0 < vox_offset < 352 (544) is an error, in a .nii or .hdr.
    let dir = tempfile::tempdir().expect("tempdir");
    for (version, offset) in [(1u8, 349i64), (1, 351), (2, 541), (2, 543)] {
        let mut spec = Spec { version, ..Spec::default() };
        let mut bytes = spec.single_file(&ramp(false));
        spec.vox_offset = Some(offset);
        let header = spec.header();
        bytes[..header.len()].copy_from_slice(&header);
        let path = put(dir.path(), &format!("low{offset}.nii"), &bytes);
        expect_bad_header(&path, "too low");
    }
    let header = Spec { vox_offset: Some(100), ..Spec::default() }.header();
    let hdr = put(dir.path(), "low.hdr", &header);
    put(dir.path(), "low.img", &[0u8; 200]);
    expect_bad_header(&hdr, "too low");
}

#[test]
fn nifti2_eol_check_of_zeros_is_accepted_anything_else_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = Spec { version: 2, ..Spec::default() }.single_file(&ramp(false));
    let mut zeros = good.clone();
    zeros[8..12].copy_from_slice(&[0; 4]);
    let path = put(dir.path(), "eol0.nii", &zeros);
    assert_eq!(nifti::read_volume(&path).expect("eol_check zeros").data, ramp_f32());
    let mut damaged = good;
    damaged[8..12].copy_from_slice(b"\r\r\x1a\n");
    expect_bad_header(&put(dir.path(), "eol.nii", &damaged), "eol_check");
}

#[test]
fn quaternion_tolerance_is_that_of_the_stored_type() {
    // |b|² = 1 + 1e-12: rounding noise for float32 (NIfTI-1: w = 0, a half turn about x), an invalid
    // quaternion for float64 (NIfTI-2: nibabel raises "w2 should be positive").
    let dir = tempfile::tempdir().expect("tempdir");
    let b = (1.0f64 + 1e-12).sqrt();
    let spec = |version| Spec { version, sform_code: 0, qform_code: 1, quatern: [b, 0.0, 0.0], ..Spec::default() };
    let path = put(dir.path(), "q1.nii", &spec(1).single_file(&ramp(false)));
    let affine = nifti::read_header(&path).expect("NIfTI-1").affine();
    assert_eq!(affine[1][1], -1.0);
    assert_eq!(affine[2][2], -1.0);
    expect_bad_header(&put(dir.path(), "q2.nii", &spec(2).single_file(&ramp(false))), "norm above 1");
    let nan = Spec { sform_code: 0, qform_code: 1, quatern: [f64::NAN, 0.0, 0.0], ..Spec::default() };
    expect_bad_header(&put(dir.path(), "qnan.nii", &nan.single_file(&ramp(false))), "not finite");
}

/// An extension record with an arbitrary `esize` (the helper in nifti_common always writes valid ones).
fn raw_extension(esize: i32, total: usize) -> Vec<u8> {
    let mut e = esize.to_le_bytes().to_vec();
    e.extend(6i32.to_le_bytes());
    e.resize(total, 0);
    e
}

#[test]
fn an_extension_chain_nibabel_cannot_read_is_a_bad_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with = |name: &str, ext: Vec<u8>| {
        let len = ext.len();
        let spec = Spec { extensions: vec![ext], vox_offset: Some(352 + len as i64), ..Spec::default() };
        (put(dir.path(), name, &spec.single_file(&ramp(false))), spec)
    };
    for (name, esize, problem) in [
        ("esize0.nii", 0, "at least 8"),
        ("negative.nii", -8, "at least 8"),
        ("overrun.nii", 1000, "runs past vox_offset"),
    ] {
        let (path, spec) = with(name, raw_extension(esize, 16));
        expect_bad_header(&path, problem);
        let gz = put(dir.path(), &format!("{name}.gz"), &gzip(&spec.single_file(&ramp(false))));
        expect_bad_header(&gz, problem);
        assert!(matches!(nifti::read_header(&gz), Err(VolumeError::BadHeader { .. })), "header-only read checks it");
    }
    // nibabel only warns about an esize that is not a multiple of 16, and an 8-byte record is empty; fewer
    // than 16 bytes left before vox_offset end the chain.
    for (name, esize, room) in [("esize20.nii", 20, 32), ("esize8.nii", 8, 16)] {
        let (path, _) = with(name, raw_extension(esize, room));
        assert_eq!(nifti::read_volume(&path).expect(name).data, ramp_f32());
    }
    // ... but 16 or more are read as the next record: 24 zero bytes after an 8-byte record hold esize 0.
    let (path, _) = with("esize8_then_zeros.nii", raw_extension(8, 32));
    expect_bad_header(&path, "at byte 360 has esize 0");
    // The flag set with no room for a record (vox_offset 352) is no extension at all.
    let mut bytes = Spec::default().single_file(&ramp(false));
    bytes[348] = 1;
    assert_eq!(nifti::read_volume(&put(dir.path(), "flag.nii", &bytes)).expect("flag only").data, ramp_f32());
    // In a .hdr the chain runs to the end of the file.
    let mut header = Spec { pair: true, ..Spec::default() }.header();
    header.extend([1, 0, 0, 0]);
    header.extend(raw_extension(40, 16));
    let hdr = put(dir.path(), "ext.hdr", &header);
    put(dir.path(), "ext.img", &ramp(false));
    expect_bad_header(&hdr, "runs past the end of the file");
}

#[test]
fn a_damaged_gzip_member_is_caught_even_when_it_holds_more_than_the_voxels() {
    // The voxels end inside the member (extra bytes follow them): the member's CRC must still be checked,
    // or a damaged stream yields wrong voxels silently.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plain = Spec::default().single_file(&ramp(false));
    plain.extend([7u8; 100]);
    let good = gzip(&plain);
    let path = put(dir.path(), "extra.nii.gz", &good);
    assert_eq!(nifti::read_volume(&path).expect("extra bytes after the voxels").data, ramp_f32());
    let mut bad = good.clone();
    let crc = bad.len() - 8;
    bad[crc] ^= 0x55;
    let path = put(dir.path(), "extra_bad_crc.nii.gz", &bad);
    assert!(matches!(nifti::read_volume(&path), Err(VolumeError::CorruptGzip { .. })));
    // A stream cut inside the header says so.
    let path = put(dir.path(), "cut.nii.gz", &good[..30]);
    let err = nifti::read_header(&path).expect_err("cut in the header");
    assert!(matches!(err, VolumeError::CorruptGzip { .. }) && err.to_string().contains("cut short"), "{err}");
}

/// An Analyze 7.5 header (no NIfTI magic) for the 4×3×2 int16 ramp, pixdim (2, 3, 4), SPM origin `origin`.
fn analyze_header(big: bool, origin: [i16; 3], slope: f32, inter: f32) -> Vec<u8> {
    let spec = Spec {
        big_endian: big,
        pixdim: [0.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0],
        vox_offset: Some(0),
        scl_slope: f64::from(slope),
        scl_inter: f64::from(inter),
        sform_code: 0,
        srow: [[0.0; 4]; 3],
        pair: true,
        ..Spec::default()
    };
    let mut h = spec.header();
    h[148..228].fill(0);
    h[344..348].fill(0);
    for (i, o) in origin.iter().enumerate() {
        h[253 + 2 * i..255 + 2 * i].copy_from_slice(&if big { o.to_be_bytes() } else { o.to_le_bytes() });
    }
    h
}

#[test]
fn analyze_pairs_are_read_as_nibabel_reads_them() {
    // nib.load picks Spm2AnalyzeImage for a 348-byte .hdr without NIfTI magic. Values from nibabel 5.4.2.
    let dir = tempfile::tempdir().expect("tempdir");
    for big in [false, true] {
        let hdr = put(dir.path(), &format!("a{big}.hdr"), &analyze_header(big, [0; 3], 0.0, 0.0));
        put(dir.path(), &format!("a{big}.img"), &ramp(big));
        let h = nifti::read_header(&hdr).expect("Analyze header");
        assert_eq!((h.format, h.version, h.single_file), (Format::Analyze, 0, false));
        // No origin: centred, x flipped.
        let centred = [[-2.0, 0.0, 0.0, 3.0], [0.0, 3.0, 0.0, -3.0], [0.0, 0.0, 4.0, -2.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(h.affine(), centred);
        assert_eq!(nifti::read_volume(&hdr).expect("Analyze voxels").data, ramp_f32());
        // SPM origin (2, 2, 1), 1-based.
        let hdr = put(dir.path(), &format!("o{big}.hdr"), &analyze_header(big, [2, 2, 1], 0.0, 0.0));
        put(dir.path(), &format!("o{big}.img"), &ramp(big));
        let with_origin = [[-2.0, 0.0, 0.0, 2.0], [0.0, 3.0, 0.0, -3.0], [0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(nifti::read_header(&hdr).expect("origin").affine(), with_origin);
        // An origin outside (-dim, 2·dim) is ignored: (3, 4, 5) has 5 ≥ 2·2.
        let hdr = put(dir.path(), &format!("far{big}.hdr"), &analyze_header(big, [3, 4, 5], 0.0, 0.0));
        assert_eq!(nifti::read_header(&hdr).expect("far origin").affine(), centred);
    }
    // SPM2 scaling: funused1 slope with funused2 intercept; a non-finite intercept counts as 0.
    let scaled = |name: &str, slope: f32, inter: f32| {
        let hdr = put(dir.path(), &format!("{name}.hdr"), &analyze_header(false, [0; 3], slope, inter));
        put(dir.path(), &format!("{name}.img"), &ramp(false));
        nifti::read_volume(&hdr).expect(name).data
    };
    assert_eq!(scaled("s", 2.0, 3.0), (0..24).map(|i| 2.0 * i as f32 + 3.0).collect::<Vec<_>>());
    assert_eq!(scaled("snan", 2.0, f32::NAN), (0..24).map(|i| 2.0 * i as f32).collect::<Vec<_>>());
    // No usable slope: glmin..glmax (0..100) mapped onto cal_min..cal_max (10..50).
    let mut h = analyze_header(false, [0; 3], 0.0, 0.0);
    h[124..128].copy_from_slice(&50f32.to_le_bytes());
    h[128..132].copy_from_slice(&10f32.to_le_bytes());
    h[140..144].copy_from_slice(&100i32.to_le_bytes());
    h[144..148].copy_from_slice(&0i32.to_le_bytes());
    let hdr = put(dir.path(), "gl.hdr", &h);
    put(dir.path(), "gl.img", &ramp(false));
    let v = nifti::read_volume(&hdr).expect("gl/cal scaling");
    assert!((v.data[1] - 10.4).abs() < 1e-6 && (v.data[23] - 19.2).abs() < 1e-5, "{:?}", &v.data[..3]);
}

#[test]
fn what_nibabel_refuses_in_analyze_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // int8 is a NIfTI type, not an Analyze one ("data code 256 not recognized").
    let mut h = analyze_header(false, [0; 3], 0.0, 0.0);
    h[70..72].copy_from_slice(&256i16.to_le_bytes());
    put(dir.path(), "i8.img", &ramp(false));
    expect_bad_header(&put(dir.path(), "i8.hdr", &h), "not an Analyze 7.5 type");
    // nibabel never reads a .nii as Analyze.
    let mut single = analyze_header(false, [0; 3], 0.0, 0.0);
    single.extend([0; 4]);
    single.extend(ramp(false));
    expect_bad_header(&put(dir.path(), "an.nii", &single), "magic");
    // An SPM .mat beside the pair holds the affine nibabel would use; voxplan refuses instead of guessing.
    put(dir.path(), "m.hdr", &analyze_header(false, [0; 3], 0.0, 0.0));
    put(dir.path(), "m.img", &ramp(false));
    put(dir.path(), "m.mat", b"MATLAB 5.0 MAT-file");
    let err = nifti::read_volume(&dir.path().join("m.hdr")).expect_err(".mat");
    assert!(matches!(err, VolumeError::Unsupported { .. }) && err.to_string().contains("m.mat"), "{err}");
}
