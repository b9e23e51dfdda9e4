//! `voxplan dataset check`: every problem of a dataset before training, not only the first (nnU-Net's
//! `--verify_dataset_integrity` stops at the first).
//!
//! Headers plus one pass over the voxels: each file is read once, by the same reader training uses, so a
//! file the check passes is a file training can read. Per case: the channels present, image and label on
//! one grid (shape, and affine within [`AFFINE_TOLERANCE_MM`]), label values among the declared ones,
//! NaN/Inf voxels in images, unreadable or truncated files (the reader's own errors). Across cases: channel
//! counts, orientations, spacing outliers, classes declared but never present. The summary gives the
//! classes with their voxel share, median shape and spacing, and foreground intensity percentiles (for CT
//! the clipping range training will use). Cases are checked on several threads, one case per thread at a
//! time, each channel file decoded on its own, so memory stays at a few volumes whatever the dataset.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::config::{DataConfig, DataSource, Modality, OrientationPolicy};
use crate::dataset::{
    AFFINE_TOLERANCE_MM, CaseFiles, Dataset, ImageFiles, Listing, affine_distance, found_label_space,
};
use crate::error::Result;
use crate::fingerprint::{PERCENTILE_SAMPLES_PER_CASE, percentile};
use crate::label_space::{LabelSource, LabelSpace};
use crate::nifti::{self, AxisCodes};
use crate::volume::{Affine, spacing_of};

/// A case whose spacing along an axis is this many times the dataset's median (or less than its inverse)
/// is reported: resampling to the median would stretch it that much, the mark of a different protocol or a
/// wrong header more often than of real anatomy.
pub const SPACING_OUTLIER_FACTOR: f64 = 3.0;
/// Foreground intensity percentiles the summary reports (nnU-Net clips CT to the first and last).
const PERCENTILES: [f64; 3] = [0.5, 50.0, 99.5];

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Training would stop on it or learn from wrong data: the check exits non-zero.
    Error,
    /// Worth a look; training runs.
    Warning,
}

/// One problem, with the case and file it concerns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub case: Option<String>,
    pub path: Option<PathBuf>,
    pub message: String,
}

/// What one case holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseReport {
    pub id: String,
    /// Image channels read (all channel files, or the fourth axis of an MSD 4-D image).
    pub channels: usize,
    pub shape: Option<[usize; 3]>,
    pub spacing: Option<[f64; 3]>,
    pub orientation: Option<AxisCodes>,
    /// Voxels per label value present.
    pub label_voxels: Vec<(u16, u64)>,
    /// NaN or infinite image voxels over all channels.
    pub non_finite_voxels: u64,
}

/// A class's share of all labelled voxels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassShare {
    pub value: u16,
    pub name: String,
    pub voxels: u64,
    pub share: f64,
    /// Cases in which it appears.
    pub cases: usize,
}

/// Foreground (label ≠ background) intensities of one channel over the dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelIntensity {
    pub channel: usize,
    pub name: String,
    pub mean: f64,
    pub std: f64,
    /// `(percentile, value)`: 0.5, 50 and 99.5, from at most
    /// [`PERCENTILE_SAMPLES_PER_CASE`] evenly strided foreground voxels per case, as the fingerprint samples.
    pub percentiles: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub cases: usize,
    pub cases_with_errors: usize,
    pub channel_names: Vec<String>,
    pub classes: Vec<ClassShare>,
    pub median_shape: Option<[usize; 3]>,
    pub median_spacing: Option<[f64; 3]>,
    /// Orientations and how many cases have each, most common first.
    pub orientations: Vec<(AxisCodes, usize)>,
    pub intensity: Vec<ChannelIntensity>,
    pub modality: Modality,
    pub seconds: f64,
    pub threads: usize,
}

/// The whole check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub root: PathBuf,
    pub labels: Option<LabelSpace>,
    pub problems: Vec<Problem>,
    pub cases: Vec<CaseReport>,
    pub summary: Summary,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }

    /// No errors (warnings allowed): what the exit status reports.
    pub fn is_clean(&self) -> bool {
        self.errors() == 0
    }
}

/// What to check against.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Classes to check label values against; default: what `dataset.json` declares, else the values found.
    pub labels: Option<LabelSpace>,
    pub orientation: OrientationPolicy,
    /// The experiment's `network.num_classes`, when checking an experiment.
    pub expected_classes: Option<usize>,
    pub modality: Modality,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            labels: None,
            orientation: OrientationPolicy::AsStored,
            expected_classes: None,
            modality: Modality::Mri,
            threads: 0,
        }
    }
}

/// Checks the MSD / nnU-Net v2 dataset at `root`.
pub fn check_dataset_dir(root: &Path, options: &CheckOptions) -> CheckReport {
    let started = Instant::now();
    match Dataset::list_msd(root) {
        Ok(listing) => {
            // MSD names a CT channel "CT": its percentiles are then the clipping range training will use.
            let ct = !listing.dataset.channel_names.is_empty()
                && listing.dataset.channel_names.iter().all(|n| n.eq_ignore_ascii_case("ct"));
            let modality = if ct { Modality::Ct } else { options.modality };
            check_listing(listing, &CheckOptions { modality, ..options.clone() }, started)
        }
        Err(e) => unreadable(root, e.to_string(), options, started),
    }
}

/// Checks the dataset an experiment's `[data]` section names, against its labels, orientation policy,
/// modality and (when given) the network's class count. Phantoms are generated, so there is nothing to
/// read; their classes are still checked against `expected_classes`.
pub fn check_data_config(cfg: &DataConfig, expected_classes: Option<usize>) -> CheckReport {
    let started = Instant::now();
    let labels = match cfg.labels.as_ref().map(|table| {
        let pairs = table.iter().map(|(name, &value)| (value, name.clone()));
        LabelSpace::new(pairs, LabelSource::Experiment, Path::new("[data] labels"))
    }) {
        Some(Err(e)) => {
            return unreadable(Path::new("[data] labels"), e.to_string(), &CheckOptions::default(), started);
        }
        Some(Ok(l)) => Some(l),
        None => None,
    };
    let options =
        CheckOptions { labels, orientation: cfg.orientation, expected_classes, modality: cfg.modality, threads: 0 };
    let listing = match &cfg.source {
        DataSource::Msd { root } => Dataset::list_msd(root).map_err(|e| (root.clone(), e)),
        DataSource::Folder { images, labels, image_pattern, label_pattern } => {
            Dataset::list_folder(images, labels, image_pattern, label_pattern).map_err(|e| (images.clone(), e))
        }
        DataSource::Phantom { .. } => return phantom_report(cfg, &options, started),
    };
    match listing {
        Ok(listing) => check_listing(listing, &options, started),
        Err((root, e)) => unreadable(&root, e.to_string(), &options, started),
    }
}

fn phantom_report(cfg: &DataConfig, options: &CheckOptions, started: Instant) -> CheckReport {
    let DataSource::Phantom { cases, shape, spacing, structures, channels, seed } = &cfg.source else {
        unreachable!("called for phantom sources only")
    };
    let spec = crate::phantom::PhantomSpec {
        shape: *shape,
        spacing: *spacing,
        structures: *structures,
        channels: *channels,
        seed: *seed,
    };
    let labels = spec.label_space();
    let mut problems = Vec::new();
    class_count_problem(&labels, options.expected_classes, &mut problems);
    let mut summary = empty_summary(options, started);
    summary.cases = *cases;
    summary.median_shape = Some(*shape);
    summary.median_spacing = Some(*spacing);
    summary.channel_names = (0..*channels).map(|c| format!("phantom_contrast_{c}")).collect();
    CheckReport {
        root: PathBuf::from("(phantoms, generated)"),
        labels: Some(labels),
        problems,
        cases: Vec::new(),
        summary,
    }
}

/// The report of a dataset that cannot even be listed (its dataset.json, a missing folder).
fn unreadable(root: &Path, message: String, options: &CheckOptions, started: Instant) -> CheckReport {
    let problem = Problem { severity: Severity::Error, case: None, path: Some(root.to_path_buf()), message };
    CheckReport {
        root: root.to_path_buf(),
        labels: None,
        problems: vec![problem],
        cases: Vec::new(),
        summary: empty_summary(options, started),
    }
}

fn empty_summary(options: &CheckOptions, started: Instant) -> Summary {
    Summary {
        cases: 0,
        cases_with_errors: 0,
        channel_names: Vec::new(),
        classes: Vec::new(),
        median_shape: None,
        median_spacing: None,
        orientations: Vec::new(),
        intensity: Vec::new(),
        modality: options.modality,
        seconds: started.elapsed().as_secs_f64(),
        threads: 0,
    }
}

fn class_count_problem(labels: &LabelSpace, expected: Option<usize>, problems: &mut Vec<Problem>) {
    if let Some(n) = expected
        && let Err(e) = labels.check_class_count(n)
    {
        problems.push(Problem { severity: Severity::Error, case: None, path: None, message: e.to_string() });
    }
}

/// What checking one case found.
struct CaseOutcome {
    report: CaseReport,
    problems: Vec<Problem>,
    /// Per channel: foreground sum, sum of squares, count, sampled values.
    intensity: Vec<ForegroundSample>,
}

#[derive(Default, Clone)]
struct ForegroundSample {
    sum: f64,
    sum_sq: f64,
    count: u64,
    sampled: Vec<f64>,
}

fn check_listing(listing: Listing, options: &CheckOptions, started: Instant) -> CheckReport {
    let Listing { dataset, problems: listing_problems, warnings } = listing;
    let mut problems: Vec<Problem> = listing_problems
        .into_iter()
        .map(|p| Problem { severity: Severity::Error, case: p.case, path: Some(p.path), message: p.problem })
        .chain(warnings.into_iter().map(|p| Problem {
            severity: Severity::Warning,
            case: p.case,
            path: Some(p.path),
            message: p.problem,
        }))
        .collect();
    let labels = match options.labels.clone().or_else(|| dataset.labels.clone()) {
        Some(l) => Some(l),
        // A folder dataset declares none: the values found are its classes (reading every label map once
        // more; such datasets are small, and the check must show what training will take as classes).
        None => match found_label_space(&dataset) {
            Ok(l) => Some(l),
            Err(e) => {
                problems.push(Problem { severity: Severity::Error, case: None, path: None, message: e.to_string() });
                None
            }
        },
    };
    if let Some(l) = &labels {
        class_count_problem(l, options.expected_classes, &mut problems);
    }
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, dataset.cases.len().max(1));
    let outcomes = check_cases(&dataset.cases, labels.as_ref(), threads);

    let mut cases = Vec::with_capacity(outcomes.len());
    let mut foreground: Vec<ForegroundSample> = Vec::new();
    for outcome in outcomes {
        for (c, s) in outcome.intensity.into_iter().enumerate() {
            if foreground.len() <= c {
                foreground.resize(c + 1, ForegroundSample::default());
            }
            let f = &mut foreground[c];
            f.sum += s.sum;
            f.sum_sq += s.sum_sq;
            f.count += s.count;
            f.sampled.extend(s.sampled);
        }
        problems.extend(outcome.problems);
        cases.push(outcome.report);
    }
    across_cases(&dataset, &cases, labels.as_ref(), options.orientation, &mut problems);

    let cases_with_errors = {
        let mut ids: Vec<&str> =
            problems.iter().filter(|p| p.severity == Severity::Error).filter_map(|p| p.case.as_deref()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let summary = Summary {
        cases: cases.len(),
        cases_with_errors,
        channel_names: dataset.channel_names.clone(),
        classes: class_shares(&cases, labels.as_ref()),
        median_shape: median(cases.iter().filter_map(|c| c.shape)),
        median_spacing: median(cases.iter().filter_map(|c| c.spacing)),
        orientations: orientation_counts(&cases),
        intensity: foreground
            .into_iter()
            .enumerate()
            .map(|(c, f)| channel_intensity(c, dataset.channel_names.get(c), f))
            .collect(),
        modality: options.modality,
        seconds: started.elapsed().as_secs_f64(),
        threads,
    };
    CheckReport { root: dataset.root.clone(), labels, problems, cases, summary }
}

/// Checks every case on `threads` threads; outcomes in case order.
fn check_cases(cases: &[CaseFiles], labels: Option<&LabelSpace>, threads: usize) -> Vec<CaseOutcome> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, CaseOutcome)>> = Mutex::new(Vec::with_capacity(cases.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let outcome = check_one_case(case, labels);
                    done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, outcome));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, o)| o).collect()
}

/// Headers, then the label map, then each image file once.
fn check_one_case(case: &CaseFiles, labels: Option<&LabelSpace>) -> CaseOutcome {
    let mut problems = Vec::new();
    let mut report = CaseReport {
        id: case.id.clone(),
        channels: 0,
        shape: None,
        spacing: None,
        orientation: None,
        label_voxels: Vec::new(),
        non_finite_voxels: 0,
    };
    let mut problem = |severity, path: &Path, message: String| {
        problems.push(Problem { severity, case: Some(case.id.clone()), path: Some(path.to_path_buf()), message });
    };
    let label_header = match nifti::read_header(&case.label) {
        Ok(h) => Some(h),
        Err(e) => {
            problem(Severity::Error, &case.label, e.to_string());
            None
        }
    };
    let grid: Option<([usize; 3], Affine)> = label_header.as_ref().map(|h| (h.shape, h.affine()));
    if let Some((shape, affine)) = grid {
        report.shape = Some(shape);
        report.spacing = Some(spacing_of(&affine));
        report.orientation = Some(AxisCodes::of(&affine));
    }
    let label_map = match (label_header.is_some(), nifti::read_labels(&case.label)) {
        (false, _) => None,
        (true, Ok(l)) => Some(l),
        (true, Err(e)) => {
            problem(Severity::Error, &case.label, e.to_string());
            None
        }
    };
    if let Some(l) = &label_map {
        let mut counts = vec![0u64; usize::from(u16::MAX) + 1];
        for &v in &l.data {
            counts[usize::from(v)] += 1;
        }
        report.label_voxels = counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(v, n)| (v as u16, *n)).collect();
        if let Some(space) = labels {
            let undeclared: Vec<String> = report
                .label_voxels
                .iter()
                .filter(|(v, _)| !space.classes.iter().any(|c| c.value == *v))
                .map(|(v, n)| format!("value {v} in {n} voxels"))
                .collect();
            if !undeclared.is_empty() {
                let declared: Vec<String> = space.classes.iter().map(|c| c.value.to_string()).collect();
                let message =
                    format!("{} not among the declared labels ({})", undeclared.join(", "), declared.join(", "));
                problem(Severity::Error, &case.label, message);
            }
        }
    }
    let background = labels.and_then(|l| l.value_of(0)).unwrap_or(0);
    let mut intensity = Vec::new();
    for path in case.images.paths() {
        let header = match nifti::read_header(path) {
            Ok(h) => h,
            Err(e) => {
                problem(Severity::Error, path, e.to_string());
                continue;
            }
        };
        if let Some((shape, affine)) = grid {
            if header.shape != shape {
                let message = format!("shape {:?} vs label {:?} ({})", header.shape, shape, case.label.display());
                problem(Severity::Error, path, message);
            } else {
                let d = affine_distance(&header.affine(), &affine);
                if d > AFFINE_TOLERANCE_MM {
                    let message = format!(
                        "affine differs from the label's by up to {d:.4} mm (tolerance {AFFINE_TOLERANCE_MM} mm; {})",
                        case.label.display()
                    );
                    problem(Severity::Error, path, message);
                }
            }
        }
        let volume = match nifti::read_volume(path) {
            Ok(v) => v,
            Err(e) => {
                problem(Severity::Error, path, e.to_string());
                continue;
            }
        };
        report.channels += volume.channels;
        let mask = label_map.as_ref().filter(|l| l.shape == volume.shape);
        let n = volume.voxels();
        let mut non_finite = 0u64;
        for c in 0..volume.channels {
            let values = &volume.data[c * n..(c + 1) * n];
            non_finite += values.iter().filter(|v| !v.is_finite()).count() as u64;
            intensity.push(foreground_sample(values, mask.map(|l| (&l.data[..], background))));
        }
        if non_finite > 0 {
            problem(Severity::Error, path, format!("{non_finite} of {} voxels are NaN or infinite", volume.data.len()));
        }
        report.non_finite_voxels += non_finite;
    }
    if let ImageFiles::PerChannel(files) = &case.images
        && report.channels > files.len()
    {
        let message = format!("{} channel files hold {} channels: each should hold one", files.len(), report.channels);
        problem(Severity::Error, files[0].as_path(), message);
    }
    CaseOutcome { report, problems, intensity }
}

/// Exact foreground sums and up to [`PERCENTILE_SAMPLES_PER_CASE`] evenly strided foreground values.
fn foreground_sample(values: &[f32], mask: Option<(&[u16], u16)>) -> ForegroundSample {
    let is_foreground = |i: usize| mask.is_some_and(|(m, background)| m[i] != background);
    let mut s = ForegroundSample::default();
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() && is_foreground(i) {
            let v = f64::from(v);
            s.sum += v;
            s.sum_sq += v * v;
            s.count += 1;
        }
    }
    let stride = (s.count as usize).div_ceil(PERCENTILE_SAMPLES_PER_CASE).max(1);
    let mut k = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() && is_foreground(i) {
            if k.is_multiple_of(stride) {
                s.sampled.push(f64::from(v));
            }
            k += 1;
        }
    }
    s
}

fn channel_intensity(channel: usize, name: Option<&String>, mut f: ForegroundSample) -> ChannelIntensity {
    f.sampled.sort_by(f64::total_cmp);
    let n = f.count.max(1) as f64;
    let mean = f.sum / n;
    ChannelIntensity {
        channel,
        name: name.cloned().unwrap_or_else(|| channel.to_string()),
        mean,
        std: (f.sum_sq / n - mean * mean).max(0.0).sqrt(),
        percentiles: PERCENTILES.iter().map(|&q| (q, percentile(&f.sampled, q))).collect(),
    }
}

/// Problems no single case shows: channel counts, orientations, spacing outliers, absent classes.
fn across_cases(
    dataset: &Dataset,
    cases: &[CaseReport],
    labels: Option<&LabelSpace>,
    policy: OrientationPolicy,
    problems: &mut Vec<Problem>,
) {
    let case_problem = |severity, case: &CaseReport, message: String| Problem {
        severity,
        case: Some(case.id.clone()),
        path: dataset.cases.iter().find(|c| c.id == case.id).map(|c| c.label.clone()),
        message,
    };
    let read: Vec<&CaseReport> = cases.iter().filter(|c| c.channels > 0).collect();
    if let Some(expected) = most_common(read.iter().map(|c| c.channels)) {
        for c in read.iter().filter(|c| c.channels != expected) {
            let message = format!("{} channels, most cases have {expected}", c.channels);
            problems.push(case_problem(Severity::Error, c, message));
        }
    }
    let orientations = orientation_counts(cases);
    if orientations.len() > 1 {
        let listed: Vec<String> = orientations.iter().map(|(o, n)| format!("{o} in {n} case(s)")).collect();
        let (severity, consequence) = match policy {
            OrientationPolicy::AsStored => (
                Severity::Error,
                "training refuses this; set [data] orientation = \"ras\" to reorient every case at load, or \
                 reorient the files",
            ),
            OrientationPolicy::Ras => (Severity::Warning, "[data] orientation = \"ras\" reorients them at load"),
        };
        problems.push(Problem {
            severity,
            case: None,
            path: Some(dataset.root.clone()),
            message: format!("the cases' axes point different ways ({}); {consequence}", listed.join(", ")),
        });
        let common = orientations[0].0;
        for c in cases.iter().filter(|c| c.orientation.is_some_and(|o| o != common)) {
            let message =
                format!("oriented {}, most cases {common}", c.orientation.map(|o| o.to_string()).unwrap_or_default());
            problems.push(case_problem(Severity::Warning, c, message));
        }
    }
    if let Some(median_spacing) = median(cases.iter().filter_map(|c| c.spacing)) {
        for c in cases {
            let Some(spacing) = c.spacing else { continue };
            for (axis, name) in ["x", "y", "z"].iter().enumerate() {
                let ratio = spacing[axis] / median_spacing[axis];
                if !(1.0 / SPACING_OUTLIER_FACTOR..=SPACING_OUTLIER_FACTOR).contains(&ratio) {
                    let message = format!(
                        "spacing {:?} mm is {ratio:.2}× the median {:?} mm along {name}",
                        spacing, median_spacing
                    );
                    problems.push(case_problem(Severity::Warning, c, message));
                    break;
                }
            }
        }
    }
    if let Some(space) = labels
        && !cases.is_empty()
    {
        for class in space.classes.iter().skip(1) {
            if !cases.iter().any(|c| c.label_voxels.iter().any(|(v, _)| *v == class.value)) {
                problems.push(Problem {
                    severity: Severity::Warning,
                    case: None,
                    path: Some(dataset.root.clone()),
                    message: format!("class {} ({}) appears in no label map", class.name, class.value),
                });
            }
        }
    }
}

fn class_shares(cases: &[CaseReport], labels: Option<&LabelSpace>) -> Vec<ClassShare> {
    let mut voxels: std::collections::BTreeMap<u16, (u64, usize)> = std::collections::BTreeMap::new();
    for c in cases {
        for &(v, n) in &c.label_voxels {
            let e = voxels.entry(v).or_default();
            e.0 += n;
            e.1 += 1;
        }
    }
    if let Some(space) = labels {
        for class in &space.classes {
            voxels.entry(class.value).or_default();
        }
    }
    let total: u64 = voxels.values().map(|(n, _)| n).sum();
    voxels
        .into_iter()
        .map(|(value, (n, in_cases))| ClassShare {
            value,
            name: labels
                .and_then(|l| l.classes.iter().find(|c| c.value == value))
                .map_or_else(|| format!("undeclared {value}"), |c| c.name.clone()),
            voxels: n,
            share: n as f64 / total.max(1) as f64,
            cases: in_cases,
        })
        .collect()
}

fn orientation_counts(cases: &[CaseReport]) -> Vec<(AxisCodes, usize)> {
    let mut counts: Vec<(AxisCodes, usize)> = Vec::new();
    for o in cases.iter().filter_map(|c| c.orientation) {
        match counts.iter_mut().find(|(c, _)| *c == o) {
            Some(entry) => entry.1 += 1,
            None => counts.push((o, 1)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts
}

fn most_common(values: impl Iterator<Item = usize>) -> Option<usize> {
    let mut counts: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(v, _)| v)
}

/// Per-axis median (the lower middle for an even count, a value some case has).
fn median<T: Copy + PartialOrd>(items: impl Iterator<Item = [T; 3]>) -> Option<[T; 3]> {
    let items: Vec<[T; 3]> = items.collect();
    let first = *items.first()?;
    let mut out = first;
    for (axis, slot) in out.iter_mut().enumerate() {
        let mut v: Vec<T> = items.iter().map(|s| s[axis]).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        *slot = v[(v.len() - 1) / 2];
    }
    Some(out)
}

/// The report for a person: problems first (errors, then warnings), then the summary.
pub fn render_text(r: &CheckReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &r.summary;
    let _ = writeln!(out, "voxplan dataset check: {}", r.root.display());
    let _ = writeln!(
        out,
        "  {} cases, {} channel(s): {}",
        s.cases,
        s.channel_names.len(),
        if s.channel_names.is_empty() { "-".to_string() } else { s.channel_names.join(", ") }
    );
    if let Some(l) = &r.labels {
        let _ = writeln!(out, "  labels: {l}");
    }
    let _ = writeln!(out);
    if r.problems.is_empty() {
        let _ = writeln!(out, "no problems found");
    } else {
        let _ = writeln!(out, "problems: {} error(s), {} warning(s)", r.errors(), r.warnings());
        let mut sorted: Vec<&Problem> = r.problems.iter().collect();
        sorted.sort_by_key(|p| p.severity != Severity::Error);
        for p in sorted {
            let severity = match p.severity {
                Severity::Error => "error  ",
                Severity::Warning => "warning",
            };
            let case = p.case.as_deref().unwrap_or("-");
            let path = p.path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
            let _ = writeln!(out, "  {severity} {case:<16} {path}{}", p.message);
        }
    }
    let _ = writeln!(out, "\nsummary");
    let _ = writeln!(out, "  cases            {} ({} with errors)", s.cases, s.cases_with_errors);
    if let (Some(shape), Some(spacing)) = (s.median_shape, s.median_spacing) {
        let _ = writeln!(out, "  median shape     {shape:?} voxels, median spacing {spacing:?} mm");
    }
    if !s.orientations.is_empty() {
        let o: Vec<String> = s.orientations.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(out, "  orientations     {}", o.join(", "));
    }
    if !s.classes.is_empty() {
        let _ = writeln!(out, "  classes          (value, name, share of labelled voxels, cases holding it)");
        for c in &s.classes {
            let _ = writeln!(out, "    {:>5} {:<20} {:>8.3} %  {} case(s)", c.value, c.name, 100.0 * c.share, c.cases);
        }
    }
    if !s.intensity.is_empty() {
        let what = match s.modality {
            Modality::Ct => "foreground intensity (CT: training clips to p0.5..p99.5)",
            Modality::Mri => "foreground intensity",
        };
        let _ = writeln!(out, "  {what}");
        for c in &s.intensity {
            let p: Vec<String> = c.percentiles.iter().map(|(q, v)| format!("p{q} {v:.1}")).collect();
            let _ = writeln!(out, "    {:<16} mean {:.1}, std {:.1}, {}", c.name, c.mean, c.std, p.join(", "));
        }
    }
    let _ = writeln!(out, "  time             {:.2} s on {} thread(s)", s.seconds, s.threads);
    let verdict = if r.is_clean() {
        "clean: training can read every case".to_string()
    } else {
        format!("{} error(s): training would stop on them or learn from wrong data", r.errors())
    };
    let _ = writeln!(out, "result: {verdict}");
    out
}

/// The report as one JSON object (`--format json`).
pub fn render_json(r: &CheckReport) -> Result<String> {
    serde_json::to_string_pretty(r)
        .map_err(|e| crate::error::VolumeError::Config { field: "--format json".into(), problem: e.to_string() })
}
