//! voxplan patch (see `VOXPLAN-PATCH.md`): 3D convolution forward, input gradient and weight gradient as
//! one tiled gather + gemm each, and the transposed 3D convolution built from the same three.
//!
//! Why: flex 0.21's generic conv3d converts the whole input to channels-last on one thread, builds its
//! im2col tile with a bounds check per element, and takes its backward through burn's defaults, which run
//! the weight gradient as a conv whose "kernel" is the whole volume (one im2col of kernel taps × input
//! voxels per input channel) and the input gradient through the scalar `conv_transpose3d`. On voxplan's default
//! 3D U-Net step those two were 33 % + 14 % of the time (voxplan docs/training.md).
//!
//! Here every op is "for a tile of destination voxels, gather the source value each (channel, tap) row
//! reads into a `[rows, tile]` buffer, then one gemm": the gather copies whole runs along the last axis when
//! the stride there is 1, works on the NCDHW layout as it is (no transposed copy of the input), and the
//! gemm writes straight into the output. Tiles run on rayon's threads in `min(threads, tiles)` fixed
//! chunks, so the extra memory is exactly `chunks × (rows × tile)` elements (plus one `[C_out, rows]`
//! partial weight gradient per chunk), whatever the volume size: the figure voxplan's planner models.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::conv::calculate_conv_output_size;
use burn_backend::ops::{ConvOptions, ConvTransposeOptions};
use burn_std::{Bytes, Shape, bf16, f16};
use num_traits::{One, Zero};

use crate::{FlexTensor, Layout};

/// Destination voxels per tile. 1024 keeps the gemm's `n` large enough for full-width micro-kernels while a
/// tile of a 320-channel 3×3×3 conv (8640 rows) stays at 35 MB in f32.
pub const TILE_VOXELS: usize = 1024;

/// The element types the tiled path computes in natively (bf16 goes through f32, as flex's own convs do).
pub trait TiledElement:
    Copy + Send + Sync + Zero + One + core::ops::Add<Output = Self> + bytemuck::Pod + burn_backend::Element + 'static
{
}
impl TiledElement for f32 {}
impl TiledElement for f64 {}
impl TiledElement for f16 {}

/// One axis of a gather: destination coordinate `o` and kernel tap `k` read source coordinate
/// `(o·o_mul + k·k_mul + offset) / div` when the division is exact and the result lies in the source.
#[derive(Clone, Copy, Debug)]
struct AxisMap {
    o_mul: isize,
    k_mul: isize,
    offset: isize,
    div: isize,
    src_len: usize,
    dst_len: usize,
    taps: usize,
}

impl AxisMap {
    /// Convolution forward (and the weight gradient's gather): output `o` reads input `o·s + k·d − p`.
    fn forward(stride: usize, dilation: usize, pad: usize, in_len: usize, out_len: usize, taps: usize) -> Self {
        Self {
            o_mul: stride as isize,
            k_mul: dilation as isize,
            offset: -(pad as isize),
            div: 1,
            src_len: in_len,
            dst_len: out_len,
            taps,
        }
    }

    /// Input gradient: input `i` receives from every output `o` with `o·s + k·d − p = i`.
    fn input_grad(stride: usize, dilation: usize, pad: usize, out_len: usize, in_len: usize, taps: usize) -> Self {
        Self {
            o_mul: 1,
            k_mul: -(dilation as isize),
            offset: pad as isize,
            div: stride as isize,
            src_len: out_len,
            dst_len: in_len,
            taps,
        }
    }

    fn source(&self, o: usize, k: usize) -> Option<usize> {
        let num = o as isize * self.o_mul + k as isize * self.k_mul + self.offset;
        if num < 0 || num % self.div != 0 {
            return None;
        }
        let s = (num / self.div) as usize;
        (s < self.src_len).then_some(s)
    }

    /// `table[k · dst_len + o]`: the source coordinate, or −1 where there is none.
    fn table(&self) -> Vec<isize> {
        let mut t = Vec::with_capacity(self.taps * self.dst_len);
        for k in 0..self.taps {
            for o in 0..self.dst_len {
                t.push(self.source(o, k).map_or(-1, |s| s as isize));
            }
        }
        t
    }

    /// Consecutive destinations read consecutive sources (where they read any): runs are copied whole.
    fn unit_step(&self) -> bool {
        self.o_mul == 1 && self.div == 1
    }
}

/// The three axis maps of one gather with their lookup tables.
struct Gather {
    maps: [AxisMap; 3],
    tables: [Vec<isize>; 3],
}

impl Gather {
    fn new(maps: [AxisMap; 3]) -> Self {
        let tables = [maps[0].table(), maps[1].table(), maps[2].table()];
        Self { maps, tables }
    }

    fn taps(&self) -> usize {
        self.maps.iter().map(|m| m.taps).product()
    }

    fn dst_voxels(&self) -> usize {
        self.maps.iter().map(|m| m.dst_len).product()
    }

    fn src_voxels(&self) -> usize {
        self.maps.iter().map(|m| m.src_len).product()
    }

    /// Fills `col` (`[channels · taps, len]`, rows ordered channel, kd, kh, kw) with what destination voxels
    /// `start..start + len` read from `src` (`[channels, d, h, w]` contiguous).
    fn fill<T: TiledElement>(&self, col: &mut [T], src: &[T], channels: usize, start: usize, len: usize) {
        let [md, mh, mw] = self.maps;
        let [td, th, tw] = &self.tables;
        let (dst_h, dst_w) = (mh.dst_len, mw.dst_len);
        let src_row_len = mw.src_len;
        let src_plane = mh.src_len * src_row_len;
        let src_channel = md.src_len * src_plane;
        let unit_w = mw.unit_step();
        // The tile as runs along the last axis: (offset in the tile, d, h, first w, length), once per tile.
        let mut runs = Vec::with_capacity(len / dst_w + 2);
        let mut j = 0;
        while j < len {
            let pos = start + j;
            let ow0 = pos % dst_w;
            let run = (dst_w - ow0).min(len - j);
            runs.push((j, pos / (dst_w * dst_h), (pos / dst_w) % dst_h, ow0, run));
            j += run;
        }
        let mut row = 0;
        for c in 0..channels {
            let src_c = &src[c * src_channel..(c + 1) * src_channel];
            for kd in 0..md.taps {
                for kh in 0..mh.taps {
                    for kw in 0..mw.taps {
                        let out = &mut col[row * len..(row + 1) * len];
                        row += 1;
                        for &(j, od, oh, ow0, run) in &runs {
                            let dst = &mut out[j..j + run];
                            let (sd, sh) = (td[kd * md.dst_len + od], th[kh * dst_h + oh]);
                            if sd < 0 || sh < 0 {
                                dst.fill(T::zero());
                                continue;
                            }
                            let base = sd as usize * src_plane + sh as usize * src_row_len;
                            let src_row = &src_c[base..base + src_row_len];
                            if unit_w {
                                // Source of destination ow is ow + shift: copy the valid span, zero the rest.
                                let shift = kw as isize * mw.k_mul + mw.offset;
                                let lo = (-shift).clamp(ow0 as isize, (ow0 + run) as isize) as usize;
                                let hi =
                                    (src_row_len as isize - shift).clamp(lo as isize, (ow0 + run) as isize) as usize;
                                dst[..lo - ow0].fill(T::zero());
                                let from = (lo as isize + shift) as usize;
                                dst[lo - ow0..hi - ow0].copy_from_slice(&src_row[from..from + (hi - lo)]);
                                dst[hi - ow0..].fill(T::zero());
                            } else {
                                let sources = &tw[kw * dst_w + ow0..kw * dst_w + ow0 + run];
                                for (d, &s) in dst.iter_mut().zip(sources) {
                                    *d = if s >= 0 { src_row[s as usize] } else { T::zero() };
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst[m × n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs[m × k] · rhs[k × n]`, with explicit
/// strides (`*_rs` between rows, `*_cs` between columns). Single-threaded: the tiles are the parallelism.
/// (gemm's own rayon split, tried for ops with fewer tiles than threads, allocated packing buffers that
/// made a batch-1 step hold more than a batch-2 one.)
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into<T: TiledElement>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const T,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    let one = T::one();
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { one } else { T::zero() },
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// Runs `work(chunk, tasks of that chunk)` for `min(threads, tasks)` chunks and returns each chunk's result.
/// Task `t` goes to chunk `t % chunks` (neighbouring tiles spread out). The chunks always run on rayon's
/// workers, even a single one: a parallel iterator that does not split runs on the calling thread, and
/// gemm keeps an L2-sized packing slab on every thread that ever calls it, so the step's memory would
/// depend on whether some op had one tile (voxplan's planner counts one slab per worker).
fn run_chunks<R: Send>(tasks: usize, work: impl Fn(&mut dyn Iterator<Item = usize>) -> R + Sync) -> Vec<R> {
    let chunks = threads().min(tasks).max(1);
    let run = |c: usize| work(&mut (c..tasks).step_by(chunks));
    #[cfg(feature = "rayon")]
    {
        let mut results: Vec<Option<R>> = (0..chunks).map(|_| None).collect();
        rayon::scope(|s| {
            for (c, slot) in results.iter_mut().enumerate() {
                let run = &run;
                s.spawn(move |_| *slot = Some(run(c)));
            }
        });
        results.into_iter().flatten().collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        (0..chunks).map(run).collect()
    }
}

/// A raw output pointer that the chunks write disjoint tiles through.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

/// `out[b, g·ogroup + o, tile] = bias[o] + Σ_rows weight[g·ogroup + o, rows] · gather(src[b, g·sgroup ..], tile)`,
/// the shape every op here has: `weight` is `[out_channels, sgroup · taps]`, `src` `[batch, channels, src voxels]`.
#[allow(clippy::too_many_arguments)]
fn gather_gemm<T: TiledElement>(
    gather: &Gather,
    src: &[T],
    src_channels: usize,
    weight: &[T],
    bias: Option<&[T]>,
    out_channels: usize,
    groups: usize,
    batch: usize,
) -> Vec<T> {
    let sgroup = src_channels / groups;
    let ogroup = out_channels / groups;
    let rows = sgroup * gather.taps();
    let (src_vox, dst_vox) = (gather.src_voxels(), gather.dst_voxels());
    let tiles = dst_vox.div_ceil(TILE_VOXELS);
    let tasks = batch * tiles;
    let mut out = vec![T::zero(); batch * out_channels * dst_vox];
    if let Some(bias) = bias {
        for (i, plane) in out.chunks_mut(dst_vox).enumerate() {
            plane.fill(bias[i % out_channels]);
        }
    }
    let accumulate = bias.is_some();
    let out_ptr = OutPtr(out.as_mut_ptr());
    run_chunks(tasks, |mine| {
        let out_ptr = out_ptr;
        let mut col = vec![T::zero(); rows * TILE_VOXELS.min(dst_vox)];
        for task in mine {
            let (b, tile) = (task / tiles, task % tiles);
            let start = tile * TILE_VOXELS;
            let len = TILE_VOXELS.min(dst_vox - start);
            for g in 0..groups {
                let src_g = &src[(b * src_channels + g * sgroup) * src_vox..][..sgroup * src_vox];
                gather.fill(&mut col[..rows * len], src_g, sgroup, start, len);
                let dst_offset = (b * out_channels + g * ogroup) * dst_vox + start;
                // SAFETY: each (b, g, tile) block of `out` is written by exactly one task; the pointers
                // and strides stay inside `out`, `weight` and `col`.
                unsafe {
                    gemm_into(
                        ogroup,
                        len,
                        rows,
                        out_ptr.0.add(dst_offset),
                        dst_vox,
                        accumulate,
                        weight.as_ptr().add(g * ogroup * rows),
                        rows,
                        1,
                        col.as_ptr(),
                        len,
                        1,
                    );
                }
            }
        }
    });
    out
}

fn dims5(t: &FlexTensor) -> [usize; 5] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3], s[4]]
}

fn data<T: TiledElement>(t: &FlexTensor) -> &[T] {
    t.storage()
}

fn tensor<T: TiledElement>(values: Vec<T>, shape: [usize; 5], dtype: DType) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(Shape::from(shape.to_vec())), dtype)
}

/// The gather of a conv's forward (and of its weight gradient): output voxels read the input.
fn forward_maps(options: &ConvOptions<3>, input: [usize; 3], kernel: [usize; 3]) -> [AxisMap; 3] {
    core::array::from_fn(|a| {
        let (s, d, p) = (options.stride[a], options.dilation[a], options.padding[a]);
        let out = calculate_conv_output_size(kernel[a], s, p, d, input[a]);
        AxisMap::forward(s, d, p, input[a], out, kernel[a])
    })
}

/// The gather of a conv's input gradient: input voxels read the output gradient.
fn input_grad_maps(
    options: &ConvOptions<3>,
    output: [usize; 3],
    input: [usize; 3],
    kernel: [usize; 3],
) -> [AxisMap; 3] {
    core::array::from_fn(|a| {
        AxisMap::input_grad(options.stride[a], options.dilation[a], options.padding[a], output[a], input[a], kernel[a])
    })
}

/// conv3d forward: `x [N, C_in, D, H, W]`, `weight [C_out, C_in/groups, kd, kh, kw]`.
fn conv3d_typed<T: TiledElement>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<3>,
    dtype: DType,
) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let [n, cin, d, h, w] = dims5(&x);
    let [cout, _, kd, kh, kw] = dims5(&weight);
    let gather = Gather::new(forward_maps(options, [d, h, w], [kd, kh, kw]));
    let bias = bias.map(|b| b.to_contiguous());
    let bias = bias.as_ref().map(data::<T>);
    let out = gather_gemm(&gather, data::<T>(&x), cin, data::<T>(&weight), bias, cout, options.groups, n);
    let [od, oh, ow] = gather.maps.map(|m| m.dst_len);
    tensor(out, [n, cout, od, oh, ow], dtype)
}

/// Input gradient of conv3d: `output_grad [N, C_out, ...]` back to `[N, C_in, x_spatial]`.
fn conv3d_x_backward_typed<T: TiledElement>(
    x_spatial: [usize; 3],
    weight: FlexTensor,
    output_grad: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<3>,
    dtype: DType,
) -> FlexTensor {
    let (weight, grad) = (weight.to_contiguous(), output_grad.to_contiguous());
    let [n, cout, od, oh, ow] = dims5(&grad);
    let [_, cpg, kd, kh, kw] = dims5(&weight);
    let groups = options.groups;
    let (out_spatial, k) = ([od, oh, ow], [kd, kh, kw]);
    let maps = input_grad_maps(options, out_spatial, x_spatial, k);
    let gather = Gather::new(maps);
    // weight [C_out, cpg, taps] → per group [cpg, ogroup · taps]: row ci reads (co, tap).
    let taps = kd * kh * kw;
    let ogroup = cout / groups;
    let w: &[T] = weight.storage();
    let mut wt = vec![T::zero(); cpg * groups * ogroup * taps];
    for g in 0..groups {
        for ci in 0..cpg {
            for co in 0..ogroup {
                let src = ((g * ogroup + co) * cpg + ci) * taps;
                let dst = ((g * cpg + ci) * ogroup + co) * taps;
                wt[dst..dst + taps].copy_from_slice(&w[src..src + taps]);
            }
        }
    }
    let bias = bias.map(|b| b.to_contiguous());
    let bias = bias.as_ref().map(data::<T>);
    let out = gather_gemm(&gather, data::<T>(&grad), cout, &wt, bias, cpg * groups, groups, n);
    tensor(out, [n, cpg * groups, x_spatial[0], x_spatial[1], x_spatial[2]], dtype)
}

/// Weight gradient of conv3d: `Σ_batch Σ_tiles output_grad[b, co, tile] · gather(x[b], tile)ᵀ`.
fn conv3d_weight_backward_typed<T: TiledElement>(
    x: FlexTensor,
    weight_shape: [usize; 5],
    output_grad: FlexTensor,
    options: &ConvOptions<3>,
    dtype: DType,
) -> FlexTensor {
    let (x, grad) = (x.to_contiguous(), output_grad.to_contiguous());
    let [n, cin, d, h, w] = dims5(&x);
    let [cout, cpg, kd, kh, kw] = weight_shape;
    let groups = options.groups;
    let gather = Gather::new(forward_maps(options, [d, h, w], [kd, kh, kw]));
    let ogroup = cout / groups;
    let rows = cpg * gather.taps();
    let (src_vox, dst_vox) = (gather.src_voxels(), gather.dst_voxels());
    let tiles = dst_vox.div_ceil(TILE_VOXELS);
    let tasks = n * tiles;
    let x_data: &[T] = x.storage();
    let g_data: &[T] = grad.storage();
    let partials = run_chunks(tasks, |mine| {
        let mut col = vec![T::zero(); rows * TILE_VOXELS.min(dst_vox)];
        let mut dw = vec![T::zero(); cout * rows];
        for task in mine {
            let (b, tile) = (task / tiles, task % tiles);
            let start = tile * TILE_VOXELS;
            let len = TILE_VOXELS.min(dst_vox - start);
            for g in 0..groups {
                let src_g = &x_data[(b * cin + g * cpg) * src_vox..][..cpg * src_vox];
                gather.fill(&mut col[..rows * len], src_g, cpg, start, len);
                let lhs = &g_data[(b * cout + g * ogroup) * dst_vox + start..];
                // SAFETY: `dw` is this chunk's own; lhs rows are `dst_vox` apart inside `grad`, and the
                // transposed view of `col` (`[len, rows]`) stays inside it.
                unsafe {
                    gemm_into(
                        ogroup,
                        rows,
                        len,
                        dw.as_mut_ptr().add(g * ogroup * rows),
                        rows,
                        true,
                        lhs.as_ptr(),
                        dst_vox,
                        1,
                        col.as_ptr(),
                        1,
                        len,
                    );
                }
            }
        }
        dw
    });
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_else(|| vec![T::zero(); cout * rows]);
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t = *t + v);
    }
    tensor(total, weight_shape, dtype)
}

/// The conv that a transposed conv is the input gradient of: same stride, padding, dilation and groups.
fn as_conv(options: &ConvTransposeOptions<3>) -> ConvOptions<3> {
    ConvOptions::new(options.stride, options.padding, options.dilation, options.groups)
}

fn transposed_out_spatial(x: &FlexTensor, weight: &FlexTensor, options: &ConvTransposeOptions<3>) -> [usize; 3] {
    let [_, _, d, h, w] = dims5(x);
    let [_, _, kd, kh, kw] = dims5(weight);
    let (input, k) = ([d, h, w], [kd, kh, kw]);
    core::array::from_fn(|a| {
        (input[a] - 1) * options.stride[a] + options.dilation[a] * (k[a] - 1) + options.padding_out[a] + 1
            - 2 * options.padding[a]
    })
}

/// Casts a bf16 tensor to f32 (bf16 has no gemm kernel), as flex's `bf16_via_f32` does.
fn to_f32(t: FlexTensor) -> FlexTensor {
    super::module::cast_to_f32(t, bf16::to_f32)
}

fn from_f32(t: FlexTensor) -> FlexTensor {
    super::module::cast_from_f32(t, bf16::from_f32)
}

macro_rules! by_dtype {
    ($dtype:expr, $name:literal, $f:ident ( $($arg:expr),* ) ; bf16 => $bf:expr) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg,)* DType::F32),
            DType::F64 => $f::<f64>($($arg,)* DType::F64),
            DType::F16 => $f::<f16>($($arg,)* DType::F16),
            DType::BF16 => $bf,
            dtype => panic!("{}: unsupported dtype {:?}", $name, dtype),
        }
    };
}

/// conv3d forward through the tiled path.
pub fn conv3d(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, options: &ConvOptions<3>) -> FlexTensor {
    by_dtype!(x.dtype(), "conv3d", conv3d_typed(x, weight, bias, options);
        bf16 => from_f32(conv3d(to_f32(x), to_f32(weight), bias.map(to_f32), options)))
}

/// Gradient of conv3d with respect to its input, whose spatial shape is `x_spatial`.
pub fn conv3d_x_backward(
    x_spatial: [usize; 3],
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<3>,
) -> FlexTensor {
    transposed_typed(x_spatial, weight, output_grad, None, options)
}

/// `conv3d_x_backward` with a per-output-channel bias added: also the transposed conv's forward.
fn transposed_typed(
    x_spatial: [usize; 3],
    weight: FlexTensor,
    output_grad: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<3>,
) -> FlexTensor {
    by_dtype!(output_grad.dtype(), "conv3d_x_backward", conv3d_x_backward_typed(x_spatial, weight, output_grad, bias, options);
        bf16 => from_f32(transposed_typed(x_spatial, to_f32(weight), to_f32(output_grad), bias.map(to_f32), options)))
}

/// Gradient of conv3d with respect to its weight (`weight_shape`).
pub fn conv3d_weight_backward(
    x: FlexTensor,
    weight_shape: [usize; 5],
    output_grad: FlexTensor,
    options: &ConvOptions<3>,
) -> FlexTensor {
    by_dtype!(x.dtype(), "conv3d_weight_backward", conv3d_weight_backward_typed(x, weight_shape, output_grad, options);
        bf16 => from_f32(conv3d_weight_backward(to_f32(x), weight_shape, to_f32(output_grad), options)))
}

/// conv_transpose3d forward: the input gradient of the conv it transposes, plus bias.
pub fn conv_transpose3d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvTransposeOptions<3>,
) -> FlexTensor {
    let out_spatial = transposed_out_spatial(&x, &weight, options);
    transposed_typed(out_spatial, weight, x, bias, &as_conv(options))
}

/// Weight gradient of conv_transpose3d: the conv's weight gradient with input and output exchanged.
pub fn conv_transpose3d_weight_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvTransposeOptions<3>,
) -> FlexTensor {
    let weight_shape = dims5(&weight);
    conv3d_weight_backward(output_grad, weight_shape, x, &as_conv(options))
}

/// Input gradient of conv_transpose3d: the conv itself applied to the output gradient.
pub fn conv_transpose3d_x_backward(
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvTransposeOptions<3>,
) -> FlexTensor {
    conv3d(output_grad, weight, None, &as_conv(options))
}
