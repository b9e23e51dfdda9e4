//! Planner speed: a full `plan` (batch search, checkpointing and norm decisions, alternatives, curve) for
//! nnU-Net-sized networks, timed in a plain loop. Run: `cargo bench -p voxplan-planner`.

use std::time::Instant;

use voxplan_planner::{DeviceSelector, PlanRequest, PlanSettings, auto_configure, device_profile, plan};

const RUNS: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cases = [
        ("BraTS-like 6-stage 128³ on H100", [138, 169, 138], [1.0; 3], "H100"),
        ("prostate-like anisotropic on T4", [320, 320, 20], [0.6, 0.6, 3.6], "T4"),
    ];
    for (label, median, spacing, gpu) in cases {
        let (network, patch) = auto_configure(median, spacing, 1, 3);
        let device = device_profile(&DeviceSelector::Gpu(gpu.into()))?;
        let req = PlanRequest {
            network,
            settings: PlanSettings { patch_size: patch, ..PlanSettings::default() },
            device,
            budget_bytes: None,
            median_shape: Some(median),
            devices: 1,
        };
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            let r = plan(&req)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(r);
        }
        times.sort_by(f64::total_cmp);
        println!("{label}: median {:.2} ms, max {:.2} ms over {RUNS} full plans", times[RUNS / 2], times[RUNS - 1]);
    }
    Ok(())
}
