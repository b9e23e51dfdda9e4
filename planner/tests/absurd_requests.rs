//! Requests far outside what anyone trains: the planner answers each with a typed error or a plan, never a
//! panic or an arithmetic overflow (found by the 2026-12-02 audit of the "any network of the family"
//! promise, docs/planner-accuracy.md).

use voxplan_planner::{
    DeviceSelector, NetworkSpec, NormKind, PlanError, PlanRequest, PlanSettings, Precision, device_profile, plan,
    plan_inference,
};

fn request(net: NetworkSpec, patch: [usize; 3], budget: Option<u64>) -> PlanRequest {
    PlanRequest {
        network: net,
        settings: PlanSettings { patch_size: patch, ..PlanSettings::default() },
        device: device_profile(&DeviceSelector::Cpu).unwrap(),
        budget_bytes: budget,
        median_shape: None,
        devices: 1,
    }
}

fn unet(features: &[usize]) -> NetworkSpec {
    NetworkSpec::plain_unet(1, 3, features, NormKind::Instance)
}

#[test]
fn a_network_too_large_to_count_is_a_typed_error() {
    // 10^8 channels: the parameters alone would be ~10^18 bytes; the weight count overflowed 64 bits.
    for features in [[100_000_000, 16], [16, usize::MAX / 4]] {
        let e = plan(&request(unet(&features), [32; 3], None)).unwrap_err();
        assert!(matches!(e, PlanError::InvalidSpec { ref field, .. } if field == "network"), "{e}");
        assert!(e.to_string().contains("too large to plan"), "{e}");
    }
}

#[test]
fn a_patch_too_large_to_count_shrinks_like_any_other() {
    // 10^7 voxels per edge: 10^21 voxels, beyond 64-bit byte counts. It is shrunk until something fits or
    // reported as not fitting; the shrinking steps skip the simulation while the bound is exceeded.
    let r = plan(&request(unet(&[4]), [10_000_000, 8, 8], Some(64 << 20)));
    match r {
        Ok(report) => assert!(report.training.patch_size[0] < 10_000_000),
        Err(e) => assert!(matches!(e, PlanError::DoesNotFit { .. }), "{e}"),
    }
}

#[test]
fn a_huge_target_batch_is_a_typed_error() {
    let mut r = request(unet(&[8, 16]), [16; 3], Some(1 << 40));
    r.settings.target_effective_batch = usize::MAX;
    let e = plan(&r).unwrap_err().to_string();
    assert!(e.contains("plan.target_effective_batch"), "{e}");
    // The largest accepted one plans: the batch search stops at its cap, accumulation makes up the rest.
    r.settings.target_effective_batch = 1 << 20;
    let p = plan(&r).unwrap();
    assert_eq!(p.training.effective_batch, p.training.batch_size * p.training.accumulation_steps);
    assert!(p.training.effective_batch >= 1 << 20);
}

#[test]
fn an_inference_volume_too_large_to_count_is_a_typed_error() {
    let dev = device_profile(&DeviceSelector::Cpu).unwrap();
    let huge = [usize::MAX / 2, 1 << 20, 1 << 20];
    let e = plan_inference(&unet(&[8, 16]), [16; 3], huge, Precision::F32, &dev, None).unwrap_err().to_string();
    assert!(e.contains("volume_shape") && e.contains("too large"), "{e}");
}
