//! `voxplan slurm` against a real Slurm: Debian's slurmctld, two slurmd nodes and munge, started on this
//! machine by `scripts/slurm-local.sh` (installed with apt-get when missing; ../shared/reference/slurm.md).
//! A job submitted through `voxplan slurm --submit` trains to the end; a job requeued mid-run receives the
//! signal, checkpoints, runs again and resumes; two jobs asking for one fake GPU each run at once with
//! different `CUDA_VISIBLE_DEVICES`. The jobs train on the CPU (`--device cpu`); the GPUs are character
//! devices that only Slurm's bookkeeping sees. Without Slurm and a way to install it these tests fail with
//! the reason: they never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{TEST_THREADS, tiny_experiment_text, write_experiment};

/// The cluster's `SLURM_CONF`, starting the cluster the first time (shared by this file's tests).
fn cluster() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh");
        let out = Command::new("bash").arg(&script).arg("start").arg(&dir).output().expect("bash runs");
        assert!(
            out.status.success(),
            "the Slurm tests need a local Slurm cluster and {} could not start one: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("etc/slurm.conf")
    })
}

/// The tests take the cluster one at a time: each asserts what runs where, and another test's jobs on the
/// same node would hold the fake GPUs it counts on.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn slurm(command: &str, args: &[&str]) -> Output {
    Command::new(command).args(args).env("SLURM_CONF", cluster()).output().unwrap_or_else(|e| panic!("{command}: {e}"))
}

/// `scontrol show job` as key=value pairs.
fn job_field(id: &str, key: &str) -> String {
    let out = String::from_utf8_lossy(&slurm("scontrol", &["show", "job", id]).stdout).into_owned();
    out.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string)).unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn experiment(dir: &Path, name: &str, epochs: usize) -> PathBuf {
    write_experiment(dir, name, &tiny_experiment_text(name, epochs, 1, 0))
}

/// `voxplan slurm CONFIG --gpu T4 --device cpu --run-dir RUN --submit [extra]`; the batch job id.
fn submit(config: &Path, run: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "slurm",
        config.to_str().unwrap(),
        "--gpu",
        "T4",
        "--device",
        "cpu",
        "--time",
        "10:00",
        "--run-dir",
        run.to_str().unwrap(),
        "--submit",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_voxplan"))
        .args(&args)
        .env("SLURM_CONF", cluster())
        .env("RAYON_NUM_THREADS", TEST_THREADS)
        .env("VOXPLAN_LOG", "info")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text.lines().find_map(|l| l.strip_prefix("submitted    batch job ")).expect("a job id").trim().to_string()
}

fn steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect()
}

fn output(run: &Path, id: &str) -> String {
    std::fs::read_to_string(run.join(format!("slurm-{id}.out"))).unwrap_or_default()
}

#[test]
fn a_job_submitted_through_voxplan_slurm_trains_to_the_end() {
    let _cluster = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let id = submit(&experiment(tmp.path(), "slurm-whole", 1), &run, &[]);
    wait_for("the job completes", Duration::from_secs(120), || job_field(&id, "JobState") == "COMPLETED");
    assert_eq!(job_field(&id, "ExitCode"), "0:0");
    assert!(run.join("checkpoints/last/state.json").is_file() && run.join("weights.safetensors").is_file());
    assert_eq!(steps(&run).len(), 12);
    let log = output(&run, &id);
    assert!(log.contains(&format!("voxplan slurm job {id}")) && log.contains("best Dice"), "{log}");
}

#[test]
fn a_requeued_job_checkpoints_runs_again_and_resumes() {
    let _cluster = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let id = submit(&experiment(tmp.path(), "slurm-requeue", 4), &run, &[]);
    wait_for("6 steps", Duration::from_secs(120), || steps(&run).len() >= 6);
    let requeue = slurm("scontrol", &["requeue", &id]);
    assert!(requeue.status.success(), "{}", String::from_utf8_lossy(&requeue.stderr));
    // Slurm holds a requeued job back for a while (BeginTime); release it now.
    wait_for("the job is pending again", Duration::from_secs(60), || job_field(&id, "JobState") == "PENDING");
    let stopped_at = steps(&run).len();
    // Released again every few seconds while it still pends: an update that reaches slurmctld while the
    // requeue is still being processed is lost, and the job would then wait out its BeginTime.
    let mut released: Option<Instant> = None;
    wait_for("the requeued job completes", Duration::from_secs(180), || {
        let state = job_field(&id, "JobState");
        if state == "PENDING" && released.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
            slurm("scontrol", &["update", &format!("JobId={id}"), "StartTime=now"]);
            released = Some(Instant::now());
        }
        assert!(
            !matches!(state.as_str(), "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY"),
            "the requeued job ended {state}:\n{}\n--- its output:\n{}",
            String::from_utf8_lossy(&slurm("scontrol", &["show", "job", &id]).stdout),
            output(&run, &id)
        );
        state == "COMPLETED"
    });
    assert_eq!(job_field(&id, "Restarts"), "1");
    let log = output(&run, &id);
    assert!(log.contains("restart 0") && log.contains("restart 1"), "{log}");
    assert!(log.contains("interrupted at optimizer step"), "the first run checkpointed on the signal: {log}");
    assert!(log.contains("resumed from"), "the second run resumed: {log}");
    assert_eq!(steps(&run), (1..=48).collect::<Vec<u64>>(), "every step once, none retrained from scratch");
    assert!(stopped_at < 48);
}

#[test]
fn two_jobs_with_one_fake_gpu_each_share_a_node_with_their_own_device() {
    let _cluster = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "slurm-pair", 8);
    let (run_a, run_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = submit(&config, &run_a, &["--sbatch=--nodelist=n1"]);
    let b = submit(&config, &run_b, &["--sbatch=--nodelist=n1"]);
    let mut together = false;
    wait_for("both jobs complete", Duration::from_secs(180), || {
        let (sa, sb) = (job_field(&a, "JobState"), job_field(&b, "JobState"));
        together |= sa == "RUNNING" && sb == "RUNNING";
        sa == "COMPLETED" && sb == "COMPLETED"
    });
    assert!(together, "both ran at the same time on n1");
    let device = |run: &Path, id: &str| {
        let log = output(run, id);
        log.split_whitespace().find_map(|w| w.strip_prefix("CUDA_VISIBLE_DEVICES=").map(str::to_string)).unwrap()
    };
    let (da, db) = (device(&run_a, &a), device(&run_b, &b));
    assert!(!da.is_empty() && !db.is_empty() && da != db, "{da} vs {db}");
}
