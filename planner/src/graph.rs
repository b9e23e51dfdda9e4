//! The network unrolled into the ops burn 0.21 executes for one step, each with the tensors it creates and
//! the ones its autodiff node keeps for backward (burn-0.21.md §4). The timeline turns this into liveness.
//!
//! Rules per op (A = one activation of the op's output, f32 unless stated):
//! - conv / transposed conv: keeps its input — even the untracked network input — and, under mixed
//!   precision, the half-precision copies of input and weight (the cast is kept, so a bf16 conv input is
//!   0.5A). Output in the compute dtype; under mixed precision cast back to f32 for the norm.
//! - GroupNorm / InstanceNorm: keeps `x − μ` and `x̂` (2A); BatchNorm 3A. With balanced checkpointing these
//!   memory-bound intermediates are recomputed and only the norm input (the conv output, 1A) is kept.
//! - LeakyReLU: keeps a bool mask (1 byte per element); ReLU keeps its input (recomputed when checkpointed).
//! - cat: creates the concatenation (kept by the conv that reads it), keeps nothing itself.
//! - Dice + CE loss: see [`crate::rules::LOSS_SAVED_LOGIT_SIZES`].

use crate::device::{BackendModel, ConvWorkspace};
use crate::plan::Precision;
use crate::rules::{
    BATCH_NORM_SAVED_ACTIVATIONS, BOOL_BYTES, F32_BYTES, GROUP_NORM_SAVED_ACTIVATIONS, HALF_BYTES, LABEL_BYTES,
    LOSS_BACKWARD_TEMPORARIES, LOSS_BACKWARD_TEMPORARIES_CHECKPOINTED, LOSS_FORWARD_BYTES_PER_VOXEL,
    LOSS_FORWARD_TEMPORARIES, LOSS_FORWARD_TEMPORARIES_CHECKPOINTED, LOSS_SAVED_BYTES_PER_VOXEL,
    LOSS_SAVED_LOGIT_SIZES, LOSS_SAVED_LOGIT_SIZES_CHECKPOINTED, NORM_BACKWARD_TEMPORARIES,
};
use crate::spec::{ActivationKind, BlockKind, NetworkSpec, NormKind};

/// What a tensor is, for the component breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Input image or labels of the batch: alive for the whole step.
    Batch,
    /// An op output that flows to other ops (has a gradient when tracked).
    Activation,
    /// An intermediate an op keeps for its backward (norm statistics, masks, loss softmax).
    Saved,
    /// A half-precision copy of a weight, kept by its conv under mixed precision.
    WeightCopy,
}

#[derive(Debug, Clone)]
pub(crate) struct TensorDef {
    pub bytes: u64,
    pub role: Role,
    pub producer: Option<usize>,
    /// Whether a gradient flows to it (false for the batch and anything computed only from it).
    pub tracked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct OpDef {
    pub name: String,
    pub layer: usize,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Tensors this op's autodiff node keeps until its backward.
    pub saves: Vec<usize>,
    /// Short-lived bytes inside the op's forward (temporaries + backend workspace).
    pub fwd_transient: u64,
    /// Short-lived bytes inside the op's backward.
    pub bwd_transient: u64,
    /// Of which backend workspace (im2col), for the breakdown.
    pub fwd_workspace: u64,
    pub bwd_workspace: u64,
    /// f32 bytes of this op's trainable parameters (their gradients appear at its backward).
    pub param_bytes: u64,
}

/// Which loss ends the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Dice + cross-entropy on softmax over classes (what the trainer uses).
    DiceCe,
    /// Mean squared error against a float target (the measured reference runs in measured-here.md).
    Mse,
}

/// What to unroll.
#[derive(Debug, Clone)]
pub(crate) struct GraphOptions<'a> {
    pub patch: [usize; 3],
    pub batch: usize,
    pub precision: Precision,
    pub checkpointing: bool,
    pub loss: LossKind,
    /// false: inference (no autodiff state, no loss).
    pub training: bool,
    pub backend: &'a BackendModel,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub tensors: Vec<TensorDef>,
    pub ops: Vec<OpDef>,
    pub layers: Vec<String>,
    /// Trainable parameters (elements).
    pub param_count: u64,
    /// Non-trainable state (BatchNorm running statistics), elements.
    pub buffer_count: u64,
    /// The largest single parameter tensor (elements): bounds the optimizer's per-tensor temporaries.
    pub largest_param: u64,
}

struct Builder<'a> {
    g: Graph,
    o: &'a GraphOptions<'a>,
    spec: &'a NetworkSpec,
}

fn voxels(shape: [usize; 3]) -> u64 {
    shape.iter().map(|&v| v as u64).product()
}

impl Builder<'_> {
    fn mixed(&self) -> bool {
        self.o.precision != Precision::F32
    }

    fn compute_bytes(&self) -> u64 {
        if self.mixed() { HALF_BYTES } else { F32_BYTES }
    }

    fn scaled(&self, bytes: u64) -> u64 {
        (bytes as f64 * self.o.backend.activation_scale).round() as u64
    }

    fn tensor(&mut self, bytes: u64, role: Role, producer: Option<usize>, tracked: bool) -> usize {
        let bytes = if matches!(role, Role::Activation | Role::Saved) { self.scaled(bytes) } else { bytes };
        self.g.tensors.push(TensorDef { bytes, role, producer, tracked });
        self.g.tensors.len() - 1
    }

    fn layer(&mut self, name: &str) -> usize {
        self.g.layers.push(name.to_string());
        self.g.layers.len() - 1
    }

    fn is_tracked(&self, t: usize) -> bool {
        self.g.tensors[t].tracked
    }

    /// Adds an op whose outputs are created by `make` (given the op index).
    fn op(&mut self, name: String, layer: usize, inputs: Vec<usize>) -> usize {
        self.g.ops.push(OpDef {
            name,
            layer,
            inputs,
            outputs: vec![],
            saves: vec![],
            fwd_transient: 0,
            bwd_transient: 0,
            fwd_workspace: 0,
            bwd_workspace: 0,
            param_bytes: 0,
        });
        self.g.ops.len() - 1
    }

    fn output(&mut self, op: usize, bytes: u64, role: Role, tracked: bool) -> usize {
        let t = self.tensor(bytes, role, Some(op), tracked);
        self.g.ops[op].outputs.push(t);
        t
    }

    fn add_params(&mut self, op: usize, count: u64, largest: u64) {
        self.g.param_count += count;
        self.g.largest_param = self.g.largest_param.max(largest);
        if self.o.training {
            self.g.ops[op].param_bytes += count * F32_BYTES;
        }
    }

    /// Scratch elements of one conv's forward and backward (before the backend's factors and the element
    /// size): `cin` channels at `vin` voxels in, `cout` at `vout` out, `kvol` taps per output voxel (per
    /// input voxel when `transposed`).
    fn conv_workspace_elements(
        &self,
        cin: u64,
        cout: u64,
        kvol: u64,
        vin: u64,
        vout: u64,
        transposed: bool,
    ) -> (u64, u64) {
        let n = self.o.batch as u64;
        match self.o.backend.conv_workspace {
            // im2col: kernel taps × input channels × the larger side's voxels, one sample at a time.
            ConvWorkspace::WholeSample => {
                let cols = kvol * cin * vout.max(vin);
                (cols, cols)
            }
            // Each op is "gather [channels × taps, tile] for a tile of destination voxels, then one gemm"
            // (vendor/burn-flex/src/ops/conv3d_tiled.rs); a thread handles a chunk of tiles with one buffer.
            ConvWorkspace::Tiled { tile_voxels, tiles_in_flight, packing } => {
                let tile = tile_voxels.max(1);
                let chunks = |dst: u64| tiles_in_flight.max(1).min(n * dst.div_ceil(tile));
                let gather = |rows: u64, dst: u64| chunks(dst) * rows * dst.min(tile);
                // gemm's per-call packed copy, one per chunk while its multiply runs (GemmPacking). A
                // forward-shaped multiply (`rows` gathered for each voxel of a tile, into `out` channels)
                // can be prepacked on a full tile or on the last, shorter one; a weight gradient's
                // (`rows` × `out` accumulated over a tile's voxels) on its rows, deepest on a full tile.
                let packed = |m: u64, nn: u64, k: u64, unit_rows: bool, contiguous_k: bool| {
                    packing.map_or(0, |p| p.prepacked_elements(m, nn, k, unit_rows, contiguous_k))
                };
                let tiles_of = |dst: u64| [dst.min(tile), dst % tile];
                let fwd_pack = |rows: u64, out: u64, dst: u64| {
                    let per_chunk = tiles_of(dst).map(|len| packed(len, out, rows, true, false)).into_iter().max();
                    chunks(dst) * per_chunk.unwrap_or(0)
                };
                let wgrad_pack =
                    |rows: u64, out: u64, dst: u64| chunks(dst) * packed(rows, out, dst.min(tile), false, true);
                let weights = cin * cout * kvol;
                if transposed {
                    // Forward: the input gradient of the conv it transposes (gathers the input, a transposed
                    // weight copy); backward: that conv on the output gradient, then its weight gradient with
                    // input and output exchanged (one partial sum per chunk).
                    let fw = gather(cin * kvol, vout) + fwd_pack(cin * kvol, cout, vout) + weights;
                    let conv = gather(cout * kvol, vin) + fwd_pack(cout * kvol, cin, vin);
                    let w_grad = gather(cout * kvol, vin) + wgrad_pack(cout * kvol, cin, vin) + chunks(vin) * weights;
                    (fw, conv.max(w_grad))
                } else {
                    let fw = gather(cin * kvol, vout) + fwd_pack(cin * kvol, cout, vout);
                    let x_grad = gather(cout * kvol, vin) + fwd_pack(cout * kvol, cin, vin) + weights;
                    let w_grad = gather(cin * kvol, vout) + wgrad_pack(cin * kvol, cout, vout) + chunks(vout) * weights;
                    (fw, x_grad.max(w_grad))
                }
            }
        }
    }

    /// A conv (or transposed conv) with `kvol` taps per output (per input for transposed), reading `x`
    /// (`cin` channels at `in_shape`) and writing `cout` channels at `out_shape`. Returns the f32 output.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        layer: usize,
        x: usize,
        cin: usize,
        cout: usize,
        kvol: u64,
        in_shape: [usize; 3],
        out_shape: [usize; 3],
        transposed: bool,
    ) -> usize {
        let n = self.o.batch as u64;
        let vin = voxels(in_shape);
        let vout = voxels(out_shape);
        let cb = self.compute_bytes();
        let mut input = x;
        if self.mixed() {
            // The cast to half precision is kept by autodiff, so the half copy is what the conv saves.
            let cast = self.op(format!("{name}.cast_in"), layer, vec![x]);
            let tracked = self.is_tracked(x);
            input = self.output(cast, n * cin as u64 * vin * cb, Role::Activation, tracked);
        }
        let op = self.op(name.to_string(), layer, vec![input]);
        let weights = kvol * cin as u64 * cout as u64;
        self.add_params(op, weights + cout as u64, weights);
        let y = self.output(op, n * cout as u64 * vout * cb, Role::Activation, true);
        if self.o.training {
            self.g.ops[op].saves.push(input);
            if self.mixed() {
                let w = self.output(op, (weights + cout as u64) * HALF_BYTES, Role::WeightCopy, false);
                self.g.ops[op].saves.push(w);
            }
        }
        // A backend without half-precision conv kernels converts to f32 and back: its scratch is f32 and it
        // holds f32 copies of the conv's input and output (forward), or of the output gradient and the
        // input-gradient result (backward), while the op runs.
        let via_f32 = self.mixed() && self.o.backend.half_conv_via_f32;
        let (work_bytes, f32_copies) =
            if via_f32 { (F32_BYTES, n * (cin as u64 * vin + cout as u64 * vout) * F32_BYTES) } else { (cb, 0) };
        let (fw_elems, bw_elems) = self.conv_workspace_elements(cin as u64, cout as u64, kvol, vin, vout, transposed);
        let fw = (fw_elems as f64 * work_bytes as f64 * self.o.backend.conv_forward_workspace_factor).round() as u64
            + f32_copies;
        let bw = (bw_elems as f64 * work_bytes as f64 * self.o.backend.conv_backward_workspace_factor).round() as u64
            + f32_copies;
        let opd = &mut self.g.ops[op];
        opd.fwd_workspace = fw;
        opd.fwd_transient = fw;
        if self.o.training {
            opd.bwd_workspace = bw;
            opd.bwd_transient = bw;
        }
        if self.mixed() {
            let cast = self.op(format!("{name}.cast_out"), layer, vec![y]);
            return self.output(cast, n * cout as u64 * vout * F32_BYTES, Role::Activation, true);
        }
        y
    }

    fn norm(&mut self, name: &str, layer: usize, y: usize, c: usize, shape: [usize; 3]) -> usize {
        let a = self.o.batch as u64 * c as u64 * voxels(shape) * F32_BYTES;
        let op = self.op(format!("{name}.norm"), layer, vec![y]);
        let (params, buffers, saved) = match self.spec.norm {
            NormKind::Batch => (2 * c as u64, 2 * c as u64, BATCH_NORM_SAVED_ACTIVATIONS),
            NormKind::Group { .. } | NormKind::Instance => (2 * c as u64, 0, GROUP_NORM_SAVED_ACTIVATIONS),
        };
        self.add_params(op, params, c as u64);
        self.g.buffer_count += buffers;
        let z = self.output(op, a, Role::Activation, true);
        if self.o.training {
            if self.o.checkpointing {
                self.g.ops[op].saves.push(y);
            } else {
                let s = self.output(op, saved * a, Role::Saved, true);
                self.g.ops[op].saves.push(s);
            }
            self.g.ops[op].bwd_transient = NORM_BACKWARD_TEMPORARIES * a;
        }
        z
    }

    fn act(&mut self, name: &str, layer: usize, z: usize, c: usize, shape: [usize; 3]) -> usize {
        let elems = self.o.batch as u64 * c as u64 * voxels(shape);
        let op = self.op(format!("{name}.act"), layer, vec![z]);
        let w = self.output(op, elems * F32_BYTES, Role::Activation, true);
        if self.o.training {
            match self.spec.activation {
                ActivationKind::LeakyRelu { .. } => {
                    let mask = self.output(op, elems * BOOL_BYTES, Role::Saved, true);
                    self.g.ops[op].saves.push(mask);
                }
                ActivationKind::Relu if !self.o.checkpointing => self.g.ops[op].saves.push(z),
                ActivationKind::Relu => {}
            }
            self.g.ops[op].bwd_transient = elems * F32_BYTES;
        }
        w
    }

    /// conv → norm → activation.
    #[allow(clippy::too_many_arguments)]
    fn layer_cna(
        &mut self,
        name: &str,
        x: usize,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        in_shape: [usize; 3],
        out_shape: [usize; 3],
    ) -> usize {
        let layer = self.layer(name);
        let kvol = kernel.iter().product::<usize>() as u64;
        let y = self.conv(name, layer, x, cin, cout, kvol, in_shape, out_shape, false);
        let z = self.norm(name, layer, y, cout, out_shape);
        self.act(name, layer, z, cout, out_shape)
    }

    /// nnU-Net ResEnc block: conv→norm→act→conv→norm (+ 1×1×1 conv→norm shortcut on change) → add → act.
    #[allow(clippy::too_many_arguments)]
    fn residual(
        &mut self,
        name: &str,
        x: usize,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        in_shape: [usize; 3],
        out_shape: [usize; 3],
    ) -> usize {
        let h = self.layer_cna(&format!("{name}.a"), x, cin, cout, kernel, in_shape, out_shape);
        let layer = self.layer(&format!("{name}.b"));
        let kvol = kernel.iter().product::<usize>() as u64;
        let y = self.conv(&format!("{name}.b"), layer, h, cout, cout, kvol, out_shape, out_shape, false);
        let y = self.norm(&format!("{name}.b"), layer, y, cout, out_shape);
        let shortcut = if cin != cout || in_shape != out_shape {
            let s = self.conv(&format!("{name}.skip"), layer, x, cin, cout, 1, in_shape, out_shape, false);
            self.norm(&format!("{name}.skip"), layer, s, cout, out_shape)
        } else {
            x
        };
        let elems = self.o.batch as u64 * cout as u64 * voxels(out_shape);
        let add = self.op(format!("{name}.add"), layer, vec![y, shortcut]);
        let sum = self.output(add, elems * F32_BYTES, Role::Activation, true);
        self.act(&format!("{name}.b"), layer, sum, cout, out_shape)
    }

    fn loss(&mut self, name: &str, logits: usize, shape: [usize; 3]) -> usize {
        let layer = self.layer(name);
        let n = self.o.batch as u64;
        let classes = self.spec.num_classes as u64;
        let per_voxel = n * voxels(shape);
        let l = per_voxel * classes * F32_BYTES;
        let labels = self.tensor(per_voxel * LABEL_BYTES, Role::Batch, None, false);
        let op = self.op(name.to_string(), layer, vec![logits, labels]);
        // (logit sizes, bytes per voxel) kept, forward temporaries, backward temporaries.
        let (saved, fwd_tmp, bwd_tmp) = match self.o.loss {
            LossKind::DiceCe if self.o.checkpointing => {
                // Balanced checkpointing keeps the logits to recompute the loss's memory-bound ops from.
                self.g.ops[op].saves.push(logits);
                (
                    (LOSS_SAVED_LOGIT_SIZES_CHECKPOINTED, LOSS_SAVED_BYTES_PER_VOXEL),
                    (LOSS_FORWARD_TEMPORARIES_CHECKPOINTED, LOSS_FORWARD_BYTES_PER_VOXEL),
                    LOSS_BACKWARD_TEMPORARIES_CHECKPOINTED,
                )
            }
            LossKind::DiceCe => (
                (LOSS_SAVED_LOGIT_SIZES, LOSS_SAVED_BYTES_PER_VOXEL),
                (LOSS_FORWARD_TEMPORARIES, LOSS_FORWARD_BYTES_PER_VOXEL),
                LOSS_BACKWARD_TEMPORARIES,
            ),
            // out − target is saved (1 logit size); its square is a temporary.
            LossKind::Mse => ((1, 0), (1, 0), 1),
        };
        let s = self.output(op, saved.0 * l + saved.1 * per_voxel, Role::Saved, true);
        self.g.ops[op].saves.push(s);
        self.g.ops[op].fwd_transient = fwd_tmp.0 * l + fwd_tmp.1 * per_voxel;
        self.g.ops[op].bwd_transient = bwd_tmp * l;
        op
    }

    fn head(&mut self, name: &str, x: usize, cin: usize, shape: [usize; 3]) -> usize {
        let layer = self.layer(name);
        self.conv(name, layer, x, cin, self.spec.num_classes, 1, shape, shape, false)
    }
}

/// Byte counts the simulation may form stay below this (2^62, 4 EiB): far beyond any device, and far enough
/// below `u64::MAX` that no sum of them overflows.
pub(crate) const COUNTABLE_BYTES: u128 = 1 << 62;

/// An upper bound, in `u128`, on every byte count [`build`] and the timeline can form for `spec` at `patch`
/// and `batch`: the sum over layers of 32 largest-activation-sized tensors (outputs, kept intermediates,
/// gradients, half and f32 copies) and the largest conv workspace, the parameters 8 times over (weights,
/// gradients, optimizer state, accumulator, copies, temporaries), and 16 logit sizes per loss term. A
/// network or patch whose bound reaches [`COUNTABLE_BYTES`] is not simulated (it fits no device anyway),
/// so absurd sizes become a "does not fit" instead of an arithmetic overflow.
pub(crate) fn byte_bound(spec: &NetworkSpec, patch: [usize; 3], batch: usize, backend: &BackendModel) -> u128 {
    let mul = |a: u128, b: u128| a.saturating_mul(b);
    let add = |a: u128, b: u128| a.saturating_add(b);
    let voxels = patch.iter().fold(1u128, |v, &p| mul(v, p as u128));
    let widest = spec.stages.iter().map(|s| mul(2, s.features as u128)).max().unwrap_or(0);
    let channels = widest.max(spec.in_channels as u128).max(add(spec.num_classes as u128, 1));
    let convs_per_block = if spec.block == BlockKind::Residual { 3 } else { 1 };
    let layers = spec.stages.iter().fold(2u128, |l, s| {
        add(l, add(mul(s.encoder_convs as u128, convs_per_block), add(s.decoder_convs as u128, 3)))
    });
    let taps: u128 = 27;
    let activation = mul(mul(mul(batch.max(1) as u128, channels), voxels), 4);
    let weights = mul(mul(taps, channels), channels);
    let workspace = match backend.conv_workspace {
        ConvWorkspace::WholeSample => mul(mul(mul(taps, channels), voxels), 4),
        ConvWorkspace::Tiled { tile_voxels, tiles_in_flight, .. } => {
            // Per chunk a gather and its packed copy and a partial sum; the transposed weights once.
            let gather = mul(mul(taps, channels), tile_voxels.max(1) as u128);
            mul(add(mul(tiles_in_flight.max(1) as u128, add(mul(2, gather), weights)), weights), 4)
        }
    };
    let per_layer = add(mul(32, activation), workspace);
    let params = mul(layers, add(weights, channels));
    // 16 logit sizes (at most `channels` classes) per loss term, one term per stage at most.
    let losses = mul(add(spec.stages.len() as u128, 1), mul(16, activation));
    add(add(mul(layers, per_layer), mul(params, 32)), losses)
}

/// Unrolls `spec` for one training step (or one inference forward pass when `o.training` is false).
pub(crate) fn build(spec: &NetworkSpec, o: &GraphOptions) -> Graph {
    let mut b = Builder { g: Graph::default(), o, spec };
    let n = o.batch as u64;
    let s_count = spec.stages.len();
    let input = b.tensor(n * spec.in_channels as u64 * voxels(o.patch) * F32_BYTES, Role::Batch, None, false);

    // Encoder.
    let mut x = input;
    let mut cin = spec.in_channels;
    let mut in_shape = o.patch;
    let mut skips = Vec::with_capacity(s_count);
    for (s, st) in spec.stages.iter().enumerate() {
        let out_shape = spec.stage_shape(o.patch, s);
        for j in 0..st.encoder_convs {
            let (src_shape, name) = if j == 0 { (in_shape, s) } else { (out_shape, s) };
            x = match spec.block {
                BlockKind::Plain => {
                    b.layer_cna(&format!("enc{name}.conv{j}"), x, cin, st.features, st.kernel, src_shape, out_shape)
                }
                BlockKind::Residual => {
                    b.residual(&format!("enc{name}.block{j}"), x, cin, st.features, st.kernel, src_shape, out_shape)
                }
            };
            cin = st.features;
        }
        skips.push(x);
        in_shape = out_shape;
    }

    // Decoder, deepest-but-one up to full resolution.
    let mut heads: Vec<(usize, [usize; 3])> = Vec::new();
    for s in (0..s_count.saturating_sub(1)).rev() {
        let st = &spec.stages[s];
        let below = &spec.stages[s + 1];
        let shape = spec.stage_shape(o.patch, s);
        let below_shape = spec.stage_shape(o.patch, s + 1);
        let up_layer = b.layer(&format!("dec{s}.up"));
        let kvol = below.stride.iter().product::<usize>() as u64;
        let up =
            b.conv(&format!("dec{s}.up"), up_layer, x, below.features, st.features, kvol, below_shape, shape, true);
        let cat = b.op(format!("dec{s}.cat"), up_layer, vec![skips[s], up]);
        let cat_out = b.output(cat, n * 2 * st.features as u64 * voxels(shape) * F32_BYTES, Role::Activation, true);
        x = cat_out;
        let mut c = 2 * st.features;
        for j in 0..st.decoder_convs {
            x = b.layer_cna(&format!("dec{s}.conv{j}"), x, c, st.features, st.kernel, shape, shape);
            c = st.features;
        }
        if o.training && spec.deep_supervision && s > 0 && s + 2 < s_count {
            heads.push((b.head(&format!("ds{s}.head"), x, st.features, shape), shape));
        }
    }
    // Stage 0 keeps full resolution (`NetworkSpec::validate`), so the logits are at the patch's.
    let full = o.patch;
    let f0 = spec.stages[0].features;
    let logits = b.head("head", x, f0, full);
    if o.training {
        // The trainer's loss takes every head's logits, full resolution first, then the deep-supervision
        // heads from the highest resolution down, and holds all of them until the last term is built.
        let mut last = b.loss("loss", logits, full);
        let mut all_logits = vec![logits];
        for (i, &(h, shape)) in heads.iter().rev().enumerate() {
            last = b.loss(&format!("ds_loss{i}"), h, shape);
            all_logits.push(h);
        }
        b.g.ops[last].inputs.extend(all_logits);
    }
    b.g
}
