//! The patched flex 3D conv kernels (vendor/burn-flex/VOXPLAN-PATCH.md) against a direct, loop-by-loop
//! definition: forward output and the input, weight and bias gradients of conv3d and conv_transpose3d,
//! through burn's autodiff, for the strides, paddings, dilations, groups, anisotropic kernels and odd
//! shapes a U-Net of the family uses, on volumes that span several tiles and on ones smaller than a tile.

mod model_support;

use burn::tensor::backend::Backend;
use burn::tensor::module::{conv_transpose3d, conv3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use model_support::Train;

/// Deterministic values in [-1, 1) (a small LCG): no RNG state shared with other tests.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(v: &[f32], shape: [usize; 5]) -> Tensor<Train, 5> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: got {g}, want {w} (tolerance {tol} × {scale})");
    }
}

/// Row-major index of a 5-D position.
fn at(shape: [usize; 5], i: [usize; 5]) -> usize {
    (((i[0] * shape[1] + i[1]) * shape[2] + i[2]) * shape[3] + i[3]) * shape[4] + i[4]
}

/// One (output voxel, tap) pairing of a conv: calls `visit(n, out_channel, in_channel_in_group, out
/// position, in position, tap)` for every term of the definition `y[o] = Σ w[o, c, k] · x[o·s + k·d − p]`.
#[allow(clippy::too_many_arguments)]
fn conv_terms(
    n: usize,
    cout: usize,
    cpg: usize,
    groups: usize,
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 3],
    o: &ConvOptions<3>,
    mut visit: impl FnMut(usize, usize, usize, [usize; 3], [usize; 3], [usize; 3]),
) {
    let ogroup = cout / groups;
    for b in 0..n {
        for oc in 0..cout {
            let g = oc / ogroup;
            for ic in g * cpg..(g + 1) * cpg {
                for od in 0..output[0] {
                    for oh in 0..output[1] {
                        for ow in 0..output[2] {
                            for kd in 0..kernel[0] {
                                for kh in 0..kernel[1] {
                                    for kw in 0..kernel[2] {
                                        let (out, k) = ([od, oh, ow], [kd, kh, kw]);
                                        let mut src = [0usize; 3];
                                        let inside = (0..3).all(|a| {
                                            let s = (out[a] * o.stride[a] + k[a] * o.dilation[a]) as isize
                                                - o.padding[a] as isize;
                                            src[a] = s.max(0) as usize;
                                            s >= 0 && (s as usize) < input[a]
                                        });
                                        if inside {
                                            visit(b, oc, ic, out, src, k);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Checks `op(x, w, b)` and the gradients of `Σ op · r` (for x, w and b, through autodiff) against the
/// definition: `terms` calls `term(y index, x index, w index)` once for every product `w · x` that adds
/// into an output voxel; the bias adds to every voxel of its channel. Values are drawn from `seed`.
fn check_against_definition(
    what: &str,
    [xs, ws, ys]: [[usize; 5]; 3],
    seed: u64,
    terms: impl FnOnce(&mut dyn FnMut(usize, usize, usize)),
    op: impl FnOnce(Tensor<Train, 5>, Tensor<Train, 5>, Tensor<Train, 1>) -> Tensor<Train, 5>,
) {
    let (n, cout) = (ys[0], ys[1]);
    let (x, w, b) = (values(xs.iter().product(), seed), values(ws.iter().product(), seed + 1), values(cout, seed + 2));
    let r = values(ys.iter().product(), seed + 3);
    let mut y = vec![0f32; r.len()];
    let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; w.len()]);
    terms(&mut |yi, xi, wi| {
        y[yi] += w[wi] * x[xi];
        dx[xi] += r[yi] * w[wi];
        dw[wi] += r[yi] * x[xi];
    });
    let vox = ys[2] * ys[3] * ys[4];
    for (i, v) in y.iter_mut().enumerate() {
        *v += b[(i / vox) % cout];
    }
    let db: Vec<f32> =
        (0..cout).map(|oc| (0..n).flat_map(|bt| r[(bt * cout + oc) * vox..][..vox].iter()).sum()).collect();

    let (xt, wt) = (tensor(&x, xs).require_grad(), tensor(&w, ws).require_grad());
    let bt = Tensor::<Train, 1>::from_data(TensorData::new(b, [cout]), &Default::default()).require_grad();
    let out = op(xt.clone(), wt.clone(), bt.clone());
    assert_eq!(out.dims(), ys, "{what}: output shape");
    let grads = (out.clone() * tensor(&r, ys)).sum().backward();
    let tol = 1e-5;
    assert_close(&format!("{what} y"), &host(out), &y, tol);
    assert_close(&format!("{what} dx"), &host(xt.grad(&grads).expect("dx")), &dx, tol);
    assert_close(&format!("{what} dw"), &host(wt.grad(&grads).expect("dw")), &dw, tol);
    assert_close(&format!("{what} db"), &host(bt.grad(&grads).expect("db")), &db, tol);
}

struct Case {
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    dilation: [usize; 3],
}

fn check_conv(case: Case, seed: u64) {
    let Case { n, cin, cout, groups, input, kernel, stride, padding, dilation } = case;
    let options = ConvOptions::new(stride, padding, dilation, groups);
    let cpg = cin / groups;
    let output: [usize; 3] =
        std::array::from_fn(|a| (input[a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) / stride[a] + 1);
    let xs = [n, cin, input[0], input[1], input[2]];
    let ws = [cout, cpg, kernel[0], kernel[1], kernel[2]];
    let ys = [n, cout, output[0], output[1], output[2]];
    let terms = |term: &mut dyn FnMut(usize, usize, usize)| {
        conv_terms(n, cout, cpg, groups, input, output, kernel, &options, |bt, oc, ic, out, src, k| {
            term(
                at(ys, [bt, oc, out[0], out[1], out[2]]),
                at(xs, [bt, ic, src[0], src[1], src[2]]),
                at(ws, [oc, ic % cpg, k[0], k[1], k[2]]),
            )
        })
    };
    let op = |x, w, b| conv3d(x, w, Some(b), options.clone());
    check_against_definition("conv3d", [xs, ws, ys], seed, terms, op);
}

#[test]
fn conv3d_k3_s1_p1_over_several_tiles_matches_definition() {
    // 12·11·10 = 1320 output voxels per sample: two tiles, the second partial, on both threads.
    let c = Case {
        n: 2,
        cin: 3,
        cout: 5,
        groups: 1,
        input: [12, 11, 10],
        kernel: [3; 3],
        stride: [1; 3],
        padding: [1; 3],
        dilation: [1; 3],
    };
    check_conv(c, 1);
}

#[test]
fn conv3d_strided_downsampling_on_odd_shapes_matches_definition() {
    let c = Case {
        n: 2,
        cin: 4,
        cout: 6,
        groups: 1,
        input: [9, 7, 11],
        kernel: [3; 3],
        stride: [2; 3],
        padding: [1; 3],
        dilation: [1; 3],
    };
    check_conv(c, 2);
}

#[test]
fn conv3d_anisotropic_kernel_and_stride_match_definition() {
    // nnU-Net's first stages on thick-slice data: no mixing or striding along the slice axis.
    let c = Case {
        n: 1,
        cin: 2,
        cout: 3,
        groups: 1,
        input: [3, 10, 9],
        kernel: [1, 3, 3],
        stride: [1, 2, 2],
        padding: [0, 1, 1],
        dilation: [1; 3],
    };
    check_conv(c, 3);
}

#[test]
fn conv3d_groups_dilation_and_no_padding_match_definition() {
    let c = Case {
        n: 2,
        cin: 4,
        cout: 6,
        groups: 2,
        input: [8, 9, 7],
        kernel: [3, 2, 3],
        stride: [1, 1, 2],
        padding: [2, 0, 1],
        dilation: [2, 1, 1],
    };
    check_conv(c, 4);
}

#[test]
fn conv3d_single_sample_smaller_than_a_tile_matches_definition() {
    // One task for two threads.
    let c = Case {
        n: 1,
        cin: 8,
        cout: 16,
        groups: 1,
        input: [4, 4, 4],
        kernel: [3; 3],
        stride: [1; 3],
        padding: [1; 3],
        dilation: [1; 3],
    };
    check_conv(c, 5);
}

#[test]
fn pointwise_conv3d_gradients_match_definition() {
    let c = Case {
        n: 2,
        cin: 5,
        cout: 3,
        groups: 1,
        input: [6, 5, 4],
        kernel: [1; 3],
        stride: [1; 3],
        padding: [0; 3],
        dilation: [1; 3],
    };
    check_conv(c, 6);
}

struct TransposedCase {
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    padding_out: [usize; 3],
}

fn check_transposed(case: TransposedCase, seed: u64) {
    let TransposedCase { n, cin, cout, groups, input, kernel, stride, padding, padding_out } = case;
    let options = ConvTransposeOptions::new(stride, padding, padding_out, [1; 3], groups);
    let (ipg, opg) = (cin / groups, cout / groups);
    let output: [usize; 3] =
        std::array::from_fn(|a| (input[a] - 1) * stride[a] + kernel[a] + padding_out[a] - 2 * padding[a]);
    let xs = [n, cin, input[0], input[1], input[2]];
    let ws = [cin, opg, kernel[0], kernel[1], kernel[2]];
    let ys = [n, cout, output[0], output[1], output[2]];
    // Definition: every input voxel i scatters w[ic, oc, k] · x into output i·s + k − p.
    let terms = |term: &mut dyn FnMut(usize, usize, usize)| {
        let voxels =
            |e: [usize; 3]| (0..e[0]).flat_map(move |a| (0..e[1]).flat_map(move |b| (0..e[2]).map(move |c| [a, b, c])));
        for bt in 0..n {
            for ic in 0..cin {
                for oc_l in 0..opg {
                    let oc = (ic / ipg) * opg + oc_l;
                    for i in voxels(input) {
                        for k in voxels(kernel) {
                            let mut dst = [0usize; 3];
                            let inside = (0..3).all(|a| {
                                let p = (i[a] * stride[a] + k[a]) as isize - padding[a] as isize;
                                dst[a] = p.max(0) as usize;
                                p >= 0 && (p as usize) < output[a]
                            });
                            if inside {
                                term(
                                    at(ys, [bt, oc, dst[0], dst[1], dst[2]]),
                                    at(xs, [bt, ic, i[0], i[1], i[2]]),
                                    at(ws, [ic, oc_l, k[0], k[1], k[2]]),
                                );
                            }
                        }
                    }
                }
            }
        }
    };
    let op = |x, w, b| conv_transpose3d(x, w, Some(b), options.clone());
    check_against_definition("conv_transpose3d", [xs, ws, ys], seed, terms, op);
}

#[test]
fn unet_upsampling_transposed_conv_matches_definition() {
    // kernel = stride = 2, the decoder's upsampling, to 16·14·12 = 2688 voxels (three tiles).
    let c = TransposedCase {
        n: 2,
        cin: 6,
        cout: 3,
        groups: 1,
        input: [8, 7, 6],
        kernel: [2; 3],
        stride: [2; 3],
        padding: [0; 3],
        padding_out: [0; 3],
    };
    check_transposed(c, 11);
}

#[test]
fn anisotropic_upsampling_transposed_conv_matches_definition() {
    let c = TransposedCase {
        n: 1,
        cin: 4,
        cout: 2,
        groups: 1,
        input: [3, 5, 4],
        kernel: [1, 2, 2],
        stride: [1, 2, 2],
        padding: [0; 3],
        padding_out: [0; 3],
    };
    check_transposed(c, 12);
}

#[test]
fn overlapping_grouped_transposed_conv_with_output_padding_matches_definition() {
    let c = TransposedCase {
        n: 2,
        cin: 4,
        cout: 6,
        groups: 2,
        input: [4, 5, 3],
        kernel: [3; 3],
        stride: [2; 3],
        padding: [1; 3],
        padding_out: [1, 0, 1],
    };
    check_transposed(c, 13);
}

#[test]
fn half_and_double_precision_convs_agree_with_f32() {
    // bf16 is computed through f32 and f16/f64 natively on the tiled path; all must give the f32 answer.
    let xs = [2, 4, 6, 7, 5];
    let ws = [3, 4, 3, 3, 3];
    let x = tensor(&values(xs.iter().product(), 21), xs);
    let w = tensor(&values(ws.iter().product(), 22), ws);
    let options = ConvOptions::new([1; 3], [1; 3], [1; 3], 1);
    let want = host(conv3d(x.clone(), w.clone(), None, options.clone()));
    for (float, dtype, tol) in [
        (FloatDType::F64, DType::F64, 1e-6),
        (FloatDType::F16, DType::F16, 2e-2),
        (FloatDType::BF16, DType::BF16, 3e-2),
    ] {
        let got = conv3d(x.clone().cast(float), w.clone().cast(float), None, options.clone());
        assert_eq!(got.dtype(), dtype);
        assert_close(&format!("{dtype:?} conv3d"), &host(got.cast(FloatDType::F32)), &want, tol);
    }
}
