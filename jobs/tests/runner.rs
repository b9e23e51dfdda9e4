//! The runner's decisions on real child processes, with a stand-in for `voxplan` (a shell script whose exit
//! code each job chooses) and a planner that returns fixed budgets: what happens after each exit code,
//! cancels, the one-runner lock, and recovery of jobs whose process died with an earlier runner.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use voxplan_jobs::{
    BudgetRange, Inventory, JobKind, JobPlanner, JobSpec, JobState, NewJob, Queue, Runner, RunnerOptions,
};
use voxplan_planner::DeviceProfile;

const GIB: u64 = 1 << 30;

/// Every job costs 2–4 GiB on any card.
struct Fixed;

impl JobPlanner for Fixed {
    fn budgets(&self, _: &JobSpec, _: &Path, _: &DeviceProfile) -> Result<Option<BudgetRange>, String> {
        Ok(Some(BudgetRange { min_bytes: 2 * GIB, full_bytes: 4 * GIB }))
    }
}

/// A stand-in for `voxplan`: `train --exit CODE [--sleep S] ...` prints its arguments, sleeps, prints an
/// `error:` line unless the code is 0, and exits with CODE.
fn fake_voxplan(dir: &Path) -> PathBuf {
    let path = dir.join("fake-voxplan");
    std::fs::write(
        &path,
        r#"#!/bin/sh
echo "args: $*"
code=0; sleep=0
while [ $# -gt 0 ]; do
  case "$1" in --exit) code=$2; shift ;; --sleep) sleep=$2; shift ;; esac
  shift
done
trap 'echo "error: interrupted"; exit 75' TERM
i=0
while [ "$i" -lt "$sleep" ]; do sleep 0.1; i=$((i + 1)); done
[ "$code" -ne 0 ] && echo "error: the stand-in failed with $code"
exit "$code"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn submit(queue: &mut Queue, name: &str, args: &[&str]) -> i64 {
    let budgets = BTreeMap::from([("T4 (sm_75)".to_string(), BudgetRange { min_bytes: 2 * GIB, full_bytes: 4 * GIB })]);
    let job = NewJob {
        name: name.into(),
        kind: JobKind::Train,
        priority: 0,
        gpus: 1,
        cwd: std::env::temp_dir(),
        user: "test".into(),
        budgets,
        run_dir: None,
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    queue.submit(&job, |_| Ok(JobSpec { kind: JobKind::Train, args })).unwrap()
}

fn run_once(dir: &Path, exe: &Path) {
    let options =
        RunnerOptions { exe: exe.to_path_buf(), only_cards: None, once: true, poll: Duration::from_millis(50) };
    let planner = Fixed;
    let mut runner =
        Runner::new(dir, Inventory::Simulated(vec!["T4".into()]), &planner, options, Arc::new(AtomicBool::new(false)))
            .unwrap();
    runner.run().unwrap();
}

#[test]
fn each_exit_code_decides_what_happens_to_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = fake_voxplan(tmp.path());
    let dir = tmp.path().join("queue");
    let mut queue = Queue::open(&dir).unwrap();
    // Served first, so it gets its full 4 GiB; the T4's 15 GiB then hold three more at 4 GiB and one at 3.
    let oom = submit(&mut queue, "oom", &["--exit", "3"]);
    let done = submit(&mut queue, "done", &["--exit", "0"]);
    let bad = submit(&mut queue, "bad", &["--exit", "2"]);
    let diverged = submit(&mut queue, "diverged", &["--exit", "4"]);
    let other = submit(&mut queue, "other", &["--exit", "9"]);
    run_once(&dir, &exe);
    let job = |id| queue.job(id).unwrap();
    assert_eq!(job(done).state, JobState::Done);
    let reason = |id| job(id).reason.unwrap_or_default();
    assert_eq!(job(bad).state, JobState::Failed);
    assert!(reason(bad).starts_with("bad input: the stand-in failed with 2"), "{}", reason(bad));
    assert!(reason(diverged).starts_with("diverged"), "{}", reason(diverged));
    assert!(reason(other).starts_with("exit code 9"), "{}", reason(other));
    // Out of memory: run again once with at most 0.7 of the budget (4 GiB → 2.8 GiB), then failed.
    let o = job(oom);
    assert_eq!((o.state, o.runs, o.oom_retries), (JobState::Failed, 2, 1), "{o:?}");
    assert_eq!(o.budget_cap, Some((4.0 * GIB as f64 * 0.7) as u64));
    assert_eq!(o.budget_bytes, o.budget_cap, "the second run got the capped budget");
    assert!(reason(oom).starts_with("out of memory again"), "{}", reason(oom));
    let log = std::fs::read_to_string(o.log_path()).unwrap();
    assert_eq!(log.matches("=== voxplan queue: job").count(), 2, "{log}");
    assert!(log.contains("--budget 4294967296 --device cpu"), "{log}");
}

#[test]
fn an_interrupted_job_is_requeued_and_a_cancelled_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = fake_voxplan(tmp.path());
    let dir = tmp.path().join("queue");
    let mut queue = Queue::open(&dir).unwrap();
    // 75 once (the stand-in cannot tell runs apart, so: a job that is interrupted, then succeeds when its
    // arguments say so is modelled by two jobs).
    let interrupted = submit(&mut queue, "interrupted", &["--exit", "75"]);
    let queued_cancel = submit(&mut queue, "cancelled-queued", &["--exit", "0"]);
    queue.cancel(queued_cancel).unwrap();
    let options = RunnerOptions { exe: exe.clone(), only_cards: None, once: false, poll: Duration::from_millis(50) };
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let planner = Fixed;
            let mut runner =
                Runner::new(&dir, Inventory::Simulated(vec!["T4".into()]), &planner, options, stop).unwrap();
            runner.run().unwrap();
        })
    };
    // The interrupted job goes back to the queue and runs again, over and over; cancel it while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue.job(interrupted).unwrap().runs < 2 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(queue.job(queued_cancel).unwrap().state, JobState::Cancelled);
    let long = submit(&mut queue, "long", &["--exit", "0", "--sleep", "600"]);
    while queue.job(long).unwrap().state != JobState::Running {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    queue.cancel(long).unwrap();
    while queue.job(long).unwrap().state == JobState::Running {
        assert!(std::time::Instant::now() < deadline, "the cancel's SIGTERM ends the job");
        std::thread::sleep(Duration::from_millis(20));
    }
    let l = queue.job(long).unwrap();
    assert_eq!((l.state, l.exit_code), (JobState::Cancelled, Some(75)), "{l:?}");
    queue.cancel(interrupted).ok();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    handle.join().unwrap();
}

#[test]
fn one_runner_per_queue_and_a_dead_runners_jobs_are_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = fake_voxplan(tmp.path());
    let dir = tmp.path().join("queue");
    let planner = Fixed;
    let options = RunnerOptions { exe: exe.clone(), only_cards: None, once: true, poll: Duration::from_millis(50) };
    let inventory = Inventory::Simulated(vec!["T4".into()]);
    let first =
        Runner::new(&dir, inventory.clone(), &planner, options.clone(), Arc::new(AtomicBool::new(false))).unwrap();
    let second = Runner::new(&dir, inventory.clone(), &planner, options.clone(), Arc::new(AtomicBool::new(false)));
    assert!(second.err().unwrap().to_string().contains("another runner serves this queue"));
    drop(first);
    // A job its runner marked running, whose process has gone (the runner was killed, the box rebooted):
    // the next runner runs it again. One whose recorded process still lives is left alone until it ends.
    let mut queue = Queue::open(&dir).unwrap();
    let orphan = submit(&mut queue, "orphan", &["--exit", "0"]);
    assert!(queue.mark_started(orphan, &[0], 4 * GIB, 999_999, "another-boot:1").unwrap());
    let mut sleeper = std::process::Command::new("sleep").arg("1").spawn().unwrap();
    let live = submit(&mut queue, "live", &["--exit", "0"]);
    let identity = voxplan_jobs::process::identity(sleeper.id()).unwrap();
    assert!(queue.mark_started(live, &[0], 4 * GIB, sleeper.id(), &identity).unwrap());
    let started = std::time::Instant::now();
    let mut runner = Runner::new(&dir, inventory, &planner, options, Arc::new(AtomicBool::new(false))).unwrap();
    runner.run().unwrap();
    let _ = sleeper.wait();
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited for the live process to end");
    for id in [orphan, live] {
        let j = queue.job(id).unwrap();
        assert_eq!((j.state, j.runs), (JobState::Done, 2), "{j:?}");
    }
}
