//! The decisions: given a network, the `[plan]` settings and a device, pick precision, checkpointing,
//! patch, batch, accumulation, norm and learning rate, in the order that keeps the most of what the user
//! asked for: precision from the device, batch 1 without checkpointing, with checkpointing, and only then a
//! smaller patch. Every choice is recorded with its reason.

use serde::{Deserialize, Serialize};

use crate::device::DeviceProfile;
use crate::error::PlanError;
use crate::graph::LossKind;
use crate::plan::{Precision, TrainingPlan};
use crate::report::{
    Alternative, BudgetSummary, CurvePoint, Decision, DeviceSummary, PlanReport, REPORT_SCHEMA_VERSION,
};
use crate::rules::{
    BATCH_CURVE_POINTS, MAX_BATCH_SEARCH, MAX_GROUPNORM_GROUPS, MAX_TARGET_EFFECTIVE_BATCH, SAFETY_MARGIN_FRACTION,
};
use crate::settings::{CheckpointingRequest, PlanSettings, PrecisionRequest};
use crate::spec::{NetworkSpec, NormKind};
use crate::timeline::{SimRequest, Timeline, simulate_with};
use crate::units::format_bytes;

/// What to plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub network: NetworkSpec,
    pub settings: PlanSettings,
    pub device: DeviceProfile,
    /// Overrides the device's free memory (`--budget`).
    pub budget_bytes: Option<u64>,
    /// Median image shape `(x, y, z)` of the dataset: picks the axis to shrink when the patch must shrink.
    pub median_shape: Option<[usize; 3]>,
    /// Devices training in data parallel (the world size): each runs the planned per-device batch, and the
    /// accumulation makes up the target effective batch across all of them. Memory is per device.
    #[serde(default = "one")]
    pub devices: usize,
}

fn one() -> usize {
    1
}

/// One candidate configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    patch: [usize; 3],
    batch: usize,
    precision: Precision,
    checkpointing: bool,
}

struct Ctx<'a> {
    req: &'a PlanRequest,
    usable: u64,
}

impl Ctx<'_> {
    /// Micro-batches per optimizer step: the target effective batch over `batch` per device × the devices.
    fn accumulation(&self, batch: usize) -> usize {
        self.req.settings.target_effective_batch.div_ceil(batch * self.req.devices.max(1)).max(1)
    }

    fn simulate(&self, net: &NetworkSpec, c: Candidate) -> Timeline {
        simulate_with(&SimRequest {
            network: net,
            patch: c.patch,
            batch: c.batch,
            precision: c.precision,
            checkpointing: c.checkpointing,
            optimizer: self.req.settings.optimizer,
            accumulation: self.accumulation(c.batch),
            loss: LossKind::DiceCe,
            device: &self.req.device,
            training: true,
        })
    }

    fn fits_timeline(&self, t: &Timeline) -> bool {
        t.oversized_allocation_bytes.is_none() && t.peak_bytes <= self.usable
    }

    fn fits(&self, net: &NetworkSpec, c: Candidate) -> bool {
        // The batch (image and labels) and the fixed overheads are in every event of the step: a candidate
        // whose batch alone exceeds the budget is refused without unrolling it (a far too large patch is
        // shrunk in thousands of steps).
        let voxels = c.patch.iter().fold(c.batch as u128, |v, &p| v.saturating_mul(p as u128));
        let batch_bytes = voxels.saturating_mul(4 * (net.in_channels as u128 + 1));
        let backend = &self.req.device.backend;
        let floor = batch_bytes
            .saturating_add(backend.fixed_overhead_bytes as u128)
            .saturating_add(backend.step_overhead_bytes as u128);
        floor <= self.usable as u128 && self.fits_timeline(&self.simulate(net, c))
    }

    /// Largest batch in `1..=cap` that fits (memory grows with the batch), or 0 if none.
    fn largest_batch(&self, net: &NetworkSpec, c: Candidate, cap: usize) -> usize {
        let at = |b: usize| self.fits(net, Candidate { batch: b, ..c });
        if !at(1) {
            return 0;
        }
        let (mut lo, mut hi) = (1usize, 2usize);
        while hi <= cap && at(hi) {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        let mut hi = hi.min(cap.saturating_add(1));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at(mid) { lo = mid } else { hi = mid }
        }
        lo
    }
}

fn validate_settings(s: &PlanSettings) -> Result<(), PlanError> {
    let bad = |field: &str, problem: String| Err(PlanError::InvalidSpec { field: format!("plan.{field}"), problem });
    if s.target_effective_batch == 0 {
        return bad("target_effective_batch", "must be at least 1".into());
    }
    if s.target_effective_batch > MAX_TARGET_EFFECTIVE_BATCH {
        return bad(
            "target_effective_batch",
            format!("{} is above the largest supported, {MAX_TARGET_EFFECTIVE_BATCH}", s.target_effective_batch),
        );
    }
    if s.reference_batch == 0 {
        return bad("reference_batch", "must be at least 1".into());
    }
    if !(s.reference_lr.is_finite() && s.reference_lr > 0.0) {
        return bad("reference_lr", format!("{} is not a positive learning rate", s.reference_lr));
    }
    if s.batch_norm_min_batch == 0 {
        return bad("batch_norm_min_batch", "must be at least 1".into());
    }
    Ok(())
}

fn precision_choice(req: PrecisionRequest, d: &DeviceProfile) -> (Precision, String) {
    match req {
        PrecisionRequest::Auto if d.bf16 => (
            Precision::Bf16Mixed,
            "auto: the device has fast bf16, so convs run in bf16 with f32 norms, loss and master weights; bf16 \
             keeps f32's exponent range, so no loss scaling (Micikevicius et al. 2018 halve activation memory)"
                .into(),
        ),
        PrecisionRequest::Auto if d.fp16_fast => (
            Precision::F16Mixed,
            "auto: the device has fast f16 but no bf16, so convs run in f16 with f32 norms, loss and master \
             weights and dynamic loss scaling against f16 underflow"
                .into(),
        ),
        PrecisionRequest::Auto => {
            (Precision::F32, "auto: the device computes half precision no faster than f32, so f32 throughout".into())
        }
        PrecisionRequest::F32 => (Precision::F32, "requested f32".into()),
        PrecisionRequest::Bf16 => (
            Precision::Bf16Mixed,
            if d.bf16 {
                "requested bf16 mixed precision".into()
            } else {
                "requested bf16 mixed precision; this device has no fast bf16, so steps will be slower".into()
            },
        ),
        PrecisionRequest::F16 => (
            Precision::F16Mixed,
            if d.fp16_fast {
                "requested f16 mixed precision with dynamic loss scaling".into()
            } else {
                "requested f16 mixed precision with dynamic loss scaling; this device has no fast f16".into()
            },
        ),
    }
}

fn precision_note(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32 everywhere; works on every device",
        Precision::Bf16Mixed => "needs bf16 support (Ampere+ GPUs); f32 master weights; no loss scaling",
        Precision::F16Mixed => "needs fast f16 (tensor cores); f32 master weights; dynamic loss scaling",
    }
}

fn norm_label(n: NormKind) -> String {
    match n {
        NormKind::Batch => "batch".into(),
        NormKind::Group { groups } => format!("group({groups})"),
        NormKind::Instance => "instance".into(),
    }
}

/// Largest group count ≤ [`MAX_GROUPNORM_GROUPS`] dividing every stage's channels.
pub fn groupnorm_groups(net: &NetworkSpec) -> usize {
    (1..=MAX_GROUPNORM_GROUPS).rev().find(|g| net.stages.iter().all(|s| s.features % g == 0)).unwrap_or(1)
}

/// On several devices, the per-device batch at most `fitting` whose effective batch (× devices × the
/// accumulation that reaches `target`) comes nearest the target, the larger on a tie: 3 per device on 2
/// devices would make 12 of a target of 8, where 2 makes 8 exactly. On one device the largest that fits, as
/// always (its overshoot is at most one batch).
fn exact_share(fitting: usize, devices: usize, target: usize) -> usize {
    if devices <= 1 || fitting <= 1 {
        return fitting;
    }
    let effective = |b: usize| b * devices * target.div_ceil(b * devices);
    (1..=fitting).min_by_key(|&b| (effective(b).abs_diff(target), std::cmp::Reverse(b))).unwrap_or(fitting)
}

/// Picks the axis to shrink: largest patch / median-shape ratio among axes still above their stride.
fn shrink_patch(patch: [usize; 3], stride: [usize; 3], median: Option<[usize; 3]>) -> Option<([usize; 3], usize)> {
    let med = median.unwrap_or(patch);
    let axis = (0..3).filter(|&a| patch[a] > stride[a]).max_by(|&a, &b| {
        let ra = patch[a] as f64 / med[a].max(1) as f64;
        let rb = patch[b] as f64 / med[b].max(1) as f64;
        ra.total_cmp(&rb).then(patch[a].cmp(&patch[b])).then(b.cmp(&a))
    })?;
    let mut p = patch;
    p[axis] -= stride[axis];
    Some((p, axis))
}

/// Plans a training run. See the module docs for the order of decisions.
pub fn plan(req: &PlanRequest) -> Result<PlanReport, PlanError> {
    req.network.validate()?;
    req.network.validate_patch(req.settings.patch_size)?;
    validate_settings(&req.settings)?;
    let s = &req.settings;
    if req.devices == 0 {
        return Err(PlanError::InvalidSpec { field: "--devices".into(), problem: "must be at least 1".into() });
    }
    let raw = req.budget_bytes.unwrap_or(req.device.free_bytes);
    let usable = (raw as f64 * (1.0 - SAFETY_MARGIN_FRACTION)) as u64;
    let ctx = Ctx { req, usable };
    let mut decisions = Vec::new();
    let mut decide = |topic: &str, choice: String, reason: String| {
        decisions.push(Decision { topic: topic.into(), choice, reason });
    };
    let budget_source = if req.budget_bytes.is_some() { "--budget" } else { "device free memory" };
    decide(
        "budget",
        format_bytes(usable),
        format!(
            "{} {} minus a {:.0} % safety margin for what the model cannot see",
            budget_source,
            format_bytes(raw),
            SAFETY_MARGIN_FRACTION * 100.0
        ),
    );

    let (precision, why) = precision_choice(s.precision, &req.device);
    decide("precision", format!("{precision:?}"), why);

    let ck_options: &[bool] = match s.checkpointing {
        CheckpointingRequest::Auto => &[false, true],
        CheckpointingRequest::Always => &[true],
        CheckpointingRequest::Never => &[false],
    };
    let mut net = req.network.clone();
    let stride = net.total_stride();
    let mut patch = s.patch_size;
    let mut checkpointing;
    // Steps taken per axis; one decision sums them up (a far too large patch can take thousands).
    let mut shrunk = [0usize; 3];
    loop {
        checkpointing = ck_options
            .iter()
            .copied()
            .find(|&ck| ctx.fits(&net, Candidate { patch, batch: 1, precision, checkpointing: ck }));
        if checkpointing.is_some() {
            break;
        }
        match shrink_patch(patch, stride, req.median_shape) {
            Some((p, axis)) => {
                shrunk[axis] += 1;
                patch = p;
            }
            None => return Err(does_not_fit(&ctx, &net, patch, precision, ck_options)),
        }
    }
    if shrunk.iter().any(|&k| k > 0) {
        let steps: Vec<String> = (0..3)
            .filter(|&a| shrunk[a] > 0)
            .map(|a| format!("axis {} {} × {}", ["x", "y", "z"][a], shrunk[a], stride[a]))
            .collect();
        decide(
            "patch",
            format!("{patch:?}"),
            format!(
                "batch 1 at patch {:?} does not fit even {}; shrank {} times, each time the axis with the largest \
                 patch/median-shape ratio by its total stride ({}), until batch 1 fits",
                s.patch_size,
                if ck_options.contains(&true) { "with checkpointing" } else { "(checkpointing not allowed)" },
                shrunk.iter().sum::<usize>(),
                steps.join(", ")
            ),
        );
    }
    let checkpointing = checkpointing.unwrap_or(false);
    let base = Candidate { patch, batch: 1, precision, checkpointing };
    decide(
        "checkpointing",
        if checkpointing { "balanced".into() } else { "off".into() },
        match (s.checkpointing, checkpointing) {
            (CheckpointingRequest::Always, _) => "requested always".into(),
            (CheckpointingRequest::Never, _) => "requested never".into(),
            (_, true) => "batch 1 does not fit without it; burn's balanced strategy recomputes memory-bound ops \
                          (norm intermediates) for about one extra forward pass (Chen et al. 2016)"
                .into(),
            (_, false) => "batch 1 fits without it, so no recomputation cost".into(),
        },
    );

    let target = s.target_effective_batch;
    let devices = req.devices.max(1);
    // Per device, no more than its share of the target: more would only overshoot the effective batch.
    let share = target.div_ceil(devices);
    let mut batch = exact_share(ctx.largest_batch(&net, base, share), devices, target);
    let mut max_fit = ctx.largest_batch(&net, base, MAX_BATCH_SEARCH);
    if net.norm == NormKind::Batch && batch < s.batch_norm_min_batch {
        let groups = groupnorm_groups(&net);
        net.norm = NormKind::Group { groups };
        batch = exact_share(ctx.largest_batch(&net, base, share), devices, target).max(batch);
        max_fit = ctx.largest_batch(&net, base, MAX_BATCH_SEARCH).max(max_fit);
        decide(
            "norm",
            format!("group({groups}) instead of batch"),
            format!(
                "per-device batch {batch} < {} (plan.batch_norm_min_batch): BatchNorm statistics from so few \
                 samples hurt accuracy (Wu & He 2018: BN 34.7 % vs GN 24.1 % error at 2 per GPU); GroupNorm does \
                 not depend on the batch; {groups} = largest group count ≤ {MAX_GROUPNORM_GROUPS} dividing every \
                 stage's channels",
                s.batch_norm_min_batch
            ),
        );
    } else if net.norm == NormKind::Batch && devices > 1 {
        decide(
            "norm",
            "batch (per device)".into(),
            format!(
                "as requested, with per-device batch {batch} ≥ {}; burn has no synchronised BatchNorm, so each of \
                 the {devices} devices normalises over its own {batch} samples",
                s.batch_norm_min_batch
            ),
        );
    } else {
        decide("norm", norm_label(net.norm), "as requested".into());
    }
    decide(
        "batch",
        batch.to_string(),
        if batch >= share && devices > 1 {
            format!(
                "per device: its share ceil({target} / {devices} devices) = {share} of the target effective batch fits \
                 in one pass (up to {max_fit} would fit)"
            )
        } else if batch >= target {
            format!("the target effective batch {target} fits in one pass (up to {max_fit} would fit)")
        } else {
            format!("the largest batch that fits; {} does not", batch + 1)
        },
    );
    let accumulation = ctx.accumulation(batch);
    let effective = batch * devices * accumulation;
    if devices > 1 {
        decide(
            "devices",
            format!("{devices} in data parallel"),
            format!(
                "{batch} per device × {devices} devices × {accumulation} accumulation = effective batch {effective}{}; \
                 gradients are averaged across the devices before every optimizer step, and memory is per device",
                if effective == target {
                    String::new()
                } else {
                    format!(" (the nearest to the target {target} that {devices} devices can make)")
                }
            ),
        );
    }
    decide(
        "accumulation",
        accumulation.to_string(),
        format!(
            "ceil(target {target} / ({batch} per device × {devices} device(s))) micro-batches per optimizer step, each \
             loss divided by {accumulation}; effective batch {effective}{}",
            if accumulation > 1 && net.norm == NormKind::Batch {
                " (BatchNorm statistics still see only one micro-batch)"
            } else {
                ""
            }
        ),
    );
    let lr = s.reference_lr * effective as f64 / s.reference_batch as f64;
    decide(
        "learning_rate",
        format!("{lr:e} with {} warm-up steps", s.warmup_steps),
        format!(
            "linear scaling (Goyal et al. 2017): {} × effective batch {effective} / reference batch {}, reached by a \
             linear warm-up over {} optimizer steps",
            s.reference_lr, s.reference_batch, s.warmup_steps
        ),
    );

    let chosen = Candidate { batch, ..base };
    let timeline = ctx.simulate(&net, chosen);
    let alternatives = alternatives(&ctx, &net, &req.network, chosen);
    let batch_curve = batch_curve(&ctx, &net, chosen);
    let training = TrainingPlan {
        network: net,
        patch_size: patch,
        devices,
        batch_size: batch,
        accumulation_steps: accumulation,
        effective_batch: effective,
        precision,
        checkpointing,
        learning_rate: lr,
        warmup_steps: s.warmup_steps,
        predicted_peak_bytes: timeline.peak_bytes,
        budget_bytes: usable,
        fixed_overhead_bytes: req.device.backend.fixed_overhead_bytes,
    };
    let d = &req.device;
    Ok(PlanReport {
        schema_version: REPORT_SCHEMA_VERSION,
        device: DeviceSummary {
            name: d.name.clone(),
            kind: d.kind,
            backend: d.backend.kind,
            total_bytes: d.total_bytes,
            free_bytes: d.free_bytes,
            bf16: d.bf16,
            fp16_fast: d.fp16_fast,
            source: d.source.clone(),
            cpu: d.cpu,
        },
        budget: BudgetSummary {
            source: budget_source.into(),
            raw_bytes: raw,
            safety_margin_fraction: SAFETY_MARGIN_FRACTION,
            usable_bytes: usable,
        },
        training,
        max_batch_that_fits: max_fit,
        peak_op: timeline.peak_op,
        peak_phase: timeline.peak_phase,
        peak_components: timeline.peak_components,
        parameters: timeline.param_count,
        decisions,
        alternatives,
        layers: timeline.per_layer,
        batch_curve,
    })
}

fn does_not_fit(
    ctx: &Ctx,
    net: &NetworkSpec,
    patch: [usize; 3],
    precision: Precision,
    ck_options: &[bool],
) -> PlanError {
    let ck = ck_options.contains(&true);
    let t = ctx.simulate(net, Candidate { patch, batch: 1, precision, checkpointing: ck });
    if t.is_uncountable() {
        return PlanError::InvalidSpec {
            field: "network".into(),
            problem: format!(
                "too large to plan: at batch 1 and patch {patch:?} its parameters and activations would need \
                 more than 4 EiB, beyond 64-bit byte counts and any device"
            ),
        };
    }
    let needed_budget = (t.peak_bytes as f64 / (1.0 - SAFETY_MARGIN_FRACTION)).ceil() as u64;
    let mut how = format!("{precision:?}, checkpointing {}", if ck { "on" } else { "off" });
    if let Some(b) = t.oversized_allocation_bytes {
        how.push_str(&format!("; one tensor of {} exceeds the largest single allocation", format_bytes(b)));
    }
    PlanError::DoesNotFit {
        budget: format_bytes(ctx.usable),
        patch,
        how,
        needed: format_bytes(t.peak_bytes),
        needed_budget: format_bytes(needed_budget),
    }
}

fn alternatives(ctx: &Ctx, net: &NetworkSpec, requested: &NetworkSpec, c: Candidate) -> Vec<Alternative> {
    let mut out = Vec::new();
    let mut push = |label: String, net: &NetworkSpec, c: Candidate, note: String| {
        let t = ctx.simulate(net, c);
        out.push(Alternative {
            label,
            patch_size: c.patch,
            batch_size: c.batch,
            precision: c.precision,
            checkpointing: c.checkpointing,
            norm: norm_label(net.norm),
            predicted_peak_bytes: t.peak_bytes,
            fits: ctx.fits_timeline(&t),
            note,
        });
    };
    push(
        format!("batch {}", c.batch + 1),
        net,
        Candidate { batch: c.batch + 1, ..c },
        "one more sample per pass".into(),
    );
    push(
        format!("checkpointing {}", if c.checkpointing { "off" } else { "on" }),
        net,
        Candidate { checkpointing: !c.checkpointing, ..c },
        if c.checkpointing { "no recomputation".into() } else { "about one extra forward pass per step".into() },
    );
    for p in [Precision::F32, Precision::Bf16Mixed, Precision::F16Mixed] {
        if p != c.precision {
            push(format!("{p:?}"), net, Candidate { precision: p, ..c }, precision_note(p).into());
        }
    }
    if requested.norm != net.norm {
        push(
            format!("keep {}", norm_label(requested.norm)),
            requested,
            c,
            "batch statistics from this per-device batch".into(),
        );
    }
    if c.patch != ctx.req.settings.patch_size {
        push(
            "requested patch".into(),
            net,
            Candidate { patch: ctx.req.settings.patch_size, batch: 1, ..c },
            "the patch asked for, at batch 1".into(),
        );
    }
    out
}

fn batch_curve(ctx: &Ctx, net: &NetworkSpec, c: Candidate) -> Vec<CurvePoint> {
    let mut out: Vec<CurvePoint> = Vec::new();
    let mut b = 1usize;
    while out.len() < BATCH_CURVE_POINTS {
        let t = ctx.simulate(net, Candidate { batch: b, ..c });
        let fits = ctx.fits_timeline(&t);
        out.push(CurvePoint { batch_size: b, predicted_peak_bytes: t.peak_bytes, fits });
        if !fits && out.iter().filter(|p| !p.fits).count() >= 2 {
            break;
        }
        // 1, 2, 3, 4, 6, 8, 12, 16, ...: dense where plans live, geometric beyond.
        b = if b < 4 {
            b + 1
        } else if b.is_power_of_two() {
            b + b / 2
        } else {
            b.next_power_of_two()
        };
    }
    out
}
