//! `voxplan phantoms`: writes seeded synthetic phantoms in the MSD / nnU-Net raw layout, so the on-disk
//! training path can be tried (and tested) without downloading a dataset.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_volumes::phantom::PhantomSpec;
use voxplan_volumes::phantom_msd::write_msd;

#[derive(clap::Args)]
pub struct Args {
    /// Dataset folder to create (gets dataset.json, imagesTr/, labelsTr/).
    #[arg(long)]
    out: PathBuf,
    /// Number of training cases.
    #[arg(long)]
    cases: usize,
    /// Volume shape in voxels, x y z.
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"], default_values_t = [48, 48, 48])]
    shape: Vec<usize>,
    /// Voxel spacing in mm, x y z (e.g. 1 1 3 for thick slices).
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"], default_values_t = [1.0, 1.0, 1.0])]
    spacing: Vec<f64>,
    /// Labelled structures per case (classes = structures + background).
    #[arg(long, default_value_t = 3)]
    structures: usize,
    /// Image channels (contrasts) per case.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write uncompressed .nii (patch-streamable) instead of .nii.gz.
    #[arg(long)]
    uncompressed: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (Ok(shape), Ok(spacing)) = (<[usize; 3]>::try_from(args.shape), <[f64; 3]>::try_from(args.spacing)) else {
        anyhow::bail!("--shape and --spacing take three values each");
    };
    anyhow::ensure!(shape.iter().all(|&s| s > 0), "--shape must be positive, got {shape:?}");
    anyhow::ensure!(spacing.iter().all(|&s| s.is_finite() && s > 0.0), "--spacing must be positive, got {spacing:?}");
    anyhow::ensure!(args.channels > 0 && args.structures > 0, "--channels and --structures must be at least 1");
    let spec = PhantomSpec { shape, spacing, structures: args.structures, channels: args.channels, seed: args.seed };
    let ending = if args.uncompressed { ".nii" } else { ".nii.gz" };
    let files = write_msd(&args.out, &spec, args.cases, ending)
        .with_context(|| format!("writing phantoms to {}", args.out.display()))?;
    println!(
        "wrote {} cases ({} files) to {}: shape {:?}, spacing {:?} mm, {} channel(s), {} classes, seed {}",
        args.cases,
        files.len(),
        args.out.display(),
        shape,
        spacing,
        args.channels,
        spec.num_classes(),
        args.seed
    );
    Ok(())
}
