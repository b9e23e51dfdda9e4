//! The validation metric: hard Dice per class between a predicted and a reference label map.

/// Dice `2|P∩T| / (|P| + |T|)` for every class `0..num_classes` (background included, index = class).
///
/// Voxels whose target is `ignore_label` are left out. A class absent from both maps gets `None`, so that
/// averages skip it instead of counting a meaningless 1 or 0 (nnU-Net reports NaN there). Labels
/// `>= num_classes` belong to no class. Both maps must cover the same voxels: only the common prefix is
/// compared when lengths differ (a caller bug, logged).
pub fn dice_per_class(pred: &[u16], target: &[u16], num_classes: usize, ignore_label: Option<u16>) -> Vec<Option<f64>> {
    if pred.len() != target.len() {
        tracing::error!(pred = pred.len(), target = target.len(), "dice of label maps of different sizes");
    }
    let mut predicted = vec![0u64; num_classes];
    let mut reference = vec![0u64; num_classes];
    let mut overlap = vec![0u64; num_classes];
    for (&p, &t) in pred.iter().zip(target) {
        if Some(t) == ignore_label {
            continue;
        }
        let (p, t) = (p as usize, t as usize);
        if p < num_classes {
            predicted[p] += 1;
        }
        if t < num_classes {
            reference[t] += 1;
            if p == t {
                overlap[t] += 1;
            }
        }
    }
    (0..num_classes)
        .map(|k| {
            let denominator = predicted[k] + reference[k];
            (denominator > 0).then(|| 2.0 * overlap[k] as f64 / denominator as f64)
        })
        .collect()
}

/// Mean of the defined foreground (class ≥ 1) Dice values; `None` when no foreground class is defined.
pub fn mean_foreground_dice(per_class: &[Option<f64>]) -> Option<f64> {
    let values: Vec<f64> = per_class.iter().skip(1).flatten().copied().collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_two_classes() {
        // class 1: pred at 1,2,3; target at 2,3,4 → overlap 2, dice 2·2/(3+3) = 2/3.
        let pred = [0, 1, 1, 1, 0, 0];
        let target = [0, 0, 1, 1, 1, 0];
        let d = dice_per_class(&pred, &target, 2, None);
        assert!((d[1].unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // class 0: pred at 0,4,5; target at 0,1,5 → overlap 2, dice 2/3.
        assert!((d[0].unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn absent_class_is_none_and_missed_class_is_zero() {
        let pred = [0, 0, 1, 1];
        let target = [0, 0, 2, 2];
        let d = dice_per_class(&pred, &target, 4, None);
        assert_eq!(d[1], Some(0.0));
        assert_eq!(d[2], Some(0.0));
        assert_eq!(d[3], None);
        assert_eq!(d[0], Some(1.0));
        assert_eq!(mean_foreground_dice(&d), Some(0.0));
    }

    #[test]
    fn ignored_voxels_do_not_count() {
        let pred = [1, 1, 0, 1];
        let target = [1, 255, 0, 255];
        let d = dice_per_class(&pred, &target, 2, Some(255));
        assert_eq!(d[1], Some(1.0));
        assert_eq!(d[0], Some(1.0));
        // Without the ignore label the extra predictions cost class 1: 2·1/(3+1).
        let d = dice_per_class(&pred, &target, 2, None);
        assert_eq!(d[1], Some(0.5));
    }
}
