//! The report as text (terminal), JSON (the documented schema), Markdown and HTML (with an SVG chart of
//! memory versus batch).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::PlanReport;
use crate::units::format_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
    Html,
}

/// Renders `report` in `format`.
pub fn render(report: &PlanReport, format: ReportFormat) -> String {
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        ReportFormat::Text => text(report),
        ReportFormat::Markdown => markdown(report),
        ReportFormat::Html => html(report),
    }
}

fn summary_rows(r: &PlanReport) -> Vec<(&'static str, String)> {
    let t = &r.training;
    vec![
        (
            "device",
            format!(
                "{} — {} total, {} free ({})",
                r.device.name,
                format_bytes(r.device.total_bytes),
                format_bytes(r.device.free_bytes),
                r.device.source
            ),
        ),
        (
            "budget",
            format!(
                "{} ({} {} − {:.0} %)",
                format_bytes(r.budget.usable_bytes),
                r.budget.source,
                format_bytes(r.budget.raw_bytes),
                r.budget.safety_margin_fraction * 100.0
            ),
        ),
        ("patch", format!("{:?}", t.patch_size)),
        if t.devices > 1 {
            (
                "batch × devices × accumulation",
                format!("{} × {} × {} = {}", t.batch_size, t.devices, t.accumulation_steps, t.effective_batch),
            )
        } else {
            ("batch × accumulation", format!("{} × {} = {}", t.batch_size, t.accumulation_steps, t.effective_batch))
        },
        ("precision", format!("{:?}", t.precision)),
        ("checkpointing", if t.checkpointing { "balanced".into() } else { "off".into() }),
        ("learning rate", format!("{:e}, {} warm-up steps", t.learning_rate, t.warmup_steps)),
        ("predicted peak", format!("{} at {} ({:?})", format_bytes(t.predicted_peak_bytes), r.peak_op, r.peak_phase)),
        ("parameters", r.parameters.to_string()),
        ("max batch that fits", r.max_batch_that_fits.to_string()),
    ]
}

fn text(r: &PlanReport) -> String {
    let mut s = String::from("voxplan training plan\n\n");
    for (k, v) in summary_rows(r) {
        let _ = writeln!(s, "  {k:<22} {v}");
    }
    s.push_str("\nDecisions\n");
    for d in &r.decisions {
        let _ = writeln!(s, "  {:<14} {}\n  {:<14}   because {}", d.topic, d.choice, "", d.reason);
    }
    s.push_str("\nAlternatives\n");
    for a in &r.alternatives {
        let _ = writeln!(
            s,
            "  {:<22} {:>12}  {}  ({})",
            a.label,
            format_bytes(a.predicted_peak_bytes),
            if a.fits { "fits" } else { "does not fit" },
            a.note
        );
    }
    s.push_str("\nMemory versus batch\n");
    for p in &r.batch_curve {
        let _ = writeln!(
            s,
            "  batch {:>4}  {:>12}  {}",
            p.batch_size,
            format_bytes(p.predicted_peak_bytes),
            if p.fits { "fits" } else { "over budget" }
        );
    }
    s.push_str("\nLayers (kept until backward / transient)\n");
    for l in &r.layers {
        let _ = writeln!(
            s,
            "  {:<18} {:>12} {:>12}  {} params",
            l.name,
            format_bytes(l.kept_bytes),
            format_bytes(l.transient_bytes),
            l.params
        );
    }
    s
}

fn markdown(r: &PlanReport) -> String {
    let mut s = String::from("# voxplan training plan\n\n| | |\n| --- | --- |\n");
    for (k, v) in summary_rows(r) {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str("\n## Decisions\n\n| topic | choice | reason |\n| --- | --- | --- |\n");
    for d in &r.decisions {
        let _ = writeln!(s, "| {} | {} | {} |", d.topic, d.choice, d.reason);
    }
    s.push_str("\n## Alternatives\n\n| option | peak | fits | note |\n| --- | --- | --- | --- |\n");
    for a in &r.alternatives {
        let _ = writeln!(s, "| {} | {} | {} | {} |", a.label, format_bytes(a.predicted_peak_bytes), a.fits, a.note);
    }
    s.push_str("\n## Memory versus batch\n\n| batch | peak | fits |\n| --- | --- | --- |\n");
    for p in &r.batch_curve {
        let _ = writeln!(s, "| {} | {} | {} |", p.batch_size, format_bytes(p.predicted_peak_bytes), p.fits);
    }
    s.push_str("\n## Layers\n\n| layer | kept | transient | params |\n| --- | --- | --- | --- |\n");
    for l in &r.layers {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            l.name,
            format_bytes(l.kept_bytes),
            format_bytes(l.transient_bytes),
            l.params
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Memory-versus-batch chart: one bar per curve point, a dashed line at the budget.
fn svg_chart(r: &PlanReport) -> String {
    const W: f64 = 640.0;
    const H: f64 = 240.0;
    const PAD: f64 = 40.0;
    let max = r.batch_curve.iter().map(|p| p.predicted_peak_bytes).max().unwrap_or(1).max(r.budget.usable_bytes) as f64;
    let n = r.batch_curve.len().max(1) as f64;
    let bw = (W - 2.0 * PAD) / n;
    let y = |b: u64| H - PAD - (b as f64 / max) * (H - 2.0 * PAD);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"predicted peak memory versus batch\">"
    );
    for (i, p) in r.batch_curve.iter().enumerate() {
        let x = PAD + i as f64 * bw;
        let top = y(p.predicted_peak_bytes);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>batch {}: {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + 2.0,
            bw - 4.0,
            H - PAD - top,
            if p.fits { "#4a90d9" } else { "#d9534f" },
            p.batch_size,
            format_bytes(p.predicted_peak_bytes),
            x + bw / 2.0,
            H - PAD + 14.0,
            p.batch_size
        );
    }
    let by = y(r.budget.usable_bytes);
    let _ = write!(
        s,
        "<line x1=\"{PAD}\" x2=\"{:.1}\" y1=\"{by:.1}\" y2=\"{by:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{PAD}\" y=\"{:.1}\" font-size=\"11\">budget {}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">batch</text></svg>",
        W - PAD,
        by - 4.0,
        format_bytes(r.budget.usable_bytes),
        W / 2.0,
        H - 6.0
    );
    s
}

fn html(r: &PlanReport) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>voxplan plan</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body><h1>voxplan training plan</h1><table>",
    );
    for (k, v) in summary_rows(r) {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    s.push_str("</table><h2>Memory versus batch</h2>");
    s.push_str(&svg_chart(r));
    s.push_str("<h2>Decisions</h2><table><tr><th>topic</th><th>choice</th><th>reason</th></tr>");
    for d in &r.decisions {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&d.topic), esc(&d.choice), esc(&d.reason));
    }
    s.push_str("</table><h2>Alternatives</h2><table><tr><th>option</th><th>peak</th><th>fits</th><th>note</th></tr>");
    for a in &r.alternatives {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.label),
            format_bytes(a.predicted_peak_bytes),
            a.fits,
            esc(&a.note)
        );
    }
    s.push_str("</table><h2>Layers</h2><table><tr><th>layer</th><th>kept</th><th>transient</th><th>params</th></tr>");
    for l in &r.layers {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.name),
            format_bytes(l.kept_bytes),
            format_bytes(l.transient_bytes),
            l.params
        );
    }
    s.push_str("</table></body></html>\n");
    s
}
