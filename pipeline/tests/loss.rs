//! Dice + CE: its minimum, the ignore label, deep-supervision weighting and label downsampling.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use voxplan_pipeline::loss::{DiceCeLoss, deep_supervision_weights, downsample_labels};

type B = Flex;

fn labels(values: Vec<i32>, shape: [usize; 4]) -> Tensor<B, 4, Int> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Labels `[1, 4, 4, 4]`: class by position (x < 2 → 0, else 1 or 2 by z parity).
fn sample_labels() -> Vec<i32> {
    let mut v = Vec::new();
    for z in 0..4 {
        for _y in 0..4 {
            for x in 0..4 {
                v.push(if x < 2 {
                    0
                } else if z % 2 == 0 {
                    1
                } else {
                    2
                });
            }
        }
    }
    v
}

/// Logits `[1, 3, 4, 4, 4]` that put `confidence` on `labels` (value 0 elsewhere).
fn logits_for(labels: &[i32], confidence: f32) -> Tensor<B, 5> {
    let mut v = vec![0.0f32; 3 * labels.len()];
    for (i, &l) in labels.iter().enumerate() {
        let class = (l as usize).min(2);
        v[class * labels.len() + i] = confidence;
    }
    Tensor::from_data(TensorData::new(v, [1, 3, 4, 4, 4]), &Default::default())
}

fn value(t: Tensor<B, 1>) -> f32 {
    t.into_scalar()
}

#[test]
fn perfect_logits_reach_the_minimum_and_wrong_ones_do_not() {
    let l = sample_labels();
    let loss = DiceCeLoss::new(3, None);
    let perfect = value(loss.forward(&[logits_for(&l, 30.0)], labels(l.clone(), [1, 4, 4, 4])));
    assert!(perfect.abs() < 1e-4, "perfect prediction loss {perfect}");
    let uniform =
        value(loss.forward(&[Tensor::zeros([1, 3, 4, 4, 4], &Default::default())], labels(l.clone(), [1, 4, 4, 4])));
    // Uniform softmax: CE = ln 3; soft Dice per foreground class = 2·(n/3)/(n/3·... ) < 1.
    assert!(uniform > 3f32.ln(), "uniform logits loss {uniform}");
    let shifted: Vec<i32> = l.iter().map(|&c| (c + 1) % 3).collect();
    let wrong = value(loss.forward(&[logits_for(&shifted, 30.0)], labels(l, [1, 4, 4, 4])));
    assert!(wrong > uniform, "confidently wrong {wrong} should exceed uniform {uniform}");
}

#[test]
fn uniform_prediction_matches_a_hand_computation() {
    // 64 voxels: 32 background, 16 class 1, 16 class 2; softmax of zeros is 1/3 everywhere.
    let l = sample_labels();
    let loss = DiceCeLoss::new(3, None);
    let got = value(loss.forward(&[Tensor::zeros([1, 3, 4, 4, 4], &Default::default())], labels(l, [1, 4, 4, 4])));
    let dice = (2.0 * 16.0 / 3.0 + 1e-5) / (64.0 / 3.0 + 16.0 + 1e-5);
    let expected = 3f64.ln() + (1.0 - dice);
    assert!((got as f64 - expected).abs() < 1e-5, "{got} vs {expected}");
}

#[test]
fn ignored_voxels_do_not_change_the_loss() {
    let mut l = sample_labels();
    for v in l.iter_mut().step_by(5) {
        *v = 255;
    }
    let loss = DiceCeLoss::new(3, Some(255));
    let base_logits = logits_for(&sample_labels(), 2.0);
    let base = value(loss.forward(std::slice::from_ref(&base_logits), labels(l.clone(), [1, 4, 4, 4])));

    // Scramble the logits at ignored voxels only: the loss must not move.
    let mut data = base_logits.clone().into_data().to_vec::<f32>().unwrap();
    for (i, &lab) in l.iter().enumerate() {
        if lab == 255 {
            for c in 0..3 {
                data[c * 64 + i] = 17.0 * (c as f32 - 1.0) + i as f32 * 0.3;
            }
        }
    }
    let scrambled = Tensor::<B, 5>::from_data(TensorData::new(data.clone(), [1, 3, 4, 4, 4]), &Default::default());
    let after = value(loss.forward(&[scrambled], labels(l.clone(), [1, 4, 4, 4])));
    assert!((after - base).abs() < 1e-6, "ignored voxels changed the loss: {base} → {after}");

    // The same change at a counted voxel does move it (the test can fail).
    let counted = l.iter().position(|&v| v != 255).unwrap();
    data[counted] += 5.0;
    let moved = Tensor::<B, 5>::from_data(TensorData::new(data, [1, 3, 4, 4, 4]), &Default::default());
    assert!((value(loss.forward(&[moved], labels(l, [1, 4, 4, 4]))) - after).abs() > 1e-4);
}

#[test]
fn deep_supervision_weights_halve_and_sum_to_one() {
    let w = deep_supervision_weights(3);
    assert!((w[0] - 4.0 / 7.0).abs() < 1e-12 && (w[1] - 2.0 / 7.0).abs() < 1e-12 && (w[2] - 1.0 / 7.0).abs() < 1e-12);
    assert_eq!(deep_supervision_weights(1), vec![1.0]);
}

#[test]
fn deep_supervision_loss_is_the_weighted_sum_over_downsampled_labels() {
    let l = sample_labels();
    let full = logits_for(&l, 1.5);
    let half = Tensor::<B, 5>::from_data(
        TensorData::new((0..24).map(|i| (i % 5) as f32 * 0.4 - 0.8).collect::<Vec<f32>>(), [1, 3, 2, 2, 2]),
        &Default::default(),
    );
    let loss = DiceCeLoss::new(3, None);
    let y = labels(l, [1, 4, 4, 4]);
    let combined = value(loss.forward(&[full.clone(), half.clone()], y.clone()));
    let l0 = value(loss.forward(&[full], y.clone()));
    let l1 = value(loss.forward(&[half], downsample_labels(y, [2, 2, 2])));
    let expected = 2.0 / 3.0 * l0 + 1.0 / 3.0 * l1;
    assert!((combined - expected).abs() < 1e-5, "{combined} vs {expected}");
}

#[test]
fn labels_downsample_by_strided_nearest_neighbour() {
    // Label = linear index; every other voxel from 0 per axis.
    let y = labels((0..64).collect(), [1, 4, 4, 4]);
    let small = downsample_labels(y, [2, 2, 2]).into_data().to_vec::<i32>().unwrap();
    assert_eq!(small, vec![0, 2, 8, 10, 32, 34, 40, 42]);
    // Anisotropic: z kept, y and x halved.
    let y = labels((0..64).collect(), [1, 4, 4, 4]);
    let small = downsample_labels(y, [4, 2, 2]);
    assert_eq!(small.dims(), [1, 4, 2, 2]);
    assert_eq!(small.into_data().to_vec::<i32>().unwrap()[4..8], [16, 18, 24, 26]);
}
