//! `voxplan queue run`: the loop that starts queued jobs on the cards placement picks, watches them, reads
//! their exit codes, re-queues the interrupted and the out-of-memory ones, and recovers after its own death.
//!
//! - **One runner per queue**: it holds an exclusive `flock` on `runner.lock` for its lifetime; the kernel
//!   drops the lock when the process dies, however it dies, so a restarted runner can always take over.
//! - **Never one job twice**: a job's process is recorded with its pid, boot id and start time. A restarted
//!   runner leaves a job whose recorded process still lives alone until it ends, and only then re-queues it.
//!   Children get SIGTERM when their runner dies (`PR_SET_PDEATHSIG`), so they checkpoint and end; after a
//!   reboot the boot id tells that none of the recorded processes can be alive.
//! - **Exit codes** (README): 0 done; 75 interrupted, re-queued to resume (or cancelled, when asked); 3 out
//!   of memory: re-queued once with at most [`OOM_BUDGET_FACTOR`] of its budget, then failed; anything else
//!   failed, with the last `error:` line of its log as the reason.
//! - **Resuming is the job's own**: a job is always started with the same command line (`voxplan train
//!   --run-dir D ...`), which continues D's checkpoint, or finds the run finished and exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use voxplan_planner::DeviceProfile;

use crate::error::{JobsError, Result};
use crate::inventory::{Card, Inventory};
use crate::job::{BudgetRange, DOES_NOT_FIT, Job, JobId, JobSpec, JobState};
use crate::placement::{Candidate, CardState, Decision, place};
use crate::process;
use crate::store::{Outcome, Queue};

/// After an out-of-memory the job runs again with at most this fraction of the budget that failed: enough
/// for the planner to drop a batch step (the trainer's own re-plan uses the same factor).
pub const OOM_BUDGET_FACTOR: f64 = 0.7;
/// The exit codes the runner acts on (the binary's table, README).
const EXIT_DONE: i32 = 0;
const EXIT_BAD_INPUT: i32 = 2;
const EXIT_DOES_NOT_FIT: i32 = 3;
const EXIT_DIVERGED: i32 = 4;
const EXIT_INTERRUPTED: i32 = 75;
/// The lock file a runner holds.
const LOCK_FILE: &str = "runner.lock";

/// What a job costs: implemented by the binary with the planner and the pipeline (this crate knows neither
/// experiments nor burn).
pub trait JobPlanner {
    /// The budgets job `spec`, run from `cwd`, can run with on a card like `card`; `Ok(None)` when it does
    /// not fit even the whole card; `Err` when it cannot be planned at all (its experiment is broken).
    fn budgets(
        &self,
        spec: &JobSpec,
        cwd: &Path,
        card: &DeviceProfile,
    ) -> std::result::Result<Option<BudgetRange>, String>;
}

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The `voxplan` binary the jobs run.
    pub exe: PathBuf,
    /// Serve only these card indices (`--gpus 0,1`).
    pub only_cards: Option<Vec<usize>>,
    /// Stop once no job runs and none of the queued can start.
    pub once: bool,
    /// Seconds between rounds.
    pub poll: Duration,
}

/// One row of `queue run --dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunRow {
    pub id: JobId,
    pub name: String,
    pub priority: i64,
    pub decision: Decision,
}

/// `queue run --dry-run`: the cards and what placement would do now.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub cards: Vec<CardState>,
    pub jobs: Vec<DryRunRow>,
}

pub struct Runner<'a> {
    queue: Queue,
    inventory: Inventory,
    planner: &'a dyn JobPlanner,
    options: RunnerOptions,
    children: BTreeMap<JobId, Child>,
    /// Running jobs already sent SIGTERM for a cancel.
    signalled: BTreeSet<JobId>,
    stop: Arc<AtomicBool>,
    _lock: File,
}

impl<'a> Runner<'a> {
    /// Takes the queue in `dir` (refused while another runner holds it). `stop` is set by the binary's
    /// signal handler: the runner then stops its jobs (they checkpoint and are re-queued) and returns.
    pub fn new(
        dir: &Path,
        inventory: Inventory,
        planner: &'a dyn JobPlanner,
        options: RunnerOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<Self> {
        let queue = Queue::open(dir)?;
        let lock = lock(dir)?;
        Ok(Self {
            queue,
            inventory,
            planner,
            options,
            children: BTreeMap::new(),
            signalled: BTreeSet::new(),
            stop,
            _lock: lock,
        })
    }

    /// Serves the queue until stopped (or, with `once`, until nothing runs and nothing more can start).
    pub fn run(&mut self) -> Result<()> {
        self.recover()?;
        loop {
            self.reap()?;
            let adopted = self.watch_adopted()?;
            self.forward_cancels()?;
            if self.stop.load(Ordering::SeqCst) {
                return self.shut_down();
            }
            let started = self.schedule()?;
            if self.options.once && self.children.is_empty() && adopted == 0 && started == 0 {
                let waiting = self.queue.in_state(JobState::Queued)?.len();
                if waiting > 0 {
                    tracing::warn!("{waiting} job(s) wait for memory no card can give now; stopping (--once)");
                }
                return Ok(());
            }
            std::thread::sleep(self.options.poll);
        }
    }

    /// What a runner finds when it starts: jobs marked running whose process is gone (the runner died, the
    /// box rebooted) go back to the queue and resume from their checkpoints; live ones are left to end.
    fn recover(&mut self) -> Result<()> {
        for job in self.queue.in_state(JobState::Running)? {
            if !alive(&job) {
                let reason = "its process is gone (runner restart or reboot); resumes from its checkpoint".to_string();
                self.end(&job, None, Some(reason))?;
            } else {
                tracing::info!("job {} still runs as pid {:?}; waiting for it to end", job.id, job.pid);
            }
        }
        Ok(())
    }

    /// Jobs marked running that no child of this runner runs (their runner died while they ran); returns
    /// how many still live, and re-queues the ones that ended.
    fn watch_adopted(&mut self) -> Result<usize> {
        let mut live = 0;
        for job in self.queue.in_state(JobState::Running)? {
            if self.children.contains_key(&job.id) {
                continue;
            }
            if alive(&job) {
                live += 1;
            } else {
                // Its exit code went to its dead runner; it got SIGTERM from that death and checkpointed, or it
                // had finished: running it again resumes it or finds it finished.
                let reason = "its process ended under an earlier runner; runs again to resume or confirm".to_string();
                self.end(&job, None, Some(reason))?;
            }
        }
        Ok(live)
    }

    /// Reads the exit of every child that ended.
    fn reap(&mut self) -> Result<()> {
        let ended: Vec<(JobId, std::process::ExitStatus)> = self
            .children
            .iter_mut()
            .filter_map(|(id, child)| child.try_wait().ok().flatten().map(|status| (*id, status)))
            .collect();
        for (id, status) in ended {
            self.children.remove(&id);
            self.signalled.remove(&id);
            let job = self.queue.job(id)?;
            self.end(&job, Some(status), None)?;
        }
        Ok(())
    }

    /// Records how a job's process ended and what happens to the job next.
    fn end(&mut self, job: &Job, status: Option<std::process::ExitStatus>, reason: Option<String>) -> Result<()> {
        let tail = last_error_line(&job.log_path());
        let with_tail = |what: &str| match &tail {
            Some(t) => format!("{what}: {t}"),
            None => what.to_string(),
        };
        let code = status.and_then(|s| s.code());
        let mut outcome = Outcome {
            state: JobState::Queued,
            exit_code: code,
            reason,
            budget_cap: job.budget_cap,
            oom_retries: job.oom_retries,
        };
        let cards = job.cards.iter().map(|c| format!("cuda:{c}")).collect::<Vec<_>>().join(",");
        match (status, code) {
            // Gone without an exit code we could read (recovery): run it again unless it was cancelled.
            (None, _) if job.cancel_requested => {
                outcome.state = JobState::Cancelled;
                outcome.reason = Some("cancelled".into());
            }
            (None, _) => {}
            (Some(_), Some(EXIT_DONE)) => {
                outcome.state = JobState::Done;
                outcome.reason = None;
            }
            (Some(_), Some(EXIT_INTERRUPTED)) if job.cancel_requested => {
                outcome.state = JobState::Cancelled;
                outcome.reason = Some("cancelled; its last checkpoint is kept (queue retry resumes it)".into());
            }
            (Some(_), Some(EXIT_INTERRUPTED)) => {
                outcome.reason = Some("interrupted; resumes from its checkpoint".into());
            }
            (Some(_), Some(EXIT_DOES_NOT_FIT)) if job.oom_retries == 0 => {
                let failed = job.budget_bytes.unwrap_or(0);
                let cap = (failed as f64 * OOM_BUDGET_FACTOR) as u64;
                outcome.budget_cap = Some(cap);
                outcome.oom_retries = 1;
                outcome.reason = Some(with_tail(&format!(
                    "out of memory on {cards} with a budget of {}; re-queued once with at most {}",
                    gib(failed),
                    gib(cap)
                )));
            }
            (Some(_), Some(EXIT_DOES_NOT_FIT)) => {
                outcome.state = JobState::Failed;
                outcome.reason = Some(with_tail("out of memory again after the retry with a smaller budget"));
            }
            (Some(_), Some(EXIT_BAD_INPUT)) => {
                outcome.state = JobState::Failed;
                outcome.reason = Some(with_tail("bad input"));
            }
            (Some(_), Some(EXIT_DIVERGED)) => {
                outcome.state = JobState::Failed;
                outcome.reason = Some(with_tail("diverged"));
            }
            (Some(_), Some(other)) => {
                outcome.state = JobState::Failed;
                outcome.reason = Some(with_tail(&format!("exit code {other}")));
            }
            (Some(s), None) => {
                use std::os::unix::process::ExitStatusExt;
                let signal = s.signal().unwrap_or(0);
                outcome.state = if job.cancel_requested { JobState::Cancelled } else { JobState::Failed };
                outcome.reason = Some(format!("killed by signal {signal}"));
            }
        }
        tracing::info!(
            "job {} ({}) {}{}",
            job.id,
            job.name,
            outcome.state.as_str(),
            outcome.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        self.queue.mark_ended(job.id, &outcome)
    }

    /// Sends SIGTERM to running jobs whose cancel was asked for (once each).
    fn forward_cancels(&mut self) -> Result<()> {
        for job in self.queue.in_state(JobState::Running)? {
            if job.cancel_requested && !self.signalled.contains(&job.id) {
                if let Some(pid) = job.pid.filter(|_| alive(&job)) {
                    tracing::info!("job {} cancelled: stopping pid {pid} (it checkpoints first)", job.id);
                    process::terminate(pid);
                }
                self.signalled.insert(job.id);
            }
        }
        Ok(())
    }

    /// Stops every child (each checkpoints and exits 75, so it is re-queued) and waits for them.
    fn shut_down(&mut self) -> Result<()> {
        tracing::info!("stopping: {} job(s) checkpoint and go back to the queue", self.children.len());
        for child in self.children.values() {
            process::terminate(child.id());
        }
        while !self.children.is_empty() {
            self.reap()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// One placement round; returns how many jobs started.
    fn schedule(&mut self) -> Result<usize> {
        let cards = self.inventory.cards(self.options.only_cards.as_deref())?;
        let queued = self.queue.in_state(JobState::Queued)?;
        if queued.is_empty() {
            return Ok(0);
        }
        let queued = self.plan_missing_kinds(queued, &cards)?;
        let states = card_states(&cards, &self.queue.in_state(JobState::Running)?);
        let candidates: Vec<Candidate> = queued.iter().map(candidate).collect();
        let mut started = 0;
        for decision in place(&states, &candidates) {
            let Some(job) = queued.iter().find(|j| j.id == decision.id()) else { continue };
            match decision {
                Decision::Start { cards: on, budget_bytes, .. } => {
                    self.start(job, &on, budget_bytes)?;
                    started += 1;
                }
                Decision::Wait { reason, .. } => {
                    if job.reason.as_deref() != Some(reason.as_str()) {
                        self.queue.set_reason(job.id, &reason)?;
                    }
                }
            }
        }
        Ok(started)
    }

    /// Plans queued jobs for kinds of card they were not planned for at submit time (another box, a changed
    /// `--gpus`); a job whose experiment can no longer be planned fails with the planner's reason.
    fn plan_missing_kinds(&mut self, queued: Vec<Job>, cards: &[Card]) -> Result<Vec<Job>> {
        let mut out = Vec::with_capacity(queued.len());
        for mut job in queued {
            let mut changed = false;
            for card in cards {
                if job.budgets.contains_key(&card.kind) {
                    continue;
                }
                match self.planner.budgets(&job.spec, &job.cwd, &card.profile) {
                    Ok(range) => {
                        job.budgets.insert(card.kind.clone(), range.unwrap_or(DOES_NOT_FIT));
                        changed = true;
                    }
                    Err(problem) => {
                        let outcome = Outcome {
                            state: JobState::Failed,
                            exit_code: None,
                            reason: Some(format!("cannot be planned: {problem}")),
                            budget_cap: job.budget_cap,
                            oom_retries: job.oom_retries,
                        };
                        self.queue.mark_ended(job.id, &outcome)?;
                        changed = false;
                        job.state = JobState::Failed;
                        break;
                    }
                }
            }
            if changed {
                self.queue.set_budgets(job.id, &job.budgets)?;
            }
            if job.state == JobState::Queued {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Starts `job` on `cards` with `budget`.
    fn start(&mut self, job: &Job, cards: &[usize], budget: u64) -> Result<()> {
        let log_path = job.log_path();
        let mut log =
            OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| JobsError::io(&log_path, e))?;
        let on = cards.iter().map(|c| format!("cuda:{c}")).collect::<Vec<_>>().join(",");
        let simulated = self.inventory.is_simulated();
        let _ = writeln!(
            log,
            "=== voxplan queue: job {} run {} on {on}{} with a budget of {} at {} ===",
            job.id,
            job.runs + 1,
            if simulated { " (simulated: the job runs on the CPU)" } else { "" },
            gib(budget),
            crate::store::now()
        );
        let mut command = child_command(&self.options.exe, job, cards, budget, simulated);
        command.current_dir(&job.cwd).stdin(Stdio::null());
        command.stdout(log.try_clone().map_err(|e| JobsError::io(&log_path, e))?).stderr(log);
        let child = process::spawn_tied_to_runner(&mut command).map_err(|e| JobsError::io(&self.options.exe, e))?;
        let identity = process::identity(child.id()).unwrap_or_default();
        if self.queue.mark_started(job.id, cards, budget, child.id(), &identity)? {
            tracing::info!(
                "job {} ({}) started on {on} with a budget of {} as pid {}",
                job.id,
                job.name,
                gib(budget),
                child.id()
            );
        } else {
            // Cancelled between the round's read and now.
            process::terminate(child.id());
        }
        self.children.insert(job.id, child);
        Ok(())
    }
}

/// The command of one run of `job`: its subcommand and arguments, the budget, and the device. On real cards
/// the job sees only its own (`CUDA_VISIBLE_DEVICES`, in NVML's PCI order) and calls them `cuda:0`, ….
pub fn child_command(exe: &Path, job: &Job, cards: &[usize], budget: u64, simulated: bool) -> Command {
    let mut command = Command::new(exe);
    command.arg(job.kind.subcommand()).args(&job.spec.args).args(["--budget", &budget.to_string()]);
    if simulated {
        // The same data-parallel path the cards would take, on CPU peers.
        match cards.len() {
            0 | 1 => command.args(["--device", "cpu"]),
            n => command.args(["--devices", &format!("cpu:{n}")]),
        };
    } else {
        let visible = cards.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        command.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID").env("CUDA_VISIBLE_DEVICES", visible);
        if cards.len() > 1 {
            let devices = (0..cards.len()).map(|i| format!("cuda:{i}")).collect::<Vec<_>>().join(",");
            command.args(["--devices", &devices]);
        } else {
            command.args(["--device", "cuda:0"]);
        }
    }
    command
}

/// The placement view of `cards`, with the budgets of the queue's running jobs on each.
fn card_states(cards: &[Card], running: &[Job]) -> Vec<CardState> {
    cards
        .iter()
        .map(|c| CardState {
            index: c.index,
            kind: c.kind.clone(),
            total_bytes: c.total_bytes,
            free_bytes: c.free_bytes,
            committed_bytes: running
                .iter()
                .filter(|j| j.cards.contains(&c.index))
                .map(|j| j.budget_bytes.unwrap_or(0))
                .sum(),
        })
        .collect()
}

fn candidate(job: &Job) -> Candidate {
    Candidate { id: job.id, gpus: job.gpus, budgets: job.budgets.clone(), budget_cap: job.budget_cap }
}

/// What placement would do now, without starting anything (no lock: a runner may be serving the queue).
pub fn dry_run(queue: &Queue, inventory: &Inventory, only_cards: Option<&[usize]>) -> Result<DryRun> {
    let cards = inventory.cards(only_cards)?;
    let states = card_states(&cards, &queue.in_state(JobState::Running)?);
    let queued = queue.in_state(JobState::Queued)?;
    let decisions = place(&states, &queued.iter().map(candidate).collect::<Vec<_>>());
    let jobs = queued
        .iter()
        .zip(decisions)
        .map(|(j, decision)| DryRunRow { id: j.id, name: j.name.clone(), priority: j.priority, decision })
        .collect();
    Ok(DryRun { cards: states, jobs })
}

impl DryRun {
    pub fn render_text(&self) -> String {
        let mut out = String::from("cards\n");
        for c in &self.cards {
            out.push_str(&format!(
                "  cuda:{:<3} {:<28} total {:>9}  free {:>9}  queue's jobs {:>9}\n",
                c.index,
                c.kind,
                gib(c.total_bytes),
                gib(c.free_bytes),
                gib(c.committed_bytes)
            ));
        }
        out.push_str("queued jobs, in the order they are served\n");
        if self.jobs.is_empty() {
            out.push_str("  (none)\n");
        }
        for row in &self.jobs {
            let what = match &row.decision {
                Decision::Start { cards, budget_bytes, .. } => format!(
                    "would start on {} with a budget of {}",
                    cards.iter().map(|c| format!("cuda:{c}")).collect::<Vec<_>>().join(","),
                    gib(*budget_bytes)
                ),
                Decision::Wait { reason, .. } => format!("waits: {reason}"),
            };
            out.push_str(&format!("  {:>5} {:<24} priority {:>3}  {what}\n", row.id, row.name, row.priority));
        }
        out
    }
}

/// `list`: one line per job.
pub fn render_jobs(jobs: &[Job]) -> String {
    let mut out = format!(
        "{:>5}  {:<24} {:<7} {:<9} {:>4}  {:<12} {:>9}  {:>4}  {}\n",
        "id", "name", "kind", "state", "prio", "cards", "budget", "runs", "reason / exit"
    );
    for j in jobs {
        let cards = j.cards.iter().map(|c| format!("cuda:{c}")).collect::<Vec<_>>().join(",");
        let why = match (&j.reason, j.exit_code) {
            (Some(r), _) => r.clone(),
            (None, Some(c)) => format!("exit {c}"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "{:>5}  {:<24} {:<7} {:<9} {:>4}  {:<12} {:>9}  {:>4}  {}\n",
            j.id,
            truncate(&j.name, 24),
            j.kind.subcommand(),
            j.state.as_str(),
            j.priority,
            if cards.is_empty() { "-".into() } else { cards },
            j.budget_bytes.map(gib).unwrap_or_else(|| "-".into()),
            j.runs,
            why
        ));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn alive(job: &Job) -> bool {
    match (job.pid, job.process.as_deref()) {
        (Some(pid), Some(identity)) if !identity.is_empty() => process::is_alive(pid, identity),
        _ => false,
    }
}

/// The last line of a job's log that starts with `error:` (the binary's one-line failure report).
fn last_error_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let last_run = text.rsplit("=== voxplan queue:").next().unwrap_or(&text);
    last_run.lines().rev().find(|l| l.starts_with("error:")).map(|l| l.trim_start_matches("error:").trim().to_string())
}

/// Takes the runner lock of `dir`, or says which runner holds it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| JobsError::io(&path, e))?;
    // flock(2), released by the kernel however the runner ends.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(JobsError::Busy {
                path: dir.to_path_buf(),
                problem: format!("another runner serves this queue ({})", holder.trim()),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(JobsError::io(&path, e)),
    }
    file.set_len(0).map_err(|e| JobsError::io(&path, e))?;
    let _ = write!(file, "pid {} since {}", std::process::id(), crate::store::now());
    Ok(file)
}
