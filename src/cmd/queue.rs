//! `voxplan queue`: a box-local job queue packed by planned memory (docs/jobs.md). Parses arguments and
//! calls `voxplan_jobs`; what a job costs comes from the pipeline's planner (`crate::job_planner`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use voxplan_jobs::runner::{dry_run, render_jobs};
use voxplan_jobs::store::Cancelled;
use voxplan_jobs::{
    BudgetRange, Card, Inventory, JobKind, JobSpec, JobState, JobsError, NewJob, Queue, Runner, RunnerOptions,
};
use voxplan_pipeline::Experiment;
use voxplan_pipeline::job_plan::{PlanInputs, inference_budgets};
use voxplan_pipeline::predict::largest_input_shape;
use voxplan_planner::format_bytes;

use crate::exit::BadInput;
use crate::job_planner::{PipelinePlanner, convert, training_budgets};

#[derive(clap::Args)]
pub struct Args {
    /// The queue folder (default: $VOXPLAN_QUEUE, else ~/.local/state/voxplan/queue; a shared box points
    /// every user at one group-writable folder such as /var/lib/voxplan/queue).
    #[arg(long, global = true)]
    queue: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Queue a training job: the experiment is checked and planned for this box's cards now.
    Submit(SubmitArgs),
    /// Queue a prediction job (`voxplan predict --skip-existing`, so a re-run finishes what is left).
    SubmitPredict(SubmitPredictArgs),
    /// Every job, one line each.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One job in full.
    Status {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: at once when queued; a running one checkpoints first (SIGTERM).
    Cancel { id: i64 },
    /// Print a job's log (its processes' stdout and stderr, every run).
    Logs {
        id: i64,
        /// Keep printing what the job writes until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Queue a failed or cancelled job again; it resumes from its checkpoint.
    Retry { id: i64 },
    /// Serve the queue: start jobs on the cards with room for their plans, watch them, recover.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct Placement {
    /// Plan for these cards from the built-in table instead of this box's (NVML), e.g. A100-40GB,T4; jobs
    /// then run on the CPU. Default: $VOXPLAN_SIMULATE_GPUS.
    #[arg(long)]
    simulate_gpus: Option<String>,
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// The experiment TOML (snapshotted into the queue: later edits do not change the job).
    experiment: PathBuf,
    #[arg(long)]
    name: Option<String>,
    /// Higher runs first (ties: submission order).
    #[arg(long, default_value_t = 0)]
    priority: i64,
    /// Cards the job trains on at once, in data parallel (`voxplan train --devices`); each must hold the
    /// plan's per-card budget, which is sized for one card (a share of the batch per card needs no more).
    #[arg(long, default_value_t = 1)]
    gpus: usize,
    /// Where checkpoints and metrics go (default: the job's folder in the queue, `run/`).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    placement: Placement,
    /// More `voxplan train` options, after `--` (e.g. `-- --stop-after-epochs 10`).
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(clap::Args)]
struct SubmitPredictArgs {
    /// A run directory or checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A .nii/.nii.gz file or a directory of them.
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value_t = 0)]
    priority: i64,
    #[command(flatten)]
    placement: Placement,
    /// More `voxplan predict` options, after `--` (e.g. `-- --probabilities`).
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Serve only these card indices, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    gpus: Option<Vec<usize>>,
    /// Return once no job runs and none of the queued can start.
    #[arg(long)]
    once: bool,
    /// Print what would start where (and why the rest wait) and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 2.0)]
    poll: f64,
    #[command(flatten)]
    placement: Placement,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.queue.unwrap_or_else(Queue::default_dir);
    match args.command {
        Command::Submit(a) => submit(&dir, a),
        Command::SubmitPredict(a) => submit_predict(&dir, a),
        Command::List { json } => {
            let jobs = Queue::open(&dir)?.jobs()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                print!("{}", render_jobs(&jobs));
            }
            Ok(())
        }
        Command::Status { id, json } => {
            let job = Queue::open(&dir)?.job(id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", render_jobs(std::slice::from_ref(&job)));
                println!("log      {}\nrun dir  {}", job.log_path().display(), job.run_dir.display());
                for (kind, r) in &job.budgets {
                    println!(
                        "budget   {kind}: {} to keep its patch, {} for its plan",
                        format_bytes(r.min_bytes),
                        format_bytes(r.full_bytes)
                    );
                }
            }
            Ok(())
        }
        Command::Cancel { id } => {
            match Queue::open(&dir)?.cancel(id)? {
                Cancelled::Now => println!("job {id} cancelled"),
                Cancelled::Requested => {
                    println!("job {id}: cancel requested; the runner stops it after its current step")
                }
            }
            Ok(())
        }
        Command::Logs { id, follow } => logs(&dir, id, follow),
        Command::Retry { id } => {
            Queue::open(&dir)?.retry(id)?;
            println!("job {id} queued again; it resumes from its checkpoint");
            Ok(())
        }
        Command::Run(a) => serve(&dir, a),
    }
}

/// Options the runner sets itself and a job may not.
const RUNNER_OWNED: [&str; 6] = ["--device", "--devices", "--budget", "--run-dir", "--config", "--resume"];

fn check_extra(extra: &[String], also_owned: &[&str]) -> anyhow::Result<()> {
    if let Some(flag) = extra.iter().find(|a| RUNNER_OWNED.contains(&a.as_str()) || also_owned.contains(&a.as_str())) {
        return Err(BadInput(format!("{flag} after `--`: the queue sets it (use submit's own options)")).into());
    }
    Ok(())
}

/// The kinds of card of `cards`, one card of each.
fn kinds(cards: &[Card]) -> Vec<&Card> {
    let mut out: Vec<&Card> = Vec::new();
    for c in cards {
        if !out.iter().any(|o| o.kind == c.kind) {
            out.push(c);
        }
    }
    out
}

/// Refuses a job that fits no card of the box (exit 3), naming what it needs and what the box has.
fn check_fits(budgets: &BTreeMap<String, BudgetRange>, cards: &[Card], gpus: usize, what: &str) -> anyhow::Result<()> {
    let fitting = cards.iter().filter(|c| budgets.contains_key(&c.kind)).count();
    if fitting >= gpus {
        return Ok(());
    }
    let have: Vec<String> =
        kinds(cards).iter().map(|c| format!("{} ({})", c.kind, format_bytes(c.total_bytes))).collect();
    Err(JobsError::DoesNotFit(format!(
        "{what} needs {gpus} card(s) that can hold its patch; {fitting} of this box's cards can: {}",
        have.join(", ")
    ))
    .into())
}

fn user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

fn submit(dir: &Path, a: SubmitArgs) -> anyhow::Result<()> {
    check_extra(&a.extra, &[])?;
    if a.gpus == 0 {
        return Err(BadInput("--gpus must be at least 1".into()).into());
    }
    let experiment = Experiment::load(Some(&a.experiment))?;
    let inputs = PlanInputs::read(&experiment).context("reading the experiment's dataset")?;
    let cards = Inventory::from_option(a.placement.simulate_gpus.as_deref()).cards(None)?;
    let mut budgets = BTreeMap::new();
    for card in kinds(&cards) {
        if let Some(range) = training_budgets(&inputs, &card.profile).map_err(anyhow::Error::msg)? {
            budgets.insert(card.kind.clone(), range);
        }
    }
    check_fits(&budgets, &cards, a.gpus, &format!("experiment {:?}", experiment.name))?;
    let name = a.name.unwrap_or_else(|| experiment.name.clone());
    let job = NewJob {
        name,
        kind: JobKind::Train,
        priority: a.priority,
        gpus: a.gpus,
        cwd: std::env::current_dir()?,
        user: user(),
        budgets: budgets.clone(),
        run_dir: a.run_dir.clone().map(|d| absolute(&d)),
    };
    let source = a.experiment.clone();
    let extra = a.extra.clone();
    let run_dir = job.run_dir.clone();
    let id = Queue::open(dir)?.submit(&job, |folder| {
        let snapshot = folder.join("experiment.toml");
        std::fs::copy(&source, &snapshot).map_err(|e| JobsError::io(&source, e))?;
        let run = run_dir.unwrap_or_else(|| folder.join("run"));
        let mut args = vec!["--config".to_string(), path_arg(&snapshot), "--run-dir".into(), path_arg(&run)];
        args.extend(extra);
        Ok(JobSpec { kind: JobKind::Train, args })
    })?;
    println!("submitted job {id} ({}, priority {})", job.name, job.priority);
    for (kind, r) in &budgets {
        println!(
            "  {kind}: {} keeps its patch, {} runs its plan",
            format_bytes(r.min_bytes),
            format_bytes(r.full_bytes)
        );
    }
    Ok(())
}

fn submit_predict(dir: &Path, a: SubmitPredictArgs) -> anyhow::Result<()> {
    check_extra(&a.extra, &["--checkpoint", "--input", "--output"])?;
    let (checkpoint, input, output) = (absolute(&a.checkpoint), absolute(&a.input), absolute(&a.output));
    let shape = largest_input_shape(&input)?;
    let cards = Inventory::from_option(a.placement.simulate_gpus.as_deref()).cards(None)?;
    let mut budgets = BTreeMap::new();
    for card in kinds(&cards) {
        if let Some(range) = inference_budgets(&checkpoint, shape, &card.profile)? {
            budgets.insert(card.kind.clone(), convert(range));
        }
    }
    check_fits(&budgets, &cards, 1, &format!("predicting volumes of {shape:?}"))?;
    let job = NewJob {
        name: a.name.unwrap_or_else(|| format!("predict {}", input.file_name().unwrap_or_default().to_string_lossy())),
        kind: JobKind::Predict,
        priority: a.priority,
        gpus: 1,
        cwd: std::env::current_dir()?,
        user: user(),
        budgets,
        run_dir: Some(output.clone()),
    };
    let extra = a.extra.clone();
    let id = Queue::open(dir)?.submit(&job, |_| {
        let mut args = vec![
            "--checkpoint".to_string(),
            path_arg(&checkpoint),
            "--input".into(),
            path_arg(&input),
            "--output".into(),
            path_arg(&output),
            "--skip-existing".into(),
        ];
        args.extend(extra);
        Ok(JobSpec { kind: JobKind::Predict, args })
    })?;
    println!("submitted job {id} ({}, priority {})", job.name, job.priority);
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Prints the job's log; with `follow`, keeps printing what is appended until the job ends.
fn logs(dir: &Path, id: i64, follow: bool) -> anyhow::Result<()> {
    let queue = Queue::open(dir)?;
    let job = queue.job(id)?;
    let path = job.log_path();
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    loop {
        if let Ok(mut file) = std::fs::File::open(&path) {
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = Vec::new();
            file.read_to_end(&mut chunk)?;
            offset += chunk.len() as u64;
            out.write_all(&chunk)?;
            out.flush()?;
        } else if !follow {
            println!("(job {id} has not written a log yet)");
        }
        if !follow || queue.job(id)?.state.is_final() && std::fs::metadata(&path).map_or(0, |m| m.len()) <= offset {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `queue run`: the runner, until a signal (jobs checkpoint and go back to the queue) or, with `--once`,
/// until nothing runs and nothing more can start.
fn serve(dir: &Path, a: RunArgs) -> anyhow::Result<()> {
    let inventory = Inventory::from_option(a.placement.simulate_gpus.as_deref());
    if a.dry_run {
        let queue = Queue::open(dir)?;
        let plan = dry_run(&queue, &inventory, a.gpus.as_deref())?;
        match a.format {
            Format::Text => print!("{}", plan.render_text()),
            Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        return Ok(());
    }
    if !(a.poll.is_finite() && a.poll > 0.0) {
        return Err(BadInput(format!("--poll must be a positive number of seconds, got {}", a.poll)).into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    crate::signals::stop_flag_on_signals(stop.clone())?;
    let options = RunnerOptions {
        exe: std::env::current_exe().context("locating the voxplan binary the jobs run")?,
        only_cards: a.gpus,
        once: a.once,
        poll: Duration::from_secs_f64(a.poll),
    };
    let planner = PipelinePlanner;
    let mut runner = Runner::new(dir, inventory, &planner, options, stop)?;
    tracing::info!("serving queue {}", dir.display());
    runner.run()?;
    let left = Queue::open(dir)?.in_state(JobState::Queued)?.len();
    tracing::info!("runner stopped; {left} job(s) queued");
    Ok(())
}
