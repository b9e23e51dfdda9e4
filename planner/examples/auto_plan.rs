//! Auto-configures an nnU-Net-style network from a fingerprint and plans it for a GPU from the table,
//! without burn: `cargo run -p voxplan-planner --example auto_plan -- H100 138,169,138 1,1,1`.

use voxplan_planner::{
    DeviceSelector, PlanRequest, PlanSettings, ReportFormat, auto_configure, device_profile, plan, render,
};

fn triple<T: std::str::FromStr>(s: &str) -> Option<[T; 3]> {
    let v: Vec<T> = s.split(',').map(|p| p.trim().parse().ok()).collect::<Option<_>>()?;
    v.try_into().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gpu = args.first().map_or("H100", String::as_str);
    let median: [usize; 3] = args.get(1).and_then(|s| triple(s)).unwrap_or([138, 169, 138]);
    let spacing: [f64; 3] = args.get(2).and_then(|s| triple(s)).unwrap_or([1.0; 3]);
    let (network, patch) = auto_configure(median, spacing, 4, 4);
    let req = PlanRequest {
        network,
        settings: PlanSettings { patch_size: patch, ..PlanSettings::default() },
        device: device_profile(&DeviceSelector::Gpu(gpu.into()))?,
        budget_bytes: None,
        median_shape: Some(median),
        devices: 1,
    };
    println!("{}", render(&plan(&req)?, ReportFormat::Text));
    Ok(())
}
