//! Memory-mapped patch reads agree with whole-volume reads, pad with zeros outside, and refuse gzip.

mod nifti_common;

use nifti_common::{Spec, encode, put};
use voxplan_volumes::nifti::{self, DataType, PatchReader};
use voxplan_volumes::volume::linear_index;
use voxplan_volumes::{Volume, VolumeError};

/// The patch `size` at `origin` cut from a whole volume, zeros outside.
fn cut(v: &Volume, channel: usize, origin: [isize; 3], size: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::new();
    for pz in 0..size[2] {
        for py in 0..size[1] {
            for px in 0..size[0] {
                let p = [origin[0] + px as isize, origin[1] + py as isize, origin[2] + pz as isize];
                let inside = (0..3).all(|i| p[i] >= 0 && (p[i] as usize) < v.shape[i]);
                out.push(if inside {
                    v.channel(channel)[linear_index(v.shape, p[0] as usize, p[1] as usize, p[2] as usize)]
                } else {
                    0.0
                });
            }
        }
    }
    out
}

#[test]
fn patches_match_the_whole_volume_inside_and_across_borders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = Volume::zeros([7, 6, 5], 2, voxplan_volumes::IDENTITY_AFFINE);
    for (i, x) in v.data.iter_mut().enumerate() {
        *x = (i as f32) - 100.0;
    }
    let path = dir.path().join("p.nii");
    nifti::write_volume(&path, &v, DataType::I16).expect("write");
    let reader = PatchReader::open(&path).expect("open");
    assert_eq!(reader.header().channels, 2);
    for (channel, origin, size) in [
        (0, [0, 0, 0], [7, 6, 5]),
        (1, [2, 1, 1], [3, 3, 3]),
        (0, [-2, -1, -3], [4, 4, 4]),
        (1, [5, 4, 3], [4, 4, 4]),
        (0, [20, 0, 0], [2, 2, 2]),
        (1, [-9, -9, -9], [3, 3, 3]),
    ] {
        assert_eq!(
            reader.read_patch(channel, origin, size).expect("patch"),
            cut(&v, channel, origin, size),
            "{origin:?}"
        );
    }
    assert!(matches!(reader.read_patch(2, [0, 0, 0], [1, 1, 1]), Err(VolumeError::Config { .. })));
}

#[test]
fn big_endian_scaled_pairs_are_decoded_per_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec { big_endian: true, pair: true, scl_slope: 0.5, scl_inter: 2.0, ..Spec::default() };
    let mut hdr = spec.header();
    hdr.extend_from_slice(&[0; 4]);
    put(dir.path(), "be.hdr", &hdr);
    put(dir.path(), "be.img", &encode("int16", &(0..24).map(f64::from).collect::<Vec<_>>(), true));
    let whole = nifti::read_volume(&dir.path().join("be.hdr")).expect("whole");
    let reader = PatchReader::open(&dir.path().join("be.hdr")).expect("open pair");
    assert_eq!(reader.read_patch(0, [1, 1, 0], [3, 2, 2]).expect("patch"), cut(&whole, 0, [1, 1, 0], [3, 2, 2]));
    assert_eq!(whole.data[3], 3.5);
}

#[test]
fn gzip_and_truncated_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = Volume::zeros([4, 4, 4], 1, voxplan_volumes::IDENTITY_AFFINE);
    let gz = dir.path().join("v.nii.gz");
    nifti::write_volume(&gz, &v, DataType::U8).expect("write");
    assert!(matches!(PatchReader::open(&gz), Err(VolumeError::Unsupported { .. })));
    let bytes = Spec::default().single_file(&[0u8; 10]);
    let short = put(dir.path(), "short.nii", &bytes);
    assert!(matches!(PatchReader::open(&short), Err(VolumeError::Truncated { .. })));
}
