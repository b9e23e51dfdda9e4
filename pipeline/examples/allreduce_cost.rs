//! The gradient all-reduce's cost per optimizer step on CPU peers (docs/benchmarks.md, issue 13): for a
//! network, the bytes averaged (every trained parameter's f32 gradient) and the milliseconds
//! `Peer::average_gradients` takes on 2 peers in one process, against the time of one real training step
//! (forward + backward of a batch at the given patch) on one peer, measured in the same run.
//!
//! `cargo run --release -p voxplan-pipeline --example allreduce_cost [REPEATS]`

use std::time::Instant;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use voxplan_pipeline::data_parallel::Peer;
use voxplan_pipeline::loss::DiceCeLoss;
use voxplan_pipeline::model::{UNet, UNetConfig, parameter_count};
use voxplan_planner::{NetworkSpec, NormKind, Precision};

type Train = Autodiff<Flex>;

/// One real step's gradients of `net` at `patch` × `batch`, and the seconds that step took.
fn gradients(net: &UNet<Train>, spec: &NetworkSpec, patch: usize, batch: usize) -> (GradientsParams, f64) {
    let device = FlexDevice;
    let voxels = patch * patch * patch;
    let images: Vec<f32> = (0..batch * spec.in_channels * voxels).map(|i| ((i % 97) as f32) / 97.0).collect();
    let labels: Vec<i32> = (0..batch * voxels).map(|i| (i % spec.num_classes) as i32).collect();
    let x =
        Tensor::<Train, 5>::from_data(TensorData::new(images, [batch, spec.in_channels, patch, patch, patch]), &device);
    let y = Tensor::<Train, 4, Int>::from_data(TensorData::new(labels, [batch, patch, patch, patch]), &device);
    let started = Instant::now();
    let loss = DiceCeLoss::new(spec.num_classes, None).forward(&net.forward(x), y);
    let grads = GradientsParams::from_grads(loss.backward(), net);
    (grads, started.elapsed().as_secs_f64())
}

fn measure(name: &str, spec: NetworkSpec, patch: usize, batch: usize, repeats: usize) {
    let device = FlexDevice;
    let net: UNet<Train> = UNetConfig::new(spec.clone(), Precision::F32).init(&device);
    let params = parameter_count(&net);
    let (_, step_s) = gradients(&net, &spec, patch, batch);
    let peers = Peer::group(2);
    Peer::reset_process::<Train>();
    let times: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter()
            .map(|peer| {
                let net = net.clone();
                let spec = spec.clone();
                scope.spawn(move || {
                    peer.register::<Train>(&device).expect("register");
                    let mut times = Vec::new();
                    for _ in 0..repeats {
                        // Small gradients of the real parameter set: the all-reduce moves the same bytes
                        // whatever the patch.
                        let (grads, _) = gradients(&net, &spec, spec.total_stride()[0], 1);
                        let started = Instant::now();
                        let averaged = peer.average_gradients(&net, grads).expect("all-reduce");
                        drop(averaged);
                        times.push(started.elapsed().as_secs_f64());
                    }
                    peer.finish::<Train>();
                    times
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("peer thread")).collect()
    });
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let bytes = params * 4;
    println!(
        "{name:<44} {params:>11} params {:>9.1} MiB  all-reduce median {:>8.1} ms  ({:>6.2} GB/s)  one step at {patch}³ × {batch}: {:>8.1} ms  ratio {:.3}",
        bytes as f64 / 1048576.0,
        median * 1e3,
        bytes as f64 / median / 1e9,
        step_s * 1e3,
        median / step_s
    );
}

fn main() {
    let repeats = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    println!(
        "2 CPU peers in one process (burn-collective tree all-reduce, Mean), {} rayon threads",
        rayon::current_num_threads()
    );
    // The embedded default experiment's network, with the GroupNorm its plan swaps BatchNorm for.
    let mut default = voxplan_pipeline::Experiment::load(None).expect("the embedded experiment").network;
    default.norm = NormKind::Group { groups: 8 };
    measure("default experiment (8-16-32)", default, 32, 2, repeats);
    let brats = NetworkSpec::plain_unet(4, 4, &[32, 64, 128, 256, 320, 320], NormKind::Instance);
    measure("nnU-Net BraTS 6-stage (32…320, 4→4 classes)", brats, 64, 1, repeats);
}
