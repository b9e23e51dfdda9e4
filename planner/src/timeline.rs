//! The liveness simulation of one training step: forward op by op, backward in reverse, then the
//! optimizer step. Each tensor lives from the op that creates it until its last forward reader or the
//! backward of the last op that saved it; gradients of activations live from the backward of their last
//! reader to the backward of their producer; parameter gradients until the optimizer step. The peak of the
//! resulting timeline, under the device's allocator model, is the estimate.

use serde::{Deserialize, Serialize};

use crate::allocator::{AllocatorSim, Slot};
use crate::device::{BackendModel, DeviceProfile};
use crate::graph::{self, Graph, GraphOptions, LossKind, Role};
use crate::plan::Precision;
use crate::rules::{ADAMW_STATE_PER_PARAM, F32_BYTES, OPTIMIZER_STEP_TEMPORARIES, SGD_STATE_PER_PARAM};
use crate::settings::OptimizerKind;
use crate::spec::NetworkSpec;

/// Phase of the step an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Setup,
    Forward,
    Backward,
    Optimizer,
}

/// Memory right after one op ran, with its short-lived bytes still held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub op: String,
    pub phase: Phase,
    /// Bytes held by live tensors including this op's temporaries and workspace.
    pub in_use_bytes: u64,
    /// Bytes the device sees taken (allocator pages + fixed overhead); equals `in_use_bytes` + fixed on CPU.
    pub device_bytes: u64,
    /// This op's temporaries and workspace.
    pub transient_bytes: u64,
}

/// Where the bytes at the peak come from; the calibration fits constants against these.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Components {
    /// Parameters, their gradients, optimizer state, accumulation buffer, BatchNorm statistics.
    pub model_state_bytes: u64,
    /// Input image and labels of the batch.
    pub batch_bytes: u64,
    /// Activations and intermediates kept for backward, activation gradients, half weight copies.
    pub activation_bytes: u64,
    /// Op temporaries (norm/loss backward scratch).
    pub temporary_bytes: u64,
    /// Backend workspace (flex im2col).
    pub workspace_bytes: u64,
    /// Allocator pages reserved beyond what is in use (cubecl pools).
    pub allocator_slack_bytes: u64,
    /// Context/autotune or process baseline.
    pub fixed_bytes: u64,
}

/// Memory of one named layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMemory {
    pub name: String,
    /// Bytes this layer's ops keep from forward until backward (at the end of forward).
    pub kept_bytes: u64,
    /// Largest short-lived bytes of one of its ops (temporaries + workspace).
    pub transient_bytes: u64,
    /// Trainable parameters (elements).
    pub params: u64,
}

/// The whole simulated step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub events: Vec<TimelineEvent>,
    /// Highest `device_bytes` of the step: the estimate.
    pub peak_bytes: u64,
    /// Op at which the peak happens.
    pub peak_op: String,
    pub peak_phase: Phase,
    pub peak_components: Components,
    /// Bytes alive when forward ends, not counting model state (what autodiff holds for backward).
    pub forward_retained_bytes: u64,
    pub per_layer: Vec<LayerMemory>,
    pub param_count: u64,
    /// Set when one tensor exceeds what the allocator can hand out in one piece (cubecl: total/4).
    pub oversized_allocation_bytes: Option<u64>,
}

impl Timeline {
    /// The timeline of a step too large to count: peak `u64::MAX` and one allocation larger than any device
    /// can make, so that it fits no budget.
    pub fn uncountable() -> Self {
        Timeline {
            events: Vec::new(),
            peak_bytes: u64::MAX,
            peak_op: UNCOUNTABLE_OP.into(),
            peak_phase: Phase::Setup,
            peak_components: Components { fixed_bytes: u64::MAX, ..Components::default() },
            forward_retained_bytes: u64::MAX,
            per_layer: Vec::new(),
            param_count: 0,
            oversized_allocation_bytes: Some(u64::MAX),
        }
    }

    /// Whether this is [`Timeline::uncountable`].
    pub fn is_uncountable(&self) -> bool {
        self.peak_op == UNCOUNTABLE_OP && self.peak_bytes == u64::MAX
    }
}

/// The `peak_op` of a step too large to count in 64-bit bytes.
pub const UNCOUNTABLE_OP: &str = "(more than 4 EiB: not counted)";

/// Everything one simulation needs beyond the network.
#[derive(Debug, Clone)]
pub struct SimRequest<'a> {
    pub network: &'a NetworkSpec,
    pub patch: [usize; 3],
    pub batch: usize,
    pub precision: Precision,
    pub checkpointing: bool,
    pub optimizer: OptimizerKind,
    /// Micro-batches per optimizer step; > 1 adds the gradient accumulator.
    pub accumulation: usize,
    pub loss: LossKind,
    pub device: &'a DeviceProfile,
    /// false: one inference forward pass (no autodiff state, loss, gradients or optimizer).
    pub training: bool,
}

/// The liveness timeline of one training step with Dice + CE loss and no accumulation.
pub fn simulate(
    network: &NetworkSpec,
    patch: [usize; 3],
    batch: usize,
    precision: Precision,
    checkpointing: bool,
    optimizer: OptimizerKind,
    device: &DeviceProfile,
) -> Timeline {
    simulate_with(&SimRequest {
        network,
        patch,
        batch,
        precision,
        checkpointing,
        optimizer,
        accumulation: 1,
        loss: LossKind::DiceCe,
        device,
        training: true,
    })
}

fn new_allocator(device: &DeviceProfile) -> AllocatorSim {
    let m: &BackendModel = &device.backend;
    if m.pooled {
        AllocatorSim::cubecl(device.total_bytes, m.allocation_alignment)
    } else {
        AllocatorSim::system(m.allocation_alignment)
    }
}

/// Live-byte counters per component, moved together with the allocator.
struct Walker {
    alloc: AllocatorSim,
    comps: Components,
    oversized: Option<u64>,
    fixed: u64,
}

#[derive(Clone, Copy)]
enum Bucket {
    Model,
    Batch,
    Activation,
    Temporary,
    Workspace,
}

impl Walker {
    fn counter(&mut self, b: Bucket) -> &mut u64 {
        match b {
            Bucket::Model => &mut self.comps.model_state_bytes,
            Bucket::Batch => &mut self.comps.batch_bytes,
            Bucket::Activation => &mut self.comps.activation_bytes,
            Bucket::Temporary => &mut self.comps.temporary_bytes,
            Bucket::Workspace => &mut self.comps.workspace_bytes,
        }
    }

    fn alloc(&mut self, bytes: u64, b: Bucket) -> Option<(Slot, Bucket)> {
        if bytes == 0 {
            return None;
        }
        match self.alloc.alloc(bytes) {
            Ok(slot) => {
                *self.counter(b) += slot.size();
                Some((slot, b))
            }
            Err(size) => {
                self.oversized = Some(self.oversized.map_or(size, |o| o.max(size)));
                None
            }
        }
    }

    fn free(&mut self, h: Option<(Slot, Bucket)>) {
        if let Some((slot, b)) = h {
            *self.counter(b) -= slot.size();
            self.alloc.free(slot);
        }
    }

    fn device_bytes(&self) -> u64 {
        self.alloc.reserved() + self.fixed
    }

    fn snapshot(&self) -> Components {
        let mut c = self.comps;
        c.allocator_slack_bytes = self.alloc.reserved().saturating_sub(self.alloc.in_use());
        c.fixed_bytes = self.fixed;
        c
    }
}

/// Unrolls the network and walks the step. A network and patch too large for 64-bit byte counts (see
/// `graph::byte_bound`) give [`Timeline::uncountable`], which fits no budget.
pub fn simulate_with(req: &SimRequest) -> Timeline {
    if graph::byte_bound(req.network, req.patch, req.batch, &req.device.backend) >= graph::COUNTABLE_BYTES {
        return Timeline::uncountable();
    }
    let opts = GraphOptions {
        patch: req.patch,
        batch: req.batch.max(1),
        precision: req.precision,
        checkpointing: req.checkpointing && req.training,
        loss: req.loss,
        training: req.training,
        backend: &req.device.backend,
    };
    let g = graph::build(req.network, &opts);
    walk(&g, req)
}

/// Time steps: 0 setup, forward op i at 1 + i, backward op i at 2n − i, optimizer at 2n + 1.
fn walk(g: &Graph, req: &SimRequest) -> Timeline {
    let n = g.ops.len();
    let fwd_t = |i: usize| 1 + i;
    let bwd_t = |i: usize| 2 * n - i;
    let last = if req.training { 2 * n + 1 } else { n };

    // Lifetimes of tensors: [alloc, free] inclusive.
    let mut life: Vec<(usize, usize)> = g.tensors.iter().map(|t| (t.producer.map_or(0, fwd_t), 0)).collect();
    let mut last_reader = vec![None::<usize>; g.tensors.len()];
    for (i, op) in g.ops.iter().enumerate() {
        for &t in &op.inputs {
            life[t].1 = life[t].1.max(fwd_t(i));
            last_reader[t] = Some(last_reader[t].map_or(i, |r: usize| r.max(i)));
        }
        if req.training {
            for &t in &op.saves {
                life[t].1 = life[t].1.max(bwd_t(i));
            }
        }
    }
    for (t, def) in g.tensors.iter().enumerate() {
        if def.role == Role::Batch {
            life[t] = (0, last);
        } else {
            life[t].1 = life[t].1.max(life[t].0);
        }
    }
    // Gradients of tracked activations read by a tracked op.
    let mut grad_life: Vec<Option<(usize, usize)>> = vec![None; g.tensors.len()];
    if req.training {
        for (t, def) in g.tensors.iter().enumerate() {
            if let (Role::Activation, true, Some(p), Some(r)) = (def.role, def.tracked, def.producer, last_reader[t]) {
                grad_life[t] = Some((bwd_t(r), bwd_t(p)));
            }
        }
    }
    let mut allocs_at: Vec<Vec<usize>> = vec![Vec::new(); last + 2];
    let mut frees_at: Vec<Vec<usize>> = vec![Vec::new(); last + 2];
    for (t, &(a, f)) in life.iter().enumerate() {
        allocs_at[a].push(t);
        frees_at[f].push(t);
    }
    let m = g.tensors.len();
    for (t, gl) in grad_life.iter().enumerate() {
        if let Some((a, f)) = *gl {
            allocs_at[a].push(m + t);
            frees_at[f].push(m + t);
        }
    }

    let mut w = Walker {
        alloc: new_allocator(req.device),
        comps: Components::default(),
        oversized: None,
        fixed: req.device.backend.fixed_overhead_bytes + req.device.backend.step_overhead_bytes,
    };
    // Model state for the whole step: params, optimizer state, accumulator, BatchNorm statistics.
    let p_bytes = g.param_count * F32_BYTES;
    let state_per_param = match req.optimizer {
        OptimizerKind::Sgd => SGD_STATE_PER_PARAM,
        OptimizerKind::Adamw => ADAMW_STATE_PER_PARAM,
    };
    let mut model = p_bytes + g.buffer_count * F32_BYTES;
    if req.training {
        model += state_per_param * p_bytes;
        if req.accumulation > 1 {
            model += p_bytes;
        }
    }
    let _model_slot = w.alloc(model, Bucket::Model);

    let mut slots: Vec<Option<(Slot, Bucket)>> = vec![None; 2 * m];
    let bytes_of = |id: usize| if id < m { g.tensors[id].bytes } else { g.tensors[id - m].bytes };
    let bucket_of = |id: usize| match g.tensors[id % m].role {
        Role::Batch => Bucket::Batch,
        _ => Bucket::Activation,
    };
    let mut param_grads = Vec::new();
    let mut events = Vec::with_capacity(last + 1);
    let mut best = (0u64, 0usize, Components::default());
    let mut forward_retained = 0;

    for t in 0..=last {
        for &id in &allocs_at[t] {
            slots[id] = w.alloc(bytes_of(id), bucket_of(id));
        }
        let (name, phase, temp, work) = if t == 0 {
            ("batch loaded".to_string(), Phase::Setup, 0, 0)
        } else if t <= n {
            let op = &g.ops[t - 1];
            (op.name.clone(), Phase::Forward, op.fwd_transient - op.fwd_workspace, op.fwd_workspace)
        } else if t < last || !req.training {
            let i = 2 * n - t;
            let op = &g.ops[i];
            param_grads.push(w.alloc(op.param_bytes, Bucket::Model));
            (format!("{} backward", op.name), Phase::Backward, op.bwd_transient - op.bwd_workspace, op.bwd_workspace)
        } else {
            let tmp = OPTIMIZER_STEP_TEMPORARIES * g.largest_param * F32_BYTES;
            ("optimizer step".to_string(), Phase::Optimizer, tmp, 0)
        };
        let ht = w.alloc(temp, Bucket::Temporary);
        let hw = w.alloc(work, Bucket::Workspace);
        let device_bytes = w.device_bytes();
        events.push(TimelineEvent {
            op: name,
            phase,
            in_use_bytes: w.alloc.in_use(),
            device_bytes,
            transient_bytes: temp + work,
        });
        if device_bytes > best.0 {
            best = (device_bytes, events.len() - 1, w.snapshot());
        }
        w.free(hw);
        w.free(ht);
        for &id in &frees_at[t] {
            let h = slots[id].take();
            w.free(h);
        }
        if t == n {
            forward_retained = w.comps.activation_bytes + w.comps.batch_bytes;
        }
    }

    let per_layer = layer_table(g, &life, n);
    let peak = &events[best.1];
    Timeline {
        peak_bytes: best.0,
        peak_op: peak.op.clone(),
        peak_phase: peak.phase,
        peak_components: best.2,
        forward_retained_bytes: forward_retained,
        per_layer,
        param_count: g.param_count,
        oversized_allocation_bytes: w.oversized,
        events,
    }
}

fn layer_table(g: &Graph, life: &[(usize, usize)], n: usize) -> Vec<LayerMemory> {
    let mut rows: Vec<LayerMemory> = g
        .layers
        .iter()
        .map(|name| LayerMemory { name: name.clone(), kept_bytes: 0, transient_bytes: 0, params: 0 })
        .collect();
    for op in &g.ops {
        let row = &mut rows[op.layer];
        row.transient_bytes = row.transient_bytes.max(op.fwd_transient).max(op.bwd_transient);
        row.params += op.param_bytes / F32_BYTES;
        for &t in &op.outputs {
            if life[t].1 > n {
                row.kept_bytes += g.tensors[t].bytes;
            }
        }
    }
    rows
}
