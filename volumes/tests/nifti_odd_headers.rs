//! Real-world header oddities, each hand-made: the reader must do what nibabel does.

mod nifti_common;

use nifti_common::{Spec, encode, extension, gzip, gzip_members, put};
use voxplan_volumes::VolumeError;
use voxplan_volumes::nifti;

/// 24 int16 voxels 0, 1, …, 23 for the default 4×3×2 spec.
fn ramp(big: bool) -> Vec<u8> {
    encode("int16", &(0..24).map(f64::from).collect::<Vec<_>>(), big)
}

fn ramp_f32() -> Vec<f32> {
    (0..24).map(|i| i as f32).collect()
}

#[test]
fn vox_offset_gap_without_extensions_is_skipped() {
    // The mricron atlases' layout: extender says "no extensions", voxels at 1952, non-zero filler between.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec { vox_offset: Some(1952), gap_fill: 0xAB, ..Spec::default() };
    for (name, bytes) in
        [("gap.nii", spec.single_file(&ramp(false))), ("gap.nii.gz", gzip(&spec.single_file(&ramp(false))))]
    {
        let path = put(dir.path(), name, &bytes);
        assert_eq!(nifti::read_header(&path).expect("header").vox_offset, 1952);
        assert_eq!(nifti::read_volume(&path).expect("volume").data, ramp_f32(), "{name}");
    }
}

#[test]
fn extensions_are_skipped_in_both_byte_orders_and_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    for big in [false, true] {
        for version in [1u8, 2] {
            let exts = vec![extension(6, b"a comment extension", big), extension(4, &[7u8; 40], big)];
            let spec = Spec { version, big_endian: big, extensions: exts, ..Spec::default() };
            let path = put(dir.path(), &format!("ext{big}{version}.nii"), &spec.single_file(&ramp(big)));
            assert_eq!(nifti::read_volume(&path).expect("volume").data, ramp_f32());
        }
    }
}

#[test]
fn slope_rules_follow_nibabel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let read = |slope: f64, inter: f64| {
        let spec = Spec { scl_slope: slope, scl_inter: inter, ..Spec::default() };
        let path = put(dir.path(), "s.nii", &spec.single_file(&ramp(false)));
        nifti::read_volume(&path)
    };
    // Slope 0, NaN or infinite: stored values as they are (and the intercept ignored).
    for slope in [0.0, f64::NAN, f64::INFINITY] {
        assert_eq!(read(slope, 5.0).expect("unscaled").data, ramp_f32(), "slope {slope}");
    }
    let scaled = read(2.0, -1.0).expect("scaled");
    assert_eq!(scaled.data, (0..24).map(|i| 2.0 * i as f32 - 1.0).collect::<Vec<_>>());
    assert!(matches!(read(2.0, f64::NAN), Err(VolumeError::BadHeader { .. })));
    let h = {
        let spec = Spec { scl_slope: f64::NAN, scl_inter: 3.0, ..Spec::default() };
        nifti::read_header(&put(dir.path(), "h.nii", &spec.single_file(&ramp(false)))).expect("header")
    };
    assert_eq!((h.scl_slope, h.scl_inter), (1.0, 0.0), "header reports the scaling as applied");
}

/// Quaternion (b, c, d) of a 90° rotation about z.
const QUARTER_TURN_Z: [f64; 3] = [0.0, 0.0, std::f64::consts::FRAC_1_SQRT_2];

#[test]
fn qform_with_qfac_minus_one_flips_the_third_axis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let affine_for = |qfac: f64| {
        let mut pixdim = [qfac, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0];
        pixdim[0] = qfac;
        let spec = Spec {
            sform_code: 0,
            qform_code: 1,
            quatern: QUARTER_TURN_Z,
            qoffset: [10.0, 20.0, 30.0],
            pixdim,
            ..Spec::default()
        };
        nifti::read_header(&put(dir.path(), "q.nii", &spec.single_file(&ramp(false)))).expect("header").affine()
    };
    let plus = affine_for(1.0);
    let want = [[0.0, -3.0, 0.0, 10.0], [2.0, 0.0, 0.0, 20.0], [0.0, 0.0, 4.0, 30.0], [0.0, 0.0, 0.0, 1.0]];
    for (r, w) in plus.iter().zip(&want) {
        for (a, b) in r.iter().zip(w) {
            assert!((a - b).abs() < 1e-6, "{plus:?}");
        }
    }
    let minus = affine_for(-1.0);
    assert!((minus[2][2] + 4.0).abs() < 1e-6, "qfac -1 negates the third column: {minus:?}");
    assert!((affine_for(0.0)[2][2] - 4.0).abs() < 1e-6, "any qfac but -1 counts as +1");
}

#[test]
fn sform_beats_qform_beats_base_affine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srow = [[-2.0, 0.0, 0.0, 5.0], [0.0, 2.0, 0.0, 6.0], [0.0, 0.0, 2.0, 7.0]];
    let both = Spec { sform_code: 2, qform_code: 1, srow, qoffset: [1.0, 1.0, 1.0], ..Spec::default() };
    let read = |spec: &Spec| {
        nifti::read_header(&put(dir.path(), "p.nii", &spec.single_file(&ramp(false)))).expect("header").affine()
    };
    assert_eq!(read(&both)[0], [-2.0, 0.0, 0.0, 5.0]);
    let qonly = Spec { sform_code: 0, ..both.clone() };
    assert_eq!(read(&qonly)[0], [1.0, 0.0, 0.0, 1.0]);
    // Neither: nibabel's base affine, centred with x flipped; pixdim 2 on x.
    let mut neither = Spec { sform_code: 0, qform_code: 0, ..both };
    neither.pixdim[1] = 2.0;
    assert_eq!(read(&neither)[0], [-2.0, 0.0, 0.0, 3.0]);
    // An invalid sform code counts as 0 (nibabel resets it).
    let bad_code = Spec { sform_code: 99, qform_code: 0, pixdim: neither.pixdim, ..Spec::default() };
    assert_eq!(read(&bad_code)[0], [-2.0, 0.0, 0.0, 3.0]);
}

#[test]
fn trailing_unit_dims_are_dropped_and_4d_is_channels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec { dim: vec![5, 4, 3, 2, 1, 1], ..Spec::default() };
    let path = put(dir.path(), "t.nii", &spec.single_file(&ramp(false)));
    let h = nifti::read_header(&path).expect("header");
    assert_eq!((h.dims.clone(), h.shape, h.channels), (vec![4, 3, 2, 1, 1], [4, 3, 2], 1));
    assert_eq!(nifti::read_volume(&path).expect("volume").data, ramp_f32());

    let spec = Spec { dim: vec![4, 2, 3, 2, 2], ..Spec::default() };
    let v = nifti::read_volume(&put(dir.path(), "c.nii", &spec.single_file(&ramp(false)))).expect("4-D");
    assert_eq!((v.shape, v.channels), ([2, 3, 2], 2));
    assert_eq!(v.channel(1)[0], 12.0, "second channel starts after the first 12 voxels");

    let spec = Spec { dim: vec![2, 6, 4], ..Spec::default() };
    let v = nifti::read_volume(&put(dir.path(), "two.nii", &spec.single_file(&ramp(false)))).expect("2-D");
    assert_eq!((v.shape, v.channels), ([6, 4, 1], 1));
}

#[test]
fn multi_member_gzip_is_read_whole_and_gzip_is_detected_by_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = Spec::default().single_file(&ramp(false));
    // Member boundaries inside the header and inside the voxels.
    let path = put(dir.path(), "multi.nii.gz", &gzip_members(&bytes, 100));
    assert_eq!(nifti::read_volume(&path).expect("multi-member").data, ramp_f32());
    let path = put(dir.path(), "misnamed.nii", &gzip(&bytes));
    assert_eq!(nifti::read_volume(&path).expect("gzip named .nii").data, ramp_f32());
}

#[test]
fn hdr_img_pairs_in_every_compression_combination() {
    let dir = tempfile::tempdir().expect("tempdir");
    for version in [1u8, 2] {
        for big in [false, true] {
            let spec = Spec { version, big_endian: big, pair: true, ..Spec::default() };
            let mut hdr = spec.header();
            hdr.extend_from_slice(&[0; 4]);
            let img = ramp(big);
            for (hgz, igz) in [(false, false), (false, true), (true, true)] {
                let stem = format!("pair{version}{big}{hgz}{igz}");
                let h = put(
                    dir.path(),
                    &format!("{stem}.hdr{}", if hgz { ".gz" } else { "" }),
                    &if hgz { gzip(&hdr) } else { hdr.clone() },
                );
                let i = put(
                    dir.path(),
                    &format!("{stem}.img{}", if igz { ".gz" } else { "" }),
                    &if igz { gzip(&img) } else { img.clone() },
                );
                assert!(!nifti::read_header(&h).expect("header").single_file);
                assert_eq!(nifti::read_volume(&h).expect("via .hdr").data, ramp_f32(), "{stem}");
                assert_eq!(nifti::read_volume(&i).expect("via .img").data, ramp_f32(), "{stem}");
            }
        }
    }
}

#[test]
fn complex_rgb_and_higher_rank_images_are_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("complex", Spec { datatype: 32, bitpix: 64, ..Spec::default() }),
        ("rgb", Spec { datatype: 128, bitpix: 24, ..Spec::default() }),
        ("five_d", Spec { dim: vec![5, 2, 2, 2, 1, 3], ..Spec::default() }),
        ("six_d", Spec { dim: vec![6, 1, 1, 1, 1, 4, 6], ..Spec::default() }),
    ];
    for (name, spec) in cases {
        let path = put(dir.path(), &format!("{name}.nii"), &spec.single_file(&[0u8; 512]));
        match nifti::read_volume(&path) {
            Err(VolumeError::Unsupported { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{name}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn read_header_of_a_gzip_does_not_need_the_voxels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = gzip(&Spec { dim: vec![3, 64, 64, 64], ..Spec::default() }.single_file(&vec![0u8; 2 * 64 * 64 * 64]));
    // Cut the stream well before the end: the header is still readable, the voxels are not.
    let path = put(dir.path(), "cut.nii.gz", &full[..full.len() / 2]);
    assert_eq!(nifti::read_header(&path).expect("header from a prefix").shape, [64, 64, 64]);
    assert!(nifti::read_volume(&path).is_err());
}
