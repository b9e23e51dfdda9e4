//! Train/validation split of case indices: a seeded hold-out fraction, or fold `fold` of k-fold
//! cross-validation. Both shuffle with `split_seed` only, so the split does not move when the training
//! seed changes, and k folds partition the cases exactly (every case validates in exactly one fold).

use rand::seq::SliceRandom;

use crate::config::DataConfig;
use crate::error::{Result, VolumeError};
use crate::seed::{domain, rng_for};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

impl DataConfig {
    /// Checks the split and preprocessing fields; `open_source` calls it, so `split` may assume it.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, problem: String| Err(VolumeError::Config { field: field.into(), problem });
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return bad("data.validation_fraction", format!("{} is not in [0, 1)", self.validation_fraction));
        }
        if let Some(k) = self.folds {
            if k < 2 {
                return bad("data.folds", format!("{k} folds: need at least 2"));
            }
            if self.fold >= k {
                return bad("data.fold", format!("fold {} does not exist with {k} folds (0-based)", self.fold));
            }
        }
        if let Some(t) = self.target_spacing
            && t.iter().any(|&s| !(s.is_finite() && s > 0.0))
        {
            return bad("data.target_spacing", format!("{t:?} must be positive millimetres"));
        }
        Ok(())
    }
}

/// Splits `0..n_cases`. Out-of-range settings are clamped (call [`DataConfig::validate`] to reject them):
/// `fold` wraps modulo `folds`, and a hold-out keeps at least one training case.
pub fn split(n_cases: usize, cfg: &DataConfig) -> Split {
    let mut order: Vec<usize> = (0..n_cases).collect();
    order.shuffle(&mut rng_for(&[domain::SPLIT, cfg.split_seed]));
    let (train, validation): (Vec<usize>, Vec<usize>) = match cfg.folds {
        Some(k) if k >= 2 => {
            let fold = cfg.fold % k;
            let (val, tr): (Vec<_>, Vec<_>) = order.iter().enumerate().partition(|(pos, _)| pos % k == fold);
            (tr.into_iter().map(|(_, &c)| c).collect(), val.into_iter().map(|(_, &c)| c).collect())
        }
        _ => {
            let wanted = (n_cases as f64 * cfg.validation_fraction.clamp(0.0, 1.0)).round() as usize;
            let held = wanted.min(n_cases.saturating_sub(1));
            (order[held..].to_vec(), order[..held].to_vec())
        }
    };
    let sorted = |mut v: Vec<usize>| {
        v.sort_unstable();
        v
    };
    Split { train: sorted(train), validation: sorted(validation) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataSource, Modality};

    fn cfg(folds: Option<usize>, fold: usize, seed: u64) -> DataConfig {
        DataConfig {
            source: DataSource::Msd { root: "x".into() },
            modality: Modality::Mri,
            target_spacing: None,
            validation_fraction: 0.25,
            folds,
            fold,
            split_seed: seed,
            labels: None,
            orientation: Default::default(),
        }
    }

    #[test]
    fn holdout_is_seeded_disjoint_and_complete() {
        let a = split(12, &cfg(None, 0, 1));
        assert_eq!(a.validation.len(), 3);
        let mut all: Vec<usize> = a.train.iter().chain(&a.validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
        assert_eq!(a, split(12, &cfg(None, 0, 1)));
        assert_ne!(a, split(12, &cfg(None, 0, 2)));
    }

    #[test]
    fn k_folds_partition_the_cases() {
        let mut seen = Vec::new();
        for f in 0..5 {
            let s = split(23, &cfg(Some(5), f, 3));
            assert!(s.validation.len() == 4 || s.validation.len() == 5);
            assert_eq!(s.train.len() + s.validation.len(), 23);
            assert!(s.validation.iter().all(|v| !s.train.contains(v)));
            seen.extend(s.validation);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
    }

    #[test]
    fn a_single_case_stays_in_training_and_bad_folds_are_rejected() {
        assert_eq!(split(1, &cfg(None, 0, 0)).train, vec![0]);
        assert!(matches!(cfg(Some(3), 3, 0).validate(), Err(VolumeError::Config { .. })));
        assert!(matches!(cfg(Some(1), 0, 0).validate(), Err(VolumeError::Config { .. })));
    }
}
