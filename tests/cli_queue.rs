//! `voxplan queue` end to end, with a simulated inventory (CI has no GPU: the placement is the real one,
//! the jobs train on the CPU): jobs that outlive a runner killed with SIGKILL finish exactly once and
//! resume from their checkpoints, concurrent submitters lose nothing, jobs that cannot fit are refused at
//! submit, and cancel / retry / logs / dry-run do what they say.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TEST_THREADS, tiny_experiment_text, write_experiment};

/// A tiny experiment: `epochs` × 12 steps, checkpointed after every step.
fn experiment(dir: &Path, name: &str, epochs: usize) -> PathBuf {
    write_experiment(dir, name, &tiny_experiment_text(name, epochs, 1, 0))
}

fn voxplan(queue: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voxplan"));
    c.args(args)
        .env("VOXPLAN_QUEUE", queue)
        .env("VOXPLAN_SIMULATE_GPUS", "T4,A100-40GB")
        .env("RAYON_NUM_THREADS", TEST_THREADS)
        .env("VOXPLAN_LOG", "info");
    c
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn list(queue: &Path) -> Vec<serde_json::Value> {
    let out = ok(voxplan(queue, &["queue", "list", "--json"]).output().unwrap());
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

fn submit(queue: &Path, config: &Path, name: &str) -> i64 {
    let out = ok(voxplan(queue, &["queue", "submit", config.to_str().unwrap(), "--name", name]).output().unwrap());
    out.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn steps(run: &Path) -> Vec<u64> {
    records(run).iter().filter(|r| r["kind"] == "step").map(|r| r["step"].as_u64().unwrap()).collect()
}

fn runner(queue: &Path, once: bool) -> Child {
    let mut args = vec!["queue", "run", "--poll", "0.05"];
    if once {
        args.push("--once");
    }
    voxplan(queue, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn jobs_survive_a_runner_killed_with_sigkill_and_finish_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue");
    let config = experiment(tmp.path(), "survivor", 3);
    let ids: Vec<i64> = ["a", "b", "c"].iter().map(|n| submit(&queue, &config, n)).collect();
    let run_dir = |id: i64| queue.join(format!("jobs/{id}/run"));

    let mut first = runner(&queue, false);
    // Job a is well into its run (all three run at once: each takes well under a card).
    wait_until("job a has trained 8 steps", || steps(&run_dir(ids[0])).len() >= 8);
    assert!(list(&queue).iter().all(|j| j["state"] == "running"), "{:?}", list(&queue));
    first.kill().unwrap();
    first.wait().unwrap();
    // The runner's death sends its children SIGTERM: they checkpoint and end (nobody is left to reap them).
    wait_until("every job process has ended", || {
        list(&queue).iter().all(|j| {
            let pid = j["pid"].as_u64().unwrap_or(0);
            pid == 0 || std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
        })
    });
    let before: Vec<usize> = ids.iter().map(|&id| steps(&run_dir(id)).len()).collect();

    let second = runner(&queue, true);
    let status = second.wait_with_output().unwrap().status;
    assert!(status.success());
    for (i, &id) in ids.iter().enumerate() {
        let job = list(&queue).into_iter().find(|j| j["id"] == id).unwrap();
        assert_eq!(job["state"], "done", "{job}");
        // Exactly once: every step logged once, 36 in all, in order.
        assert_eq!(steps(&run_dir(id)), (1..=36).collect::<Vec<u64>>(), "job {id}");
        if before[i] < 36 {
            assert_eq!(job["runs"], 2, "{job}");
            let resume =
                records(&run_dir(id)).into_iter().find(|r| r["event"] == "resume").expect("resumed, not restarted");
            assert!(
                resume["step"].as_u64().unwrap() as usize >= before[i].saturating_sub(1),
                "{resume} vs {}",
                before[i]
            );
        }
    }
    assert!(before[0] < 36, "job a was interrupted mid-run");
}

#[test]
fn concurrent_submitters_lose_no_job() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue");
    let config = experiment(tmp.path(), "many", 1);
    let submitters: Vec<std::thread::JoinHandle<()>> = (0..4)
        .map(|s| {
            let (queue, config) = (queue.clone(), config.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("s{s}-{i}");
                    let out = voxplan(&queue, &["queue", "submit", config.to_str().unwrap(), "--name", &name])
                        .env("VOXPLAN_SIMULATE_GPUS", "T4")
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    let jobs = list(&queue);
    assert_eq!(jobs.len(), 100);
    let mut names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 100, "every submit is one job");
    let mut ids: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids, (1..=100).collect::<Vec<i64>>());
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "queued" && queue.join(format!("jobs/{}/experiment.toml", j["id"])).is_file())
    );
}

#[test]
fn what_cannot_run_is_refused_at_submit_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue");
    // A 256³ patch of a wide U-Net does not fit a T4 or an A100-40GB even at batch 1.
    let huge = tmp.path().join("huge.toml");
    let text = std::fs::read_to_string(experiment(tmp.path(), "huge", 1))
        .unwrap()
        .replace("patch_size = [16, 16, 16]", "patch_size = [256, 256, 256]")
        .replace("shape = [24, 24, 24]", "shape = [256, 256, 256]")
        .replace(
            r#"stages = [{ features = 4, stride = [1, 1, 1] }, { features = 8, stride = [2, 2, 2] }]"#,
            r#"stages = [{ features = 64, stride = [1, 1, 1] }, { features = 128, stride = [2, 2, 2] }, { features = 256, stride = [2, 2, 2] }]"#,
        )
        .replace("groups = 4", "groups = 8");
    std::fs::write(&huge, text).unwrap();
    let out = voxplan(&queue, &["queue", "submit", huge.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("does not fit") && err.contains("T4"), "{err}");
    // A broken experiment: bad input.
    let broken = tmp.path().join("broken.toml");
    std::fs::write(&broken, "name = 1").unwrap();
    let out = voxplan(&queue, &["queue", "submit", broken.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // An option the runner owns.
    let config = experiment(tmp.path(), "fine", 1);
    let out =
        voxplan(&queue, &["queue", "submit", config.to_str().unwrap(), "--", "--device", "cuda:3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the queue sets it"));
    assert!(list(&queue).is_empty(), "nothing was queued");
    // A second runner is refused while one serves the queue.
    submit(&queue, &config, "one");
    let mut serving = runner(&queue, false);
    wait_until("the runner holds the queue", || queue.join("runner.lock").exists() && !list(&queue).is_empty());
    std::thread::sleep(Duration::from_millis(200));
    let out = voxplan(&queue, &["queue", "run", "--once"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another runner serves this queue"));
    serving.kill().unwrap();
    let _ = serving.wait();
}

#[test]
fn cancel_checkpoints_a_running_job_retry_resumes_it_and_logs_show_both_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue");
    let config = experiment(tmp.path(), "cancelled", 3);
    let id = submit(&queue, &config, "to-cancel");
    let queued = submit(&queue, &config, "never-runs");
    ok(voxplan(&queue, &["queue", "cancel", &queued.to_string()]).output().unwrap());
    let dry = ok(voxplan(&queue, &["queue", "run", "--dry-run", "--format", "json"]).output().unwrap());
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["jobs"][0]["decision"]["decision"], "start", "{dry}");
    assert_eq!(dry["jobs"].as_array().unwrap().len(), 1, "the cancelled job is not placed");

    let run = queue.join(format!("jobs/{id}/run"));
    let mut serving = runner(&queue, false);
    wait_until("5 steps", || steps(&run).len() >= 5);
    let out = ok(voxplan(&queue, &["queue", "cancel", &id.to_string()]).output().unwrap());
    assert!(out.contains("cancel requested"), "{out}");
    wait_until("the job is cancelled", || list(&queue).iter().any(|j| j["id"] == id && j["state"] == "cancelled"));
    let stopped_at = steps(&run).len();
    assert!(stopped_at < 36 && run.join("checkpoints/last/state.json").is_file());
    ok(voxplan(&queue, &["queue", "retry", &id.to_string()]).output().unwrap());
    wait_until("the retried job is done", || list(&queue).iter().any(|j| j["id"] == id && j["state"] == "done"));
    serving.kill().unwrap();
    let _ = serving.wait();
    assert_eq!(steps(&run), (1..=36).collect::<Vec<u64>>(), "resumed where the cancel stopped it");
    let log = ok(voxplan(&queue, &["queue", "logs", &id.to_string(), "--follow"]).output().unwrap());
    assert_eq!(log.matches("=== voxplan queue: job").count(), 2, "{log}");
    assert!(log.contains("resuming from"), "{log}");
    let status = ok(voxplan(&queue, &["queue", "status", &id.to_string()]).output().unwrap());
    assert!(status.contains("done") && status.contains("budget"), "{status}");
}

/// `submit --gpus 2` takes two cards at once and the job trains on both in data parallel (on the CPU here,
/// `--devices cpu:2`, the path two cards take); more cards than the box has are refused at submit.
#[test]
fn a_job_on_two_cards_trains_in_data_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue");
    let config = experiment(tmp.path(), "pair", 1);
    let config = config.to_str().unwrap();
    let out = ok(voxplan(&queue, &["queue", "submit", config, "--gpus", "2", "--name", "pair"]).output().unwrap());
    let id: i64 = out.split_whitespace().nth(2).unwrap().parse().unwrap();
    let three = voxplan(&queue, &["queue", "submit", config, "--gpus", "3"]).output().unwrap();
    assert_eq!(three.status.code(), Some(3), "{}", String::from_utf8_lossy(&three.stderr));
    assert!(runner(&queue, true).wait_with_output().unwrap().status.success());
    let job = list(&queue).into_iter().find(|j| j["id"] == id).unwrap();
    assert_eq!(job["state"], "done", "{job}");
    let run = queue.join(format!("jobs/{id}/run"));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["training"]["devices"], 2, "{plan}");
    assert_eq!(steps(&run), (1..=12).collect::<Vec<u64>>(), "every step once, written by rank 0");
    let log = std::fs::read_to_string(queue.join(format!("jobs/{id}/job.log"))).unwrap();
    assert!(log.contains("2 × cpu"), "{log}");
}
