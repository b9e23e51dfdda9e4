//! Each decision rule of `plan`, on budgets chosen to force it, and the stable JSON schema.

use voxplan_planner::{
    CheckpointingRequest, DeviceSelector, NetworkSpec, NormKind, PlanRequest, PlanSettings, Precision,
    PrecisionRequest, ReportFormat, device_profile, plan, plan_inference, render,
};

const MIB: u64 = 1 << 20;

fn unet(features: &[usize], norm: NormKind) -> NetworkSpec {
    NetworkSpec::plain_unet(1, 3, features, norm)
}

/// `gpu` names a card from the table, or "cpu" for this machine (flex: no allocator page rounding, so
/// budgets between two curve points behave exactly).
fn request(net: NetworkSpec, patch: [usize; 3], gpu: &str, budget: Option<u64>) -> PlanRequest {
    let selector = if gpu == "cpu" { DeviceSelector::Cpu } else { DeviceSelector::Gpu(gpu.into()) };
    PlanRequest {
        network: net,
        settings: PlanSettings { patch_size: patch, target_effective_batch: 8, ..PlanSettings::default() },
        device: device_profile(&selector).unwrap(),
        budget_bytes: budget,
        median_shape: None,
        devices: 1,
    }
}

fn topic<'a>(r: &'a voxplan_planner::PlanReport, t: &str) -> &'a voxplan_planner::report::Decision {
    r.decisions.iter().find(|d| d.topic == t).unwrap_or_else(|| panic!("no {t} decision"))
}

#[test]
fn precision_follows_the_device() {
    let net = unet(&[16, 32, 64], NormKind::Instance);
    assert_eq!(plan(&request(net.clone(), [64; 3], "H100", None)).unwrap().training.precision, Precision::Bf16Mixed);
    assert_eq!(plan(&request(net.clone(), [64; 3], "T4", None)).unwrap().training.precision, Precision::F16Mixed);
    let mut r = request(net, [64; 3], "H100", None);
    r.settings.precision = PrecisionRequest::F32;
    assert_eq!(plan(&r).unwrap().training.precision, Precision::F32);
}

#[test]
fn batch_is_the_largest_that_fits_and_accumulation_makes_up_the_target() {
    let net = unet(&[32, 64, 128, 256], NormKind::Instance);
    let big = plan(&request(net.clone(), [128; 3], "A100-80GB", None)).unwrap();
    assert_eq!((big.training.batch_size, big.training.accumulation_steps), (8, 1));
    // A budget between batch 2 and batch 3 of the curve.
    let curve = &big.batch_curve;
    let b2 = curve.iter().find(|p| p.batch_size == 2).unwrap().predicted_peak_bytes;
    let b3 = curve.iter().find(|p| p.batch_size == 3).unwrap().predicted_peak_bytes;
    let budget = ((b2 + b3) / 2) as f64 / 0.9;
    let r = plan(&request(net, [128; 3], "A100-80GB", Some(budget as u64))).unwrap();
    assert_eq!(r.training.batch_size, 2);
    assert_eq!(r.training.accumulation_steps, 4);
    assert_eq!(r.training.effective_batch, 8);
    assert!(r.training.predicted_peak_bytes <= r.budget.usable_bytes);
    // Linear scaling from reference batch 2 at 0.01.
    assert!((r.training.learning_rate - 0.04).abs() < 1e-12);
    assert!(topic(&r, "learning_rate").reason.contains("Goyal"));
}

/// Several devices: the per-device batch, the accumulation and the learning rate follow the effective batch
/// across all of them, and memory stays per device.
#[test]
fn a_world_of_devices_shares_the_effective_batch() {
    let net = unet(&[32, 64, 128, 256], NormKind::Instance);
    let one = plan(&request(net.clone(), [128; 3], "A100-80GB", None)).unwrap();
    assert_eq!((one.training.batch_size, one.training.accumulation_steps, one.training.devices), (8, 1, 1));
    let mut four = request(net.clone(), [128; 3], "A100-80GB", None);
    four.devices = 4;
    let four = plan(&four).unwrap();
    let t = &four.training;
    assert_eq!((t.batch_size, t.devices, t.accumulation_steps, t.effective_batch), (2, 4, 1, 8));
    assert!((t.learning_rate - one.training.learning_rate).abs() < 1e-12, "same effective batch, same rate");
    assert!(t.predicted_peak_bytes < one.training.predicted_peak_bytes, "memory is per device");
    assert!(topic(&four, "devices").reason.contains("2 per device × 4 devices × 1 accumulation = effective batch 8"));
    // Only 3 fit per device on a small budget: 2 per device on 2 devices with accumulation 2 makes 8 exactly,
    // where 3 would make 12.
    let b3 = one.batch_curve.iter().find(|p| p.batch_size == 3).unwrap().predicted_peak_bytes;
    let b4 = one.batch_curve.iter().find(|p| p.batch_size == 4).unwrap().predicted_peak_bytes;
    let mut two = request(net.clone(), [128; 3], "A100-80GB", Some(((b3 + b4) / 2) as f64 as u64 * 10 / 9));
    two.devices = 2;
    let t = plan(&two).unwrap().training;
    assert_eq!((t.batch_size, t.accumulation_steps, t.effective_batch), (2, 2, 8));
    // More devices than the target: one sample each, an effective batch of the device count, said so.
    let mut many = request(net, [128; 3], "A100-80GB", None);
    many.devices = 16;
    let r = plan(&many).unwrap();
    assert_eq!((r.training.batch_size, r.training.effective_batch), (1, 16));
    assert!(topic(&r, "devices").reason.contains("nearest to the target 8"), "{}", topic(&r, "devices").reason);
    let mut none = request(unet(&[8, 16], NormKind::Instance), [32; 3], "T4", None);
    none.devices = 0;
    assert!(plan(&none).unwrap_err().to_string().contains("--devices"));
}

/// BatchNorm kept on several devices is said to be per device (burn has no synchronised BatchNorm).
#[test]
fn batchnorm_on_several_devices_is_per_device_and_said_so() {
    let mut r = request(unet(&[8, 16], NormKind::Batch), [32; 3], "A100-80GB", None);
    r.settings.target_effective_batch = 64;
    r.devices = 4;
    let report = plan(&r).unwrap();
    assert_eq!(report.training.network.norm, NormKind::Batch);
    assert!(topic(&report, "norm").reason.contains("no synchronised BatchNorm"), "{}", topic(&report, "norm").reason);
}

#[test]
fn batchnorm_becomes_groupnorm_below_the_threshold() {
    let net = unet(&[24, 48, 96], NormKind::Batch);
    let r = plan(&request(net, [64; 3], "cpu", Some(2000 * MIB))).unwrap();
    assert!(r.training.batch_size < 8);
    // 24, 48, 96: the largest group count ≤ 32 dividing all is 24.
    assert_eq!(r.training.network.norm, NormKind::Group { groups: 24 });
    assert!(topic(&r, "norm").reason.contains("34.7"));
    assert!(r.alternatives.iter().any(|a| a.label == "keep batch"));
}

#[test]
fn checkpointing_comes_before_shrinking_the_patch() {
    let net = unet(&[32, 64, 128, 256], NormKind::Instance);
    let free = plan(&request(net.clone(), [128; 3], "cpu", Some(1 << 40))).unwrap();
    let one = free.batch_curve[0].predicted_peak_bytes;
    let ck_alt = plan(&request(net.clone(), [128; 3], "cpu", Some((one as f64 / 0.9) as u64 + 1))).unwrap();
    assert!(!ck_alt.training.checkpointing);
    let ck_peak = ck_alt.alternatives.iter().find(|a| a.label == "checkpointing on").unwrap().predicted_peak_bytes;
    assert!(ck_peak < one);
    // A budget that fits batch 1 only with checkpointing.
    let budget = ((ck_peak + one) / 2) as f64 / 0.9;
    let r = plan(&request(net.clone(), [128; 3], "cpu", Some(budget as u64))).unwrap();
    assert!(r.training.checkpointing);
    assert_eq!(r.training.patch_size, [128; 3]);
    // Even less: the patch shrinks along the axis with the largest patch/median ratio.
    let mut req = request(net, [128; 3], "cpu", Some((ck_peak as f64 * 0.8 / 0.9) as u64));
    req.median_shape = Some([200, 200, 100]);
    let r = plan(&req).unwrap();
    assert_eq!(r.training.patch_size[0..2], [128, 128]);
    assert!(r.training.patch_size[2] < 128);
    assert!(topic(&r, "patch").reason.contains("axis z"));
}

#[test]
fn nothing_fitting_names_the_budget_that_would() {
    let net = unet(&[32, 64, 128, 256], NormKind::Instance);
    let e = plan(&request(net, [128; 3], "H100", Some(8 * MIB))).unwrap_err().to_string();
    assert!(e.contains("nothing fits") && e.contains("a budget of at least"), "{e}");
}

#[test]
fn bad_settings_name_the_field() {
    let mut r = request(unet(&[16, 32], NormKind::Instance), [32; 3], "T4", None);
    r.settings.target_effective_batch = 0;
    assert!(plan(&r).unwrap_err().to_string().contains("plan.target_effective_batch"));
    let mut r = request(unet(&[16, 0], NormKind::Instance), [32; 3], "T4", None);
    r.settings.checkpointing = CheckpointingRequest::Never;
    assert!(plan(&r).unwrap_err().to_string().contains("network.stages[1].features"));
}

#[test]
fn inference_batches_more_windows_with_more_memory() {
    let net = unet(&[32, 64, 128, 256], NormKind::Instance);
    let dev = device_profile(&DeviceSelector::Gpu("H100".into())).unwrap();
    let small = plan_inference(&net, [128; 3], [512, 512, 300], Precision::Bf16Mixed, &dev, Some(16 << 30)).unwrap();
    let big = plan_inference(&net, [128; 3], [512, 512, 300], Precision::Bf16Mixed, &dev, None).unwrap();
    assert!(big.windows_per_pass > small.windows_per_pass && small.windows_per_pass >= 1);
    assert_eq!(small.total_windows, 7 * 7 * 4);
    assert_eq!(small.output_accumulator_bytes, (4 * 512 * 512 * 300 + 128 * 128 * 128) * 4);
    assert!(small.predicted_peak_bytes <= small.budget_bytes);
}

/// The top-level and nested keys of the JSON report: changing them breaks users' scripts.
#[test]
fn json_schema_is_stable() {
    let r = plan(&request(unet(&[16, 32, 64], NormKind::Batch), [64; 3], "T4", None)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>().join(",");
    assert_eq!(
        keys(&v),
        "alternatives,batch_curve,budget,decisions,device,layers,max_batch_that_fits,parameters,peak_components,\
         peak_op,peak_phase,schema_version,training"
    );
    assert_eq!(
        keys(&v["training"]),
        "accumulation_steps,batch_size,budget_bytes,checkpointing,devices,effective_batch,fixed_overhead_bytes,\
         learning_rate,network,patch_size,precision,predicted_peak_bytes,warmup_steps"
    );
    assert_eq!(keys(&v["budget"]), "raw_bytes,safety_margin_fraction,source,usable_bytes");
    assert_eq!(keys(&v["device"]), "backend,bf16,fp16_fast,free_bytes,kind,name,source,total_bytes");
    assert_eq!(keys(&v["decisions"][0]), "choice,reason,topic");
    assert_eq!(
        keys(&v["alternatives"][0]),
        "batch_size,checkpointing,fits,label,norm,note,patch_size,precision,predicted_peak_bytes"
    );
    assert_eq!(keys(&v["batch_curve"][0]), "batch_size,fits,predicted_peak_bytes");
    assert_eq!(keys(&v["layers"][0]), "kept_bytes,name,params,transient_bytes");
    assert_eq!(
        keys(&v["peak_components"]),
        "activation_bytes,allocator_slack_bytes,batch_bytes,fixed_bytes,model_state_bytes,temporary_bytes,workspace_bytes"
    );
    assert_eq!(v["schema_version"], 1);
    // A CPU plan also says which CPU it is for: its L2 share and compute threads, and where each came from.
    let cpu = plan(&request(unet(&[8, 16], NormKind::Instance), [16; 3], "cpu", None)).unwrap();
    let c: serde_json::Value = serde_json::from_str(&render(&cpu, ReportFormat::Json)).unwrap();
    assert_eq!(keys(&c["device"]), "backend,bf16,cpu,fp16_fast,free_bytes,kind,name,source,total_bytes");
    assert_eq!(keys(&c["device"]["cpu"]), "compute_threads,l2_bytes_per_core,l2_source,threads_source");
    assert!(["this_machine", "stated"].contains(&c["device"]["cpu"]["l2_source"].as_str().unwrap()), "{c}");
    // The other renderers carry the same facts.
    let html = render(&r, ReportFormat::Html);
    assert!(html.contains("<svg") && html.contains("Decisions"));
    assert!(render(&r, ReportFormat::Markdown).contains("| topic | choice | reason |"));
    assert!(render(&r, ReportFormat::Text).contains("because"));
}
