//! The planner and the trainer build the same network: for every configuration of the shipped zoos (the CPU,
//! CUDA and unusual ones: depth 1 to 7, flat kernels, per-stage conv counts, residual blocks, deep
//! supervision, 1–3 input channels, 2–6 classes), the model `UNetConfig` builds has exactly the parameters
//! the planner's graph counts, and as many logits heads as the planner has losses. Models are only built,
//! not run: the step itself is measured by `voxplan bench planner`.

mod model_support;

use std::path::Path;

use model_support::{SEED, Train, seeded_init};
use voxplan_pipeline::model::{UNet, UNetConfig, parameter_count};
use voxplan_planner::accuracy::simulate_config;
use voxplan_planner::zoo::load_zoo;
use voxplan_planner::{DeviceSelector, device_profile};

#[test]
fn every_zoo_network_has_the_planners_parameters_and_heads() {
    let dev = device_profile(&DeviceSelector::Cpu).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/zoo");
    for file in ["cpu.toml", "cpu-unusual.toml", "cuda.toml"] {
        for cfg in load_zoo(&root.join(file)).unwrap() {
            let timeline = simulate_config(&cfg, 1, &dev).unwrap();
            let net = cfg.network().unwrap();
            let model: UNet<Train> =
                seeded_init(SEED, || UNetConfig::new(net.clone(), cfg.precision).init(&Default::default()));
            assert_eq!(parameter_count(&model) as u64, timeline.param_count, "{file}: {}", cfg.name);
            let heads = model.decoder.stages.iter().filter(|s| s.head.is_some()).count()
                + usize::from(model.decoder.single_stage_head.is_some());
            let is_loss = |op: &str| op == "loss" || (op.starts_with("ds_loss") && !op.ends_with("backward"));
            let losses = timeline.events.iter().filter(|e| is_loss(&e.op)).count();
            assert_eq!(heads, losses, "{file}: {}", cfg.name);
        }
    }
}
