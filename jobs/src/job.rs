//! What a job is: its command, its state, and the memory it can run in on each kind of card.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub type JobId = i64;

/// What the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Train,
    Predict,
}

impl JobKind {
    /// The `voxplan` subcommand.
    pub fn subcommand(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Predict => "predict",
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a card (new, interrupted, or re-queued after an out-of-memory).
    Queued,
    /// A `voxplan` process runs it.
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Done, failed or cancelled: nothing more happens to it unless retried.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// The memory a job can run in on one kind of card, as raw budgets (the planner keeps its safety margin
/// inside them): the least that keeps its configured patch, and what its preferred plan needs. Any budget
/// between trains the same effective batch (fewer samples per pass, more accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRange {
    pub min_bytes: u64,
    pub full_bytes: u64,
}

/// The `voxplan` arguments of a job, after its subcommand. The runner adds `--device` and `--budget` for
/// the card it places the job on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    pub args: Vec<String>,
}

/// A job as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub name: String,
    pub kind: JobKind,
    /// Higher first; ties in submission order.
    pub priority: i64,
    /// Cards the job needs at once.
    pub gpus: usize,
    /// The submitter's working directory: relative paths in its files resolve from here.
    pub cwd: PathBuf,
    pub user: String,
    /// Per card kind (the device profile's name), planned at submit time.
    pub budgets: BTreeMap<String, BudgetRange>,
    /// Where the run's checkpoints go; `None`: the job's own folder in the queue.
    pub run_dir: Option<PathBuf>,
}

/// A job as the queue holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub kind: JobKind,
    pub spec: JobSpec,
    pub cwd: PathBuf,
    pub user: String,
    pub priority: i64,
    pub gpus: usize,
    pub budgets: BTreeMap<String, BudgetRange>,
    pub state: JobState,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Card indices it runs (or last ran) on.
    pub cards: Vec<usize>,
    /// The budget its process was given.
    pub budget_bytes: Option<u64>,
    /// After an out-of-memory: the most it may be given when it runs again.
    pub budget_cap: Option<u64>,
    pub pid: Option<u32>,
    /// Boot id and start time of that process, so a reused pid is never taken for the job.
    pub process: Option<String>,
    /// How many times a process was started for it.
    pub runs: i64,
    pub oom_retries: i64,
    pub exit_code: Option<i32>,
    /// Why it waits, failed or was re-queued.
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub run_dir: PathBuf,
    /// Its folder in the queue: the experiment snapshot and `job.log`.
    pub dir: PathBuf,
}

impl Job {
    /// Everything its processes wrote, stdout and stderr interleaved, every run appended (as Slurm's
    /// `--output`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("job.log")
    }
}

/// A budget range that marks "does not fit this kind of card even alone" (planned once, not again).
pub const DOES_NOT_FIT: BudgetRange = BudgetRange { min_bytes: u64::MAX, full_bytes: u64::MAX };
