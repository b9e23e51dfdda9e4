//! `voxplan slurm`: an sbatch script sized from the plan, for clusters run by Slurm.
//!
//! What the script asks for and why:
//! - `--gres=gpu:1`, or `--gres=shard:N` on sites that split cards into shards of a known size: N shards
//!   hold the planned budget, and the job is told that budget, so it never takes more than it asked for.
//! - `--cpus-per-task`: the patch loader's workers plus the thread that drives the device.
//! - `--mem`: the host memory the job holds, from the loader's stated bound plus the process.
//! - `--requeue` and `--signal=B:USR1@S`: S seconds before its time limit the batch shell gets SIGUSR1 and
//!   passes it to `voxplan train`, which finishes its step, checkpoints and exits 75; the script then
//!   requeues the job, and the requeued job runs the same command, which resumes. A SIGTERM (scancel, a
//!   preemption, `scontrol requeue`) is passed on the same way; Slurm itself decides whether the job runs
//!   again, and when it does it resumes.
//! - Output in the run directory (`slurm-%j.out`, appended across requeues).
//!
//! The training command runs in the background and the shell waits for it, because a batch shell runs its
//! signal traps only between commands (measured: `../shared/reference/slurm.md`). Only options Slurm 21.08
//! already had are used.

use std::fmt::Write;
use std::path::PathBuf;

/// What Slurm should reserve for the job's GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gres {
    /// Whole cards.
    Gpus(usize),
    /// Shards of a shared card (`--gres=shard:N`).
    Shards(usize),
}

/// Everything the script says.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmRequest {
    pub job_name: String,
    /// The `voxplan` binary the job runs (an absolute path: the job does not inherit the submitter's PATH
    /// in every site's configuration).
    pub voxplan: PathBuf,
    /// The experiment file, copied into the run directory.
    pub experiment: PathBuf,
    pub run_dir: PathBuf,
    /// `--device` of the training command inside the job: `cuda:0` (the job sees only its own cards).
    pub device: String,
    /// `--budget` of the training command, when a share of a card is all the job has.
    pub budget_bytes: Option<u64>,
    pub gres: Option<Gres>,
    pub cpus_per_task: usize,
    pub mem_mib: u64,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Seconds before the time limit at which the job is told to checkpoint.
    pub signal_seconds: u32,
    /// More `#SBATCH` options, verbatim (`--qos=long`, `--constraint=a100`, …).
    pub extra: Vec<String>,
    /// More arguments of the training command.
    pub train_args: Vec<String>,
}

/// Slurm's default `KillWait` is 30 s; a GPU step of a large 3D U-Net plus its checkpoint takes seconds, a
/// CPU step of a 128³ patch up to 20 (docs/jobs.md): two minutes leave room for both.
pub const DEFAULT_SIGNAL_SECONDS: u32 = 120;

/// Quotes a word for the shell (single quotes; an embedded quote closes, escapes and reopens).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The sbatch script.
pub fn sbatch_script(r: &SlurmRequest) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let run_dir = r.run_dir.to_string_lossy();
    let mut opt = |line: String| {
        let _ = writeln!(s, "#SBATCH {line}");
    };
    opt(format!("--job-name={}", r.job_name.replace(char::is_whitespace, "_")));
    match r.gres {
        Some(Gres::Gpus(n)) => opt(format!("--gres=gpu:{n}")),
        Some(Gres::Shards(n)) => opt(format!("--gres=shard:{n}")),
        None => {}
    }
    opt("--nodes=1".into());
    opt("--ntasks=1".into());
    opt(format!("--cpus-per-task={}", r.cpus_per_task.max(1)));
    opt(format!("--mem={}M", r.mem_mib.max(1)));
    if let Some(t) = &r.time {
        opt(format!("--time={t}"));
    }
    if let Some(p) = &r.partition {
        opt(format!("--partition={p}"));
    }
    if let Some(a) = &r.account {
        opt(format!("--account={a}"));
    }
    opt("--requeue".into());
    opt(format!("--signal=B:USR1@{}", r.signal_seconds));
    opt(format!("--output={run_dir}/slurm-%j.out"));
    opt("--open-mode=append".into());
    for line in &r.extra {
        opt(line.clone());
    }
    let mut command = vec![
        shell_quote(&r.voxplan.to_string_lossy()),
        "train".into(),
        "--config".into(),
        shell_quote(&r.experiment.to_string_lossy()),
        "--run-dir".into(),
        shell_quote(&run_dir),
        "--device".into(),
        shell_quote(&r.device),
    ];
    if let Some(b) = r.budget_bytes {
        command.push("--budget".into());
        command.push(b.to_string());
    }
    command.extend(r.train_args.iter().map(|a| shell_quote(a)));
    let _ = write!(
        s,
        r#"
# Written by `voxplan slurm` (docs/jobs.md). The same command runs on every (re)start: it resumes the run
# directory's checkpoint, or exits 0 at once if the run is finished. Exit codes: README, "Running unattended".
set -u
echo "voxplan slurm job ${{SLURM_JOB_ID:-?}} on $(hostname) restart ${{SLURM_RESTART_COUNT:-0}} CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}} at $(date -u +%FT%TZ)"
warned=0
pass_on() {{ kill -s "$1" "$child" 2>/dev/null; }}
trap 'warned=1; pass_on USR1' USR1
trap 'pass_on TERM' TERM
trap 'pass_on INT' INT
{command} &
child=$!
# `wait` returns early when a trapped signal arrives: wait again until the training command has ended.
status=0
while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
done
# Warned of the time limit and interrupted with a checkpoint: run again (the requeued job resumes).
if [ "$status" -eq 75 ] && [ "$warned" -eq 1 ] && [ -n "${{SLURM_JOB_ID:-}}" ]; then
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
"#,
        command = command.join(" ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SlurmRequest {
        SlurmRequest {
            job_name: "brats fold0".into(),
            voxplan: PathBuf::from("/opt/voxplan/bin/voxplan"),
            experiment: PathBuf::from("/runs/brats/experiment.toml"),
            run_dir: PathBuf::from("/runs/brats"),
            device: "cuda:0".into(),
            budget_bytes: None,
            gres: Some(Gres::Gpus(1)),
            cpus_per_task: 5,
            mem_mib: 24_576,
            time: Some("2-00:00:00".into()),
            partition: Some("gpu".into()),
            account: None,
            signal_seconds: DEFAULT_SIGNAL_SECONDS,
            extra: vec!["--qos=long".into()],
            train_args: vec![],
        }
    }

    #[test]
    fn the_script_asks_for_what_the_plan_needs_and_passes_signals_on() {
        let s = sbatch_script(&request());
        for line in [
            "#SBATCH --job-name=brats_fold0",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --cpus-per-task=5",
            "#SBATCH --mem=24576M",
            "#SBATCH --time=2-00:00:00",
            "#SBATCH --partition=gpu",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@120",
            "#SBATCH --output=/runs/brats/slurm-%j.out",
            "#SBATCH --qos=long",
            "/opt/voxplan/bin/voxplan train --config /runs/brats/experiment.toml --run-dir /runs/brats --device cuda:0 &",
            "trap 'warned=1; pass_on USR1' USR1",
            "scontrol requeue \"$SLURM_JOB_ID\"",
        ] {
            assert!(s.contains(line), "{line:?} missing from\n{s}");
        }
        assert!(!s.contains("--account"), "no account unless asked");
    }

    #[test]
    fn shards_carry_a_budget_and_odd_paths_are_quoted() {
        let r = SlurmRequest {
            gres: Some(Gres::Shards(3)),
            budget_bytes: Some(12 << 30),
            run_dir: PathBuf::from("/runs/it's here"),
            ..request()
        };
        let s = sbatch_script(&r);
        assert!(s.contains("#SBATCH --gres=shard:3"), "{s}");
        assert!(s.contains("--budget 12884901888"), "{s}");
        assert!(s.contains(r"--run-dir '/runs/it'\''s here'"), "{s}");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("cuda:0"), "cuda:0");
    }
}
