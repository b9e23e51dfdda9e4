//! The queue's state: one SQLite database in the queue folder (WAL mode), beside a folder per job.
//!
//! Every process opens its own connection; writes are `BEGIN IMMEDIATE` transactions and a writer that
//! finds the database locked waits (busy timeout) instead of failing, so any number of users submitting
//! while the runner updates jobs lose nothing and never see a half-made job: a job's row and its folder
//! are committed together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::error::{JobsError, Result};
use crate::job::{BudgetRange, Job, JobId, JobKind, JobSpec, JobState, NewJob};

/// The database file inside the queue folder.
pub const DATABASE_FILE: &str = "queue.sqlite";
/// Folder of the jobs' own folders.
pub const JOBS_FOLDER: &str = "jobs";
/// Environment variable naming the queue folder when `--queue` is not given.
pub const QUEUE_ENV: &str = "VOXPLAN_QUEUE";
/// How long a writer waits for another's transaction: submits are milliseconds, so minutes of contention
/// would mean something is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    cwd TEXT NOT NULL,
    user TEXT NOT NULL,
    priority INTEGER NOT NULL,
    gpus INTEGER NOT NULL,
    budgets TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    cards TEXT NOT NULL DEFAULT '',
    budget_bytes INTEGER,
    budget_cap INTEGER,
    pid INTEGER,
    process TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    oom_retries INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    reason TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    run_dir TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, priority DESC, id);
";

/// A queue folder and a connection to its database.
pub struct Queue {
    dir: PathBuf,
    conn: Connection,
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// A queued job: cancelled now.
    Now,
    /// A running job: its runner stops it (SIGTERM, a checkpoint) and then marks it cancelled.
    Requested,
}

/// How a job's process ended, as the runner records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub budget_cap: Option<u64>,
    pub oom_retries: i64,
}

impl Queue {
    /// The queue folder used when none is given: `$VOXPLAN_QUEUE`, else the user's state folder
    /// (`$XDG_STATE_HOME/voxplan/queue`, `~/.local/state/voxplan/queue`). A box shared by several users
    /// points everyone at one group-writable folder, e.g. `/var/lib/voxplan/queue` (docs/jobs.md).
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os(QUEUE_ENV) {
            return PathBuf::from(dir);
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        state.join("voxplan/queue")
    }

    /// Opens (creating when missing) the queue in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join(JOBS_FOLDER)).map_err(|e| JobsError::io(dir, e))?;
        let path = dir.join(DATABASE_FILE);
        let err = |e: rusqlite::Error| JobsError::Queue { path: path.clone(), problem: e.to_string() };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // WAL: readers (list, status, logs) never block the runner's writes, nor the writes them.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { dir: dir.to_path_buf(), conn })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_error(&self, e: rusqlite::Error) -> JobsError {
        JobsError::Queue { path: self.dir.join(DATABASE_FILE), problem: e.to_string() }
    }

    /// The folder of job `id`.
    pub fn job_dir(&self, id: JobId) -> PathBuf {
        self.dir.join(JOBS_FOLDER).join(id.to_string())
    }

    /// Adds a job: its row and its folder, which `prepare` fills (an experiment snapshot, say) and whose
    /// command it returns, in one transaction. Returns the new id.
    pub fn submit(&mut self, job: &NewJob, prepare: impl FnOnce(&Path) -> Result<JobSpec>) -> Result<JobId> {
        let budgets = serde_json::to_string(&job.budgets)
            .map_err(|e| JobsError::Option { field: "budgets".into(), problem: e.to_string() })?;
        let jobs_dir = self.dir.join(JOBS_FOLDER);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| db(&self.dir, e))?;
        tx.execute(
            "INSERT INTO jobs (name, kind, spec, cwd, user, priority, gpus, budgets, state, submitted_at, run_dir)
             VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, ?7, 'queued', ?8, '')",
            params![
                job.name,
                kind_str(job.kind),
                job.cwd.to_string_lossy(),
                job.user,
                job.priority,
                job.gpus as i64,
                budgets,
                now()
            ],
        )
        .map_err(|e| db(&self.dir, e))?;
        let id = tx.last_insert_rowid();
        let dir = jobs_dir.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| JobsError::io(&dir, e))?;
        let prepared = prepare(&dir);
        let spec = match prepared {
            Ok(spec) => spec,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let run_dir = job.run_dir.clone().unwrap_or_else(|| dir.join("run"));
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| JobsError::Option { field: "spec".into(), problem: e.to_string() })?;
        tx.execute(
            "UPDATE jobs SET spec = ?1, run_dir = ?2 WHERE id = ?3",
            params![spec_json, run_dir.to_string_lossy(), id],
        )
        .map_err(|e| db(&self.dir, e))?;
        tx.commit().map_err(|e| db(&self.dir, e))?;
        Ok(id)
    }

    pub fn job(&self, id: JobId) -> Result<Job> {
        self.conn
            .query_row("SELECT * FROM jobs WHERE id = ?1", params![id], |row| read_job(row, &self.dir))
            .optional()
            .map_err(|e| self.db_error(e))?
            .ok_or_else(|| JobsError::Job { id, problem: "no such job in this queue".into() })
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        self.select("SELECT * FROM jobs ORDER BY id", params![])
    }

    /// Jobs in `state`, in the order they are served: higher priority first, then submission order.
    pub fn in_state(&self, state: JobState) -> Result<Vec<Job>> {
        self.select("SELECT * FROM jobs WHERE state = ?1 ORDER BY priority DESC, id", params![state.as_str()])
    }

    fn select(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Job>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.db_error(e))?;
        let rows = stmt.query_map(args, |row| read_job(row, &self.dir)).map_err(|e| self.db_error(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| self.db_error(e))
    }

    /// Records that a process now runs job `id` (only if it is still queued: a cancel may have come first).
    pub fn mark_started(&self, id: JobId, cards: &[usize], budget: u64, pid: u32, process: &str) -> Result<bool> {
        let cards = cards.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let changed = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'running', cards = ?2, budget_bytes = ?3, pid = ?4, process = ?5,
                 started_at = ?6, runs = runs + 1, reason = NULL, exit_code = NULL WHERE id = ?1 AND state = 'queued'",
                params![id, cards, budget as i64, pid, process, now()],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(changed == 1)
    }

    /// Records how a job's process ended.
    pub fn mark_ended(&self, id: JobId, outcome: &Outcome) -> Result<()> {
        let finished = outcome.state.is_final().then(now);
        self.conn
            .execute(
                "UPDATE jobs SET state = ?2, exit_code = ?3, reason = ?4, budget_cap = ?5, oom_retries = ?6,
                 finished_at = ?7, pid = NULL, process = NULL WHERE id = ?1",
                params![
                    id,
                    outcome.state.as_str(),
                    outcome.exit_code,
                    outcome.reason,
                    outcome.budget_cap.map(|b| b as i64),
                    outcome.oom_retries,
                    finished
                ],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Stores a waiting job's reason (shown by `list`).
    pub fn set_reason(&self, id: JobId, reason: &str) -> Result<()> {
        self.conn
            .execute("UPDATE jobs SET reason = ?2 WHERE id = ?1 AND state = 'queued'", params![id, reason])
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Adds budgets planned for card kinds the job had not been planned for.
    pub fn set_budgets(&self, id: JobId, budgets: &BTreeMap<String, BudgetRange>) -> Result<()> {
        let json = serde_json::to_string(budgets)
            .map_err(|e| JobsError::Option { field: "budgets".into(), problem: e.to_string() })?;
        self.conn
            .execute("UPDATE jobs SET budgets = ?2 WHERE id = ?1", params![id, json])
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Cancels a queued job at once, or asks the runner to stop a running one.
    pub fn cancel(&self, id: JobId) -> Result<Cancelled> {
        let job = self.job(id)?;
        match job.state {
            JobState::Queued => {
                self.conn
                    .execute(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?2, reason = 'cancelled while queued'
                         WHERE id = ?1 AND state = 'queued'",
                        params![id, now()],
                    )
                    .map_err(|e| self.db_error(e))?;
                Ok(Cancelled::Now)
            }
            JobState::Running => {
                self.conn
                    .execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", params![id])
                    .map_err(|e| self.db_error(e))?;
                Ok(Cancelled::Requested)
            }
            state => Err(JobsError::Job { id, problem: format!("is {}: nothing to cancel", state.as_str()) }),
        }
    }

    /// Puts a failed or cancelled job back in the queue; it resumes from its run directory's checkpoint.
    pub fn retry(&self, id: JobId) -> Result<()> {
        let job = self.job(id)?;
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobsError::Job {
                id,
                problem: format!("is {}; only failed or cancelled jobs are retried", job.state.as_str()),
            });
        }
        self.conn
            .execute(
                "UPDATE jobs SET state = 'queued', exit_code = NULL, reason = 'retried', finished_at = NULL,
                 cancel_requested = 0, budget_cap = NULL, oom_retries = 0 WHERE id = ?1",
                params![id],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }
}

fn db(dir: &Path, e: rusqlite::Error) -> JobsError {
    JobsError::Queue { path: dir.join(DATABASE_FILE), problem: e.to_string() }
}

fn kind_str(kind: JobKind) -> &'static str {
    kind.subcommand()
}

/// UTC time as RFC 3339 to the second (`2026-12-05T07:30:00Z`): sorts as text, reads anywhere.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn read_job(row: &Row<'_>, queue: &Path) -> rusqlite::Result<Job> {
    let bad = |what: &str, e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("{what}: {e}").into())
    };
    let id: JobId = row.get("id")?;
    let kind = match row.get::<_, String>("kind")?.as_str() {
        "train" => JobKind::Train,
        "predict" => JobKind::Predict,
        other => return Err(bad("kind", other.into())),
    };
    let spec_text: String = row.get("spec")?;
    let spec = if spec_text.is_empty() {
        JobSpec { kind, args: Vec::new() }
    } else {
        serde_json::from_str(&spec_text).map_err(|e| bad("spec", e.to_string()))?
    };
    let budgets_text: String = row.get("budgets")?;
    let budgets = serde_json::from_str(&budgets_text).map_err(|e| bad("budgets", e.to_string()))?;
    let state_text: String = row.get("state")?;
    let state = JobState::parse(&state_text).ok_or_else(|| bad("state", state_text.clone()))?;
    let cards_text: String = row.get("cards")?;
    let cards = cards_text.split(',').filter(|c| !c.is_empty()).filter_map(|c| c.parse().ok()).collect();
    Ok(Job {
        id,
        name: row.get("name")?,
        kind,
        spec,
        cwd: PathBuf::from(row.get::<_, String>("cwd")?),
        user: row.get("user")?,
        priority: row.get("priority")?,
        gpus: row.get::<_, i64>("gpus")?.max(1) as usize,
        budgets,
        state,
        submitted_at: row.get("submitted_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        cards,
        budget_bytes: row.get::<_, Option<i64>>("budget_bytes")?.map(|b| b as u64),
        budget_cap: row.get::<_, Option<i64>>("budget_cap")?.map(|b| b as u64),
        pid: row.get::<_, Option<i64>>("pid")?.map(|p| p as u32),
        process: row.get("process")?,
        runs: row.get("runs")?,
        oom_retries: row.get("oom_retries")?,
        exit_code: row.get::<_, Option<i64>>("exit_code")?.map(|c| c as i32),
        reason: row.get("reason")?,
        cancel_requested: row.get::<_, i64>("cancel_requested")? != 0,
        run_dir: PathBuf::from(row.get::<_, String>("run_dir")?),
        dir: queue.join(JOBS_FOLDER).join(id.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(name: &str, priority: i64) -> NewJob {
        NewJob {
            name: name.into(),
            kind: JobKind::Train,
            priority,
            gpus: 1,
            cwd: PathBuf::from("/"),
            user: "u".into(),
            budgets: BTreeMap::from([("T4".to_string(), BudgetRange { min_bytes: 1, full_bytes: 2 })]),
            run_dir: None,
        }
    }

    fn spec() -> JobSpec {
        JobSpec { kind: JobKind::Train, args: vec!["--config".into(), "x.toml".into()] }
    }

    #[test]
    fn jobs_round_trip_and_are_served_by_priority_then_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path()).unwrap();
        let a = q.submit(&new_job("a", 0), |_| Ok(spec())).unwrap();
        let b = q.submit(&new_job("b", 5), |_| Ok(spec())).unwrap();
        let c = q.submit(&new_job("c", 0), |_| Ok(spec())).unwrap();
        let order: Vec<JobId> = q.in_state(JobState::Queued).unwrap().iter().map(|j| j.id).collect();
        assert_eq!(order, vec![b, a, c]);
        let job = q.job(a).unwrap();
        assert_eq!((job.name.as_str(), job.spec.clone(), job.run_dir.clone()), ("a", spec(), q.job_dir(a).join("run")));
        assert_eq!(job.budgets["T4"].full_bytes, 2);
    }

    #[test]
    fn a_failed_prepare_leaves_no_job_and_no_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path()).unwrap();
        let e = q.submit(&new_job("bad", 0), |_| Err(JobsError::Option { field: "x".into(), problem: "no".into() }));
        assert!(e.is_err());
        assert!(q.jobs().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join(JOBS_FOLDER)).unwrap().count(), 0);
    }

    #[test]
    fn cancel_and_retry_follow_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path()).unwrap();
        let a = q.submit(&new_job("a", 0), |_| Ok(spec())).unwrap();
        let b = q.submit(&new_job("b", 0), |_| Ok(spec())).unwrap();
        assert_eq!(q.cancel(a).unwrap(), Cancelled::Now);
        assert_eq!(q.job(a).unwrap().state, JobState::Cancelled);
        assert!(q.cancel(a).is_err(), "nothing left to cancel");
        assert!(q.mark_started(b, &[1], 100, 4242, "boot:1").unwrap());
        assert!(!q.mark_started(b, &[1], 100, 4242, "boot:1").unwrap(), "only a queued job starts");
        assert_eq!(q.cancel(b).unwrap(), Cancelled::Requested);
        assert!(q.job(b).unwrap().cancel_requested);
        assert!(q.retry(b).is_err(), "a running job is not retried");
        q.retry(a).unwrap();
        assert_eq!(q.job(a).unwrap().state, JobState::Queued);
        assert!(q.job(99).unwrap_err().to_string().contains("no such job"));
    }
}
