//! The one file that calls burn-collective (burn 0.21, feature `collective`): register, all-reduce,
//! finish, reset. Every call blocks until all ranks of the process have made it.
//!
//! Gradients are reduced parameter by parameter in the order the module visits them, the same on every
//! rank, rather than through burn-optim's `GradientsParams::all_reduce`, which orders by `ParamId`: ids are
//! random per replica unless the replicas were cloned from one model, which a process per node never is.

use burn::collective::{self, AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::model::UNet;

/// Registers `rank` of `world` ranks in this process. The tree all-reduce is burn-collective's local
/// default; Ring is its choice across nodes.
pub(super) fn register<B: Backend>(rank: usize, world: usize, device: B::Device) -> Result<(), String> {
    let config =
        CollectiveConfig::default().with_num_devices(world).with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
    collective::register::<B>(PeerId(rank as u32), device, config).map_err(|e| format!("{e:?}"))
}

pub(super) fn finish<B: Backend>(rank: usize) {
    // Leaving an already reset collective fails; there is nothing left to release then.
    let _ = collective::finish_collective::<B>(PeerId(rank as u32));
}

pub(super) fn reset<B: Backend>() {
    collective::reset_collective::<B>();
}

/// Mean over the ranks of every gradient in `grads`, visited in `model`'s parameter order.
pub(super) fn average_gradients<B: AutodiffBackend>(
    rank: usize,
    model: &UNet<B>,
    grads: GradientsParams,
) -> Result<GradientsParams, String> {
    let mut visitor = Average::<B> {
        peer: PeerId(rank as u32),
        source: grads,
        averaged: GradientsParams::new(),
        error: None,
        backend: std::marker::PhantomData,
    };
    model.visit(&mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(visitor.averaged),
    }
}

/// Element-wise sum of `values` over the ranks.
pub(super) fn sum_f32<B: Backend>(rank: usize, values: Vec<f32>, device: &B::Device) -> Result<Vec<f32>, String> {
    let n = values.len();
    let tensor = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device);
    let summed =
        collective::all_reduce::<B>(PeerId(rank as u32), tensor.into_primitive().tensor(), ReduceOperation::Sum)
            .map_err(|e| format!("{e:?}"))?;
    let summed = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed));
    summed.into_data().to_vec::<f32>().map_err(|e| format!("{e:?}"))
}

struct Average<B: AutodiffBackend> {
    peer: PeerId,
    source: GradientsParams,
    averaged: GradientsParams,
    error: Option<String>,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Average<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        // Every rank holds a gradient for every trained parameter (the same network on the same kind of data);
        // a frozen one has none on any rank.
        let Some(grad) = self.source.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        match collective::all_reduce::<B::InnerBackend>(
            self.peer,
            grad.into_primitive().tensor(),
            ReduceOperation::Mean,
        ) {
            Ok(mean) => self
                .averaged
                .register::<B::InnerBackend, D>(param.id, Tensor::from_primitive(TensorPrimitive::Float(mean))),
            Err(e) => self.error = Some(format!("{e:?}")),
        }
    }
}
