//! The run's metrics as JSON lines (`metrics.jsonl`): one object per optimizer step, validation and event,
//! appended and flushed as they happen so a crashed or running job can be read with `jq` or pandas.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::PipelineError;

/// File name inside the run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub kind: &'static str,
    pub epoch: usize,
    pub step: usize,
    /// Mean micro-batch loss of this step (unscaled, before division by the accumulation count).
    pub loss: f64,
    pub lr: f64,
    pub samples_per_s: f64,
    /// Seconds the step waited for the patch loader.
    pub waited_for_data_s: f64,
    pub peak_memory_measured_bytes: u64,
    pub peak_memory_planned_bytes: u64,
    /// CPU only: the patch loader's memory bound, which the heap meter's figure may hold up to (its
    /// worker threads allocate from the same heap); the warning compares measured with planned + this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loader_bound_bytes: Option<u64>,
    /// CUDA only: device memory in use by everyone per the driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_used_bytes: Option<u64>,
    /// f16 only: the step was skipped because the scaled gradients overflowed.
    pub skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
}

/// One validation pass.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationRecord {
    pub kind: &'static str,
    pub epoch: usize,
    pub step: usize,
    /// Mean over cases and foreground classes.
    pub dice: f64,
    /// Mean per foreground class, keyed by the label's declared name (dataset.json, `[data] labels`, or
    /// `label_<value>`); `null` where no case has the class.
    pub dice_per_class: std::collections::BTreeMap<String, Option<f64>>,
    pub cases: usize,
    pub seconds: f64,
}

/// Something that changed how the run goes (re-plan after OOM, resume, memory above plan).
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub kind: &'static str,
    pub epoch: usize,
    pub step: usize,
    pub event: String,
    pub detail: String,
}

/// Appends records to the metrics file.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Opens (appending: a resumed run continues the same file) `run_dir/metrics.jsonl`.
    pub fn open(run_dir: &Path) -> Result<Self, PipelineError> {
        let path = run_dir.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| PipelineError::Io { path: path.clone(), source })?;
        Ok(Self { path, out: BufWriter::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record as a line and flushes it.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), PipelineError> {
        let io = |source| PipelineError::Io { path: self.path.clone(), source };
        serde_json::to_writer(&mut self.out, record).map_err(|e| io(std::io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(io)?;
        self.out.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_append_as_parseable_lines_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |step| EventRecord { kind: "event", epoch: 0, step, event: "resume".into(), detail: "x".into() };
        MetricsLog::open(dir.path()).unwrap().write(&ev(1)).unwrap();
        MetricsLog::open(dir.path()).unwrap().write(&ev(2)).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2]);
    }
}
