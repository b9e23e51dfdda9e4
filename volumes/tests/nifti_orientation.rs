//! Axis codes and reorientation to RAS: checked by mapping every voxel to world space before and after.

use voxplan_volumes::nifti::{self, DataType};
use voxplan_volumes::volume::linear_index;
use voxplan_volumes::{Affine, Labels, Volume};

const LPS: Affine = [[-1.0, 0.0, 0.0, 90.0], [0.0, -1.0, 0.0, 126.0], [0.0, 0.0, 1.0, -72.0], [0.0, 0.0, 0.0, 1.0]];
const LAS: Affine = [[-2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
/// Voxel axes run P, S, R (a sagittal acquisition stored slice-first), with anisotropic spacing.
const PSR: Affine = [[0.0, 0.0, 3.0, 1.0], [-1.0, 0.0, 0.0, 2.0], [0.0, 1.5, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]];

#[test]
fn axis_codes_match_nibabel_aff2axcodes() {
    assert_eq!(nifti::orientation_codes(&voxplan_volumes::IDENTITY_AFFINE), ['R', 'A', 'S']);
    assert_eq!(nifti::orientation_codes(&LPS), ['L', 'P', 'S']);
    assert_eq!(nifti::orientation_codes(&LAS), ['L', 'A', 'S']);
    assert_eq!(nifti::orientation_codes(&PSR), ['P', 'S', 'R']);
    // A small oblique tilt still resolves to the nearest axes.
    let t = 0.2f64;
    let tilted =
        [[t.cos(), -t.sin(), 0.0, 0.0], [t.sin(), t.cos(), 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    assert_eq!(nifti::orientation_codes(&tilted), ['R', 'A', 'I']);
    let degenerate = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    assert_eq!(nifti::orientation_codes(&degenerate), ['R', 'A', '?']);
}

fn world(a: &Affine, v: [usize; 3]) -> [f64; 3] {
    std::array::from_fn(|i| (0..3).map(|j| a[i][j] * v[j] as f64).sum::<f64>() + a[i][3])
}

/// Every voxel of the reoriented volume lies at the same world position as the voxel it came from.
fn assert_same_world_content(before: &Volume, after: &Volume) {
    let n = before.voxels();
    let mut seen = std::collections::HashMap::new();
    for z in 0..before.shape[2] {
        for y in 0..before.shape[1] {
            for x in 0..before.shape[0] {
                let w = world(&before.affine, [x, y, z]).map(|c| (c * 1000.0).round() as i64);
                seen.insert(w, linear_index(before.shape, x, y, z));
            }
        }
    }
    for z in 0..after.shape[2] {
        for y in 0..after.shape[1] {
            for x in 0..after.shape[0] {
                let w = world(&after.affine, [x, y, z]).map(|c| (c * 1000.0).round() as i64);
                let old = *seen.get(&w).unwrap_or_else(|| panic!("voxel {x},{y},{z} moved in world space"));
                for c in 0..before.channels {
                    assert_eq!(after.data[c * n + linear_index(after.shape, x, y, z)], before.data[c * n + old]);
                }
            }
        }
    }
}

fn numbered(shape: [usize; 3], channels: usize, affine: Affine) -> Volume {
    let mut v = Volume::zeros(shape, channels, affine);
    for (i, x) in v.data.iter_mut().enumerate() {
        *x = i as f32;
    }
    v
}

#[test]
fn reorientation_to_ras_keeps_every_voxel_in_place_in_world_space() {
    for affine in [LPS, LAS, PSR] {
        let v = numbered([5, 4, 3], 2, affine);
        let r = nifti::reorient_volume_to_ras(v.clone());
        assert_eq!(nifti::orientation_codes(&r.affine), ['R', 'A', 'S'], "{affine:?}");
        assert_same_world_content(&v, &r);
    }
    let psr = nifti::reorient_volume_to_ras(numbered([5, 4, 3], 1, PSR));
    assert_eq!(psr.shape, [3, 5, 4], "R axis was voxel axis 2, A axis 0 (reversed), S axis 1");
    assert_eq!(psr.spacing(), [3.0, 1.0, 1.5]);
    let ras = numbered([2, 2, 2], 1, voxplan_volumes::IDENTITY_AFFINE);
    assert_eq!(nifti::reorient_volume_to_ras(ras.clone()), ras);
}

#[test]
fn labels_reorient_like_volumes_and_survive_a_file_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Labels { data: (0..60).map(|i| i as u16).collect(), shape: [5, 4, 3], affine: PSR };
    let path = dir.path().join("psr.nii.gz");
    nifti::write_labels(&path, &l, DataType::U8).expect("write");
    let back = nifti::read_labels(&path).expect("read");
    let r = nifti::reorient_labels_to_ras(back);
    let v = nifti::reorient_volume_to_ras(Volume {
        data: l.data.iter().map(|&x| f32::from(x)).collect(),
        shape: l.shape,
        channels: 1,
        affine: PSR,
    });
    assert_eq!(r.shape, v.shape);
    assert_eq!(r.data.iter().map(|&x| f32::from(x)).collect::<Vec<_>>(), v.data);
    for (a, b) in r.affine.iter().flatten().zip(v.affine.iter().flatten()) {
        assert!((a - b).abs() < 1e-5);
    }
}
