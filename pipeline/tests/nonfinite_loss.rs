//! A loss that stops being a number ends the run with the step and micro-batch named, and the last good
//! checkpoint stays as it was. The NaN is real: the training images are replaced on disk by images holding
//! a NaN voxel (as a corrupt scan would), which the per-volume z-score spreads over the whole patch.

mod train_support;

use train_support::{cpu_options, tiny_experiment};
use voxplan_pipeline::trainer::checkpoint::{Slot, load_state, slot_dir};
use voxplan_pipeline::{PipelineError, train};
use voxplan_volumes::nifti::{DataType, read_volume, write_volume};
use voxplan_volumes::phantom::PhantomSpec;
use voxplan_volumes::phantom_msd::write_msd;

#[test]
fn a_nan_loss_stops_with_step_and_batch_named_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("Dataset003");
    let spec = PhantomSpec { shape: [24, 24, 24], spacing: [1.0; 3], structures: 2, channels: 1, seed: 5 };
    write_msd(&dataset, &spec, 4, ".nii").unwrap();
    let data = format!(
        "source = {{ kind = \"msd\", root = {:?} }}\nvalidation_fraction = 0.25",
        dataset.display().to_string()
    );
    let exp = tiny_experiment(2, "", "", Some(&data));
    let run = tmp.path().join("run");
    let mut one_epoch = cpu_options(&run);
    one_epoch.stop_after_epochs = Some(1);
    let first = train(&exp, &one_epoch).unwrap();
    assert_eq!((first.epochs_done, first.optimizer_steps), (1, 3));
    let last = slot_dir(&run, Slot::Last);
    let before = std::fs::read(last.join("model.mpk")).unwrap();

    for i in 0..4 {
        let path = dataset.join(format!("imagesTr/phantom_{i:03}_0000.nii"));
        let mut v = read_volume(&path).unwrap();
        v.data[0] = f32::NAN;
        write_volume(&path, &v, DataType::F32).unwrap();
    }
    let mut resume = cpu_options(&run);
    resume.resume = Some(run.clone());
    let err = train(&exp, &resume).unwrap_err();
    match &err {
        PipelineError::NonFiniteLoss { loss, step, epoch, micro_batch, last_checkpoint } => {
            assert!(loss.is_nan());
            assert_eq!((*step, *epoch, *micro_batch), (3, 1, 0), "the first step after the checkpoint");
            assert_eq!(last_checkpoint.as_deref(), Some(last.as_path()));
        }
        other => panic!("expected a non-finite loss, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("step 3") && message.contains("micro-batch 0"), "{message}");
    assert!(message.contains(&last.display().to_string()), "{message}");
    // The last good checkpoint is untouched.
    let state = load_state(&last).unwrap();
    assert_eq!((state.epochs_done, state.optimizer_steps), (1, 3));
    assert_eq!(std::fs::read(last.join("model.mpk")).unwrap(), before);
}
