//! `voxplan inspect FILE`: a NIfTI file's header summary and voxel statistics, readable or as JSON (the
//! form `scripts/nibabel-crosscheck.py` compares against nibabel).

use std::path::PathBuf;

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use serde_json::json;
use voxplan_volumes::nifti::{self, Header};

#[derive(clap::Args)]
pub struct Args {
    /// A `.nii`, `.nii.gz`, `.hdr` or `.img` file.
    file: PathBuf,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    json: bool,
    /// Read the header only (no voxel statistics): instant even on huge files.
    #[arg(long)]
    header_only: bool,
}

/// Statistics over scaled voxels of all channels; NaNs are counted and otherwise left out.
struct Stats {
    min: f64,
    max: f64,
    sum: f64,
    counted: u64,
    nan_count: u64,
}

impl Stats {
    fn of(data: &[f32]) -> Self {
        let mut s = Stats { min: f64::INFINITY, max: f64::NEG_INFINITY, sum: 0.0, counted: 0, nan_count: 0 };
        for &x in data {
            if x.is_nan() {
                s.nan_count += 1;
                continue;
            }
            let x = f64::from(x);
            s.min = s.min.min(x);
            s.max = s.max.max(x);
            s.sum += x;
            s.counted += 1;
        }
        s
    }

    /// `None` (JSON null) when every voxel is NaN.
    fn finite_or_none(&self, v: f64) -> Option<f64> {
        (self.counted > 0).then_some(v)
    }

    fn mean(&self) -> Option<f64> {
        self.finite_or_none(self.sum / self.counted.max(1) as f64)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let header = nifti::read_header(&args.file)?;
    let stats = if args.header_only {
        None
    } else {
        let v = nifti::read_volume(&args.file)?;
        Some(Stats::of(&v.data))
    };
    let text = if args.json {
        let out = to_json(&args, &header, stats.as_ref());
        serde_json::to_string_pretty(&out).context("serialising the summary")? + "\n"
    } else {
        summary(&args, &header, stats.as_ref())
    };
    // A closed pipe (`voxplan inspect f | head`) is the reader's choice, not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Stored dims without trailing unit dimensions: the shape of the image as voxplan uses it.
fn shape(h: &Header) -> Vec<usize> {
    let kept = h.dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    h.dims[..kept].to_vec()
}

fn to_json(args: &Args, h: &Header, stats: Option<&Stats>) -> serde_json::Value {
    let orientation: String = nifti::orientation_codes(&h.affine()).iter().collect();
    let mut out = json!({
        "path": args.file.display().to_string(),
        "format": h.format.name(),
        "nifti_version": h.version,
        "endianness": h.endian.name(),
        "single_file": h.single_file,
        "dims": h.dims,
        "shape": shape(h),
        "channels": h.channels,
        "datatype": h.datatype.name(),
        "spacing": h.spacing(),
        "pixdim": h.pixdim,
        "affine": h.affine(),
        "orientation": orientation,
        "qform_code": h.qform_code,
        "sform_code": h.sform_code,
        "scl_slope": h.scl_slope,
        "scl_inter": h.scl_inter,
        "vox_offset": h.vox_offset,
        "description": h.description,
    });
    if let Some(s) = stats {
        out["min"] = json!(s.finite_or_none(s.min));
        out["max"] = json!(s.finite_or_none(s.max));
        out["mean"] = json!(s.mean());
        out["sum"] = json!(s.sum);
        out["nan_count"] = json!(s.nan_count);
    }
    out
}

fn summary(args: &Args, h: &Header, stats: Option<&Stats>) -> String {
    let mut o = String::new();
    let orientation: String = nifti::orientation_codes(&h.affine()).iter().collect();
    let [sx, sy, sz] = h.spacing();
    let _ = writeln!(o, "{}", args.file.display());
    let _ = writeln!(
        o,
        "  {} {}, {} endian, {}",
        h.format.name(),
        if h.single_file { "single file" } else { "header/image pair" },
        h.endian.name(),
        h.datatype
    );
    let _ =
        writeln!(o, "  shape       {:?} ({} channel{})", shape(h), h.channels, if h.channels == 1 { "" } else { "s" });
    let _ = writeln!(o, "  spacing     {sx:.4} × {sy:.4} × {sz:.4} mm");
    let _ = writeln!(o, "  orientation {orientation}  (qform_code {}, sform_code {})", h.qform_code, h.sform_code);
    for row in h.affine() {
        let _ = writeln!(o, "  affine      [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]", row[0], row[1], row[2], row[3]);
    }
    let _ = writeln!(o, "  scaling     × {} + {} (as applied)", h.scl_slope, h.scl_inter);
    let _ = writeln!(o, "  vox_offset  {}", h.vox_offset);
    if !h.description.is_empty() {
        let _ = writeln!(o, "  description {}", h.description);
    }
    if let Some(s) = stats {
        let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v}"));
        let _ = writeln!(
            o,
            "  voxels      min {}  max {}  mean {}  sum {}  NaN {}",
            fmt(s.finite_or_none(s.min)),
            fmt(s.finite_or_none(s.max)),
            fmt(s.mean()),
            s.sum,
            s.nan_count
        );
    }
    o
}
