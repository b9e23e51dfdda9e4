//! The optimizer's momentum survives a save/load: a resumed run takes the same next step.

mod model_support;

use burn::optim::GradientsParams;
use model_support::{Train, batch, spec};
use voxplan_pipeline::loss::DiceCeLoss;
use voxplan_pipeline::model::{UNet, UNetConfig};
use voxplan_pipeline::optim::build_optimizer;
use voxplan_planner::{NormKind, OptimizerKind, Precision};

fn weights(net: &UNet<Train>) -> Vec<f32> {
    net.decoder.stages[0].convs[0].conv.conv.weight.val().into_data().to_vec::<f32>().unwrap()
}

#[test]
fn saved_momentum_reproduces_the_next_step() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let net: UNet<Train> = UNetConfig::new(spec(&[4, 8], NormKind::Instance), Precision::F32).init(&device);
        let (x, y) = batch::<Train>(1, [16, 16, 16], &device);
        let loss_fn = DiceCeLoss::new(3, None);
        let grads = |n: &UNet<Train>| {
            GradientsParams::from_grads(loss_fn.forward(&n.forward(x.clone()), y.clone()).backward(), n)
        };
        let mut optimizer = build_optimizer::<Train, UNet<Train>>(kind, 3e-5);
        let net = optimizer.step(0.01, net.clone(), grads(&net));
        let path = dir.path().join(format!("{kind:?}"));
        optimizer.save(&path).unwrap();

        let continued = optimizer.step(0.01, net.clone(), grads(&net));
        let resumed_optimizer = build_optimizer::<Train, UNet<Train>>(kind, 3e-5).load(&path, &device).unwrap();
        let mut resumed_optimizer = resumed_optimizer;
        let resumed = resumed_optimizer.step(0.01, net.clone(), grads(&net));
        let mut fresh_optimizer = build_optimizer::<Train, UNet<Train>>(kind, 3e-5);
        let fresh = fresh_optimizer.step(0.01, net.clone(), grads(&net));

        assert_eq!(weights(&resumed), weights(&continued), "{kind:?}: resumed step differs");
        assert_ne!(weights(&fresh), weights(&continued), "{kind:?}: state had no effect, the test proves nothing");
    }
}

#[test]
fn loading_a_missing_state_names_the_file() {
    let e = build_optimizer::<Train, UNet<Train>>(OptimizerKind::Sgd, 0.0)
        .load(std::path::Path::new("/nonexistent/optim"), &Default::default())
        .err()
        .expect("missing file must be an error");
    assert!(e.to_string().contains("/nonexistent/optim"), "{e}");
}
