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
    /// Keeps what a checkpoint at `optimizer_steps` steps and `epochs_done` finished epochs includes: every
    /// event, step records up to that step, validation records of finished epochs. A resumed run trains the
    /// rest again, so without this a run killed between two checkpoints would log those steps twice. A line
    /// that does not parse (one cut short by a kill) goes too. Rewritten through a temporary file and a
    /// rename; returns how many lines were dropped.
    pub fn keep_until(run_dir: &Path, optimizer_steps: usize, epochs_done: usize) -> Result<usize, PipelineError> {
        let path = run_dir.join(METRICS_FILE);
        let io = |source| PipelineError::Io { path: path.clone(), source };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let keep = |line: &str| {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { return false };
            let number = |key: &str| record[key].as_u64().map(|n| n as usize);
            match record["kind"].as_str() {
                Some("step") => number("step").is_some_and(|s| s <= optimizer_steps),
                Some("validation") => number("epoch").is_some_and(|e| e < epochs_done),
                _ => true,
            }
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let kept: Vec<&str> = lines.iter().copied().filter(|l| keep(l)).collect();
        let dropped = lines.len() - kept.len();
        if dropped > 0 {
            let tmp = path.with_extension("jsonl.tmp");
            let mut body = kept.join("\n");
            body.push('\n');
            std::fs::write(&tmp, body).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        Ok(dropped)
    }

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

    #[test]
    fn resuming_keeps_what_the_checkpoint_holds_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"kind":"step","epoch":0,"step":1}"#,
            r#"{"kind":"step","epoch":0,"step":2}"#,
            r#"{"kind":"validation","epoch":0,"step":2}"#,
            r#"{"kind":"step","epoch":1,"step":3}"#,
            r#"{"kind":"event","epoch":1,"step":3,"event":"memory_above_plan"}"#,
            r#"{"kind":"step","epoch":1,"step":4}"#,
            r#"{"kind":"validation","epoch":1,"step":4}"#,
            r#"{"kind":"step","epo"#,
        ];
        std::fs::write(dir.path().join(METRICS_FILE), lines.join("\n")).unwrap();
        // A checkpoint inside epoch 1 after step 3: step 4, epoch 1's validation and the torn line go.
        assert_eq!(MetricsLog::keep_until(dir.path(), 3, 1).unwrap(), 3);
        let kept = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(kept.lines().collect::<Vec<_>>(), lines[..5].to_vec());
        assert_eq!(MetricsLog::keep_until(dir.path(), 3, 1).unwrap(), 0, "nothing more to drop");
        assert_eq!(MetricsLog::keep_until(&dir.path().join("none"), 3, 1).unwrap(), 0, "no file yet");
    }
}
