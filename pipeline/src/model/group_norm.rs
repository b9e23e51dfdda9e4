//! GroupNorm (and InstanceNorm, its one-channel-per-group case) computed in shapes burn flex runs fast.
//!
//! burn-nn's `group_norm` multiplies `[B, C, D, H, W]` by `gamma` viewed as `[1, C, 1, 1, 1]`. With a batch
//! above one that broadcast matches neither of flex's SIMD broadcast patterns (a shared last-axis row, or one
//! scalar per contiguous row), so flex walks it element by element with a strided index iterator, forward and
//! in the gradient; measured here that iterator was ~25 % of a default training step. This version gives the
//! same numbers with every broadcast in the "one scalar per row" form: statistics on `[B, G, C/G·DHW]` rows,
//! the affine on `[B·C, DHW]` rows with `gamma`/`beta` repeated to one scalar per row (`[B·C, 1]`, tiny).
//!
//! It keeps burn-nn's op sequence (mean, `x − μ`, variance, divide, scale, shift), so autodiff saves the
//! same two activations (`x − μ` and `x̂`) that the planner's `GROUP_NORM_SAVED_ACTIVATIONS` counts.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `x` normalised over each of `groups` channel groups per sample, then scaled and shifted per channel.
pub fn group_norm<B: Backend>(
    x: Tensor<B, 5>,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    groups: usize,
    epsilon: f64,
) -> Tensor<B, 5> {
    let shape = x.shape();
    let dims: [usize; 5] = shape.dims();
    let [batch, channels, depth, height, width] = dims;
    let voxels = depth * height * width;
    let per_group = channels / groups * voxels;

    let rows = x.reshape([batch, groups, per_group]);
    let mean = rows.clone().sum_dim(2).div_scalar(per_group as f64);
    let centred = rows.sub(mean);
    let variance = centred.clone().square().sum_dim(2).div_scalar(per_group as f64);
    let normalised = centred.div(variance.add_scalar(epsilon).sqrt());

    let mut per_channel = normalised.reshape([batch * channels, voxels]);
    if let Some(gamma) = gamma {
        per_channel = per_channel.mul(one_scalar_per_row(gamma, batch, channels));
    }
    if let Some(beta) = beta {
        per_channel = per_channel.add(one_scalar_per_row(beta, batch, channels));
    }
    per_channel.reshape(dims)
}

/// A per-channel parameter `[C]` as the `[B·C, 1]` column that row `b·C + c` of the affine reads.
fn one_scalar_per_row<B: Backend>(parameter: Tensor<B, 1>, batch: usize, channels: usize) -> Tensor<B, 2> {
    parameter.reshape([1, channels]).repeat_dim(0, batch).reshape([batch * channels, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{GroupNormConfig, InstanceNormConfig};
    use burn::tensor::{Distribution, Tolerance};

    type B = Autodiff<Flex>;

    fn random_input(dims: [usize; 5]) -> Tensor<B, 5> {
        let device = Default::default();
        // Offset and scale so the statistics are not those of a standard normal already.
        Tensor::<B, 5>::random(dims, Distribution::Normal(3.0, 2.5), &device).require_grad()
    }

    /// Output, input gradient and parameter gradients equal burn-nn's for a weighted loss.
    fn assert_matches_burn_nn(dims: [usize; 5], groups: usize) {
        let device = Default::default();
        let mut reference = GroupNormConfig::new(groups, dims[1]).init::<B>(&device);
        // Non-trivial affine parameters, so a wrong channel-to-row mapping shows.
        let gamma = Tensor::<B, 1>::random([dims[1]], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<B, 1>::random([dims[1]], Distribution::Normal(0.0, 0.5), &device);
        reference.gamma = Some(burn::module::Param::from_tensor(gamma));
        reference.beta = Some(burn::module::Param::from_tensor(beta));
        let weights = Tensor::<B, 5>::random(dims, Distribution::Normal(0.0, 1.0), &device);

        let x_ours = random_input(dims);
        let x_theirs = x_ours.clone().detach().require_grad();
        let gamma = reference.gamma.as_ref().map(|p| p.val());
        let beta = reference.beta.as_ref().map(|p| p.val());
        let ours = group_norm(x_ours.clone(), gamma.clone(), beta.clone(), groups, reference.epsilon);
        let theirs = reference.forward(x_theirs.clone());
        ours.to_data().assert_approx_eq::<f32>(&theirs.to_data(), Tolerance::absolute(1e-5));

        let grads_ours = (ours * weights.clone()).sum().backward();
        let grads_theirs = (theirs * weights).sum().backward();
        let dx_ours = x_ours.grad(&grads_ours).expect("input gradient");
        let dx_theirs = x_theirs.grad(&grads_theirs).expect("input gradient");
        dx_ours.to_data().assert_approx_eq::<f32>(&dx_theirs.to_data(), Tolerance::absolute(1e-4));
        for (name, param) in [("gamma", &reference.gamma), ("beta", &reference.beta)] {
            let param = param.as_ref().expect("affine parameter").val();
            let ours = param.grad(&grads_ours).expect("parameter gradient");
            let theirs = param.grad(&grads_theirs).expect("parameter gradient");
            let (ours, theirs) = (ours.to_data(), theirs.to_data());
            assert_eq!(ours.shape, theirs.shape, "{name}");
            ours.assert_approx_eq::<f32>(&theirs, Tolerance::absolute(1e-3));
        }
    }

    #[test]
    fn group_norm_matches_burn_nn_forward_and_backward() {
        assert_matches_burn_nn([2, 8, 4, 5, 6], 4);
        assert_matches_burn_nn([3, 6, 3, 4, 2], 2);
        assert_matches_burn_nn([1, 4, 5, 5, 5], 1);
    }

    #[test]
    fn instance_norm_is_one_channel_per_group() {
        let device = Default::default();
        let instance = InstanceNormConfig::new(4).init::<B>(&device);
        let x = random_input([2, 4, 3, 4, 5]);
        let theirs = instance.forward(x.clone());
        let gamma = instance.gamma.as_ref().map(|p| p.val());
        let beta = instance.beta.as_ref().map(|p| p.val());
        let ours = group_norm(x, gamma, beta, 4, instance.epsilon);
        ours.to_data().assert_approx_eq::<f32>(&theirs.to_data(), Tolerance::absolute(1e-5));
    }
}
