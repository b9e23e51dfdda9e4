//! Sliding-window grid and aggregator: coverage, exact reconstruction, gaussian weights, bounded memory.

use voxplan_volumes::grid::{DEFAULT_SIGMA_SCALE, importance_map};
use voxplan_volumes::phantom::{PhantomSpec, generate};
use voxplan_volumes::volume::{linear_index, voxel_count};
use voxplan_volumes::{Aggregator, Blend, GridSampler, patch_origins};

#[test]
fn origins_cover_every_voxel_start_at_zero_and_end_at_the_border() {
    let shape = [50, 37, 20];
    let patch = [16, 16, 16];
    let origins = patch_origins(shape, patch, 0.5);
    let mut covered = vec![0u32; voxel_count(shape)];
    for o in &origins {
        for z in o[2]..(o[2] + patch[2]).min(shape[2]) {
            for y in o[1]..(o[1] + patch[1]).min(shape[1]) {
                for x in o[0]..(o[0] + patch[0]).min(shape[0]) {
                    covered[linear_index(shape, x, y, z)] += 1;
                }
            }
        }
    }
    assert!(covered.iter().all(|&c| c > 0));
    for axis in 0..3 {
        let mut along: Vec<usize> = origins.iter().map(|o| o[axis]).collect();
        along.sort_unstable();
        along.dedup();
        assert_eq!(along[0], 0);
        assert_eq!(*along.last().unwrap(), shape[axis] - patch[axis]);
        assert!(along.windows(2).all(|w| w[1] - w[0] <= patch[axis] / 2), "axis {axis}: {along:?}");
    }
    // 0.5 overlap on x: 50 voxels, step ≤ 8 → ceil(34 / 8) = 5 steps → origins 0, 7, 14, 20, 27, 34.
    assert_eq!(origins.iter().filter(|o| o[1] == 0 && o[2] == 0).count(), 6);
}

#[test]
fn identity_predictions_reassemble_the_volume_exactly_with_both_blends() {
    let spec = PhantomSpec { shape: [30, 26, 19], spacing: [1.0; 3], structures: 3, channels: 2, seed: 3 };
    let (volume, _) = generate(&spec, 0);
    for blend in [Blend::Average, Blend::Gaussian { sigma_scale: DEFAULT_SIGMA_SCALE }] {
        let patch = [16, 12, 16];
        let grid = GridSampler::new(&volume, patch, 0.5);
        let mut agg = Aggregator::new(volume.shape, volume.channels, patch, blend);
        for (origin, p) in grid.iter() {
            agg.add(origin, &p);
        }
        let out = agg.finish();
        let worst = out.iter().zip(&volume.data).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
        assert!(worst < 1e-5, "{blend:?}: relative error {worst}");
    }
}

#[test]
fn a_patch_larger_than_the_volume_is_one_padded_window() {
    let spec = PhantomSpec { shape: [10, 9, 8], spacing: [1.0; 3], structures: 2, channels: 1, seed: 1 };
    let (volume, _) = generate(&spec, 0);
    let grid = GridSampler::new(&volume, [16, 16, 16], 0.5);
    assert_eq!(grid.origins(), &[[0, 0, 0]]);
    let mut agg = Aggregator::new(volume.shape, 1, [16, 16, 16], Blend::Gaussian { sigma_scale: 0.125 });
    let (origin, p) = grid.iter().next().unwrap();
    assert_eq!(p.len(), 16 * 16 * 16);
    agg.add(origin, &p);
    let out = agg.finish();
    assert!(out.iter().zip(&volume.data).all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0)));
}

#[test]
fn gaussian_weights_peak_in_the_centre_and_never_reach_zero() {
    let map = importance_map([32, 32, 32], Blend::Gaussian { sigma_scale: 0.125 });
    let centre = map[linear_index([32, 32, 32], 16, 16, 16)];
    let corner = map[0];
    assert!(centre > 0.95 && centre <= 1.0, "{centre}");
    assert!(corner > 0.0 && corner < 1e-6, "{corner}");
    assert!(importance_map([4, 4, 4], Blend::Average).iter().all(|&w| w == 1.0));
}

#[test]
fn overlapping_gaussian_windows_weight_each_window_by_its_centre() {
    // Two windows predict constants 0 and 1; the blend at a voxel follows which window centre is nearer.
    let shape = [24, 8, 8];
    let patch = [16, 8, 8];
    let mut agg = Aggregator::new(shape, 1, patch, Blend::Gaussian { sigma_scale: 0.125 });
    agg.add([0, 0, 0], &vec![0.0; voxel_count(patch)]);
    agg.add([8, 0, 0], &vec![1.0; voxel_count(patch)]);
    let out = agg.finish();
    let at = |x| out[linear_index(shape, x, 4, 4)];
    assert_eq!(at(2), 0.0);
    assert!(at(9) < 0.2 && at(14) > 0.8, "{} {}", at(9), at(14));
    assert!((at(11) + at(12) - 1.0).abs() < 1e-4, "symmetric about the midpoint");
    assert_eq!(at(20), 1.0);
}

#[test]
fn the_aggregator_holds_one_output_volume_and_one_weight_map() {
    let agg = Aggregator::new([100, 100, 50], 4, [32, 32, 32], Blend::Average);
    assert_eq!(agg.bytes(), (4 * 500_000 + 500_000 + 32 * 32 * 32) * 4);
}
