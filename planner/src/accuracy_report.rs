//! Text and Markdown tables of a planner-accuracy run (`voxplan bench planner`).

use std::fmt::Write;

use crate::accuracy::{Comparison, ErrorSummary, summarize};
use crate::zoo::ZooHalf;

const MIB: f64 = (1u64 << 20) as f64;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn half_label(h: ZooHalf) -> &'static str {
    match h {
        ZooHalf::Calibration => "cal",
        ZooHalf::Holdout => "hold-out",
    }
}

fn patch_label(p: [usize; 3]) -> String {
    if p[0] == p[1] && p[1] == p[2] { format!("{}³", p[0]) } else { format!("{}×{}×{}", p[2], p[1], p[0]) }
}

/// One line per configuration, for the terminal.
pub fn text_row(c: &Comparison) -> String {
    format!(
        "{:<28} {:<8} {:<32} {:>9} {:>2} {:>10.1} {:>10.1} {:>+8.1}%  worst: {} {:+.1}% at {}",
        c.name,
        half_label(c.half),
        c.summary,
        patch_label(c.patch),
        c.batch,
        mib(c.predicted.peak_bytes),
        mib(c.measured.peak_bytes),
        100.0 * c.relative_error,
        c.worst_phase.what,
        100.0 * c.worst_phase.relative_error,
        c.worst_phase.op
    )
}

/// The header matching [`text_row`].
pub fn text_header() -> String {
    format!(
        "{:<28} {:<8} {:<32} {:>9} {:>2} {:>10} {:>10} {:>9}",
        "config", "half", "network", "patch", "b", "pred MiB", "meas MiB", "error"
    )
}

fn summary_line(label: &str, s: Option<ErrorSummary>) -> String {
    match s {
        Some(s) => format!(
            "{label}: {} configurations, median |error| {:.1} %, worst |error| {:.1} %",
            s.count,
            100.0 * s.median_abs,
            100.0 * s.worst_abs
        ),
        None => format!("{label}: no configurations"),
    }
}

/// Summary lines for the hold-out and calibration halves.
pub fn text_summary(results: &[Comparison]) -> String {
    format!(
        "{}\n{}",
        summary_line("hold-out", summarize(results, ZooHalf::Holdout)),
        summary_line("calibration", summarize(results, ZooHalf::Calibration))
    )
}

/// The Markdown table for `docs/planner-accuracy.md`: per configuration the predicted and measured peak,
/// the error, the retained-after-forward pair and the phase where the two disagree most.
pub fn markdown(results: &[Comparison], device: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| config | half | network | patch | batch | predicted MiB | measured MiB | error | retained pred / meas MiB | \
         largest phase disagreement | step s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for c in results {
        let w = &c.worst_phase;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:+.1} % | {:.1} / {:.1} | {} {:+.1} % ({:.1} vs {:.1}; planner op `{}`) | {:.2} |",
            c.name,
            half_label(c.half),
            c.summary,
            patch_label(c.patch),
            c.batch,
            mib(c.predicted.peak_bytes),
            mib(c.measured.peak_bytes),
            100.0 * c.relative_error,
            mib(c.predicted.retained_after_forward_bytes),
            mib(c.measured.retained_after_forward_bytes),
            w.what,
            100.0 * w.relative_error,
            mib(w.predicted_bytes),
            mib(w.measured_bytes),
            w.op,
            c.measured.step_seconds
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Device: {device}.");
    let _ = writeln!(out);
    let _ = writeln!(out, "- {}", summary_line("Hold-out", summarize(results, ZooHalf::Holdout)));
    let _ = writeln!(out, "- {}", summary_line("Calibration half", summarize(results, ZooHalf::Calibration)));
    if results.iter().any(|c| c.measured.driver_used_bytes.is_some()) {
        let _ = writeln!(out);
        let _ = writeln!(out, "| config | planned peak incl. context MiB | driver used MiB |");
        let _ = writeln!(out, "|---|---|---|");
        for c in results {
            if let Some(d) = c.measured.driver_used_bytes {
                let _ = writeln!(out, "| {} | {:.0} | {:.0} |", c.name, mib(c.predicted.planned_peak_bytes), mib(d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accuracy::{MeasuredStep, compare, predict};
    use crate::device::{DeviceSelector, device_profile};
    use crate::zoo::parse_zoo;

    #[test]
    fn markdown_has_one_row_per_configuration_and_the_summary() {
        let zoo = parse_zoo(
            r#"[[config]]
            name = "tiny"
            half = "holdout"
            patch = [32, 32, 16]
            batch = 1
            precision = "f32"
            optimizer = "sgd"
            features = [4, 8]
            norm = { kind = "instance" }"#,
            "t",
        )
        .unwrap();
        let dev = device_profile(&DeviceSelector::Cpu).unwrap();
        let p = predict(&zoo[0], &dev).unwrap();
        let m = MeasuredStep { peak_bytes: p.peak_bytes, forward_peak_bytes: p.peak_bytes, ..Default::default() };
        let c = compare(&zoo[0], p, m);
        let md = markdown(std::slice::from_ref(&c), "test cpu");
        assert!(md.contains("| tiny | hold-out |") && md.contains("16×32×32"), "{md}");
        assert!(md.contains("Hold-out: 1 configurations, median |error| 0.0 %"), "{md}");
        assert!(text_row(&c).starts_with("tiny"));
    }
}
