//! `voxplan train` and `predict` as unattended batch processes (issue 12): what a signal leaves behind,
//! what the same command does when run again, the exit code of every kind of outcome, and log files
//! without escape sequences.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TEST_THREADS, tiny_experiment_text};

/// Three epochs of 12 steps of a tiny U-Net: long enough (a second or more on 2 cores) to be signalled
/// mid-epoch, and checkpointed after every step when `every_step` is set.
fn experiment(dir: &Path, name: &str, every_step: bool) -> String {
    write_experiment(dir, name, &experiment_text(name, every_step))
}

fn write_experiment(dir: &Path, name: &str, text: &str) -> String {
    common::write_experiment(dir, name, text).to_string_lossy().into_owned()
}

fn experiment_text(name: &str, every_step: bool) -> String {
    tiny_experiment_text(name, 3, 2, if every_step { 0 } else { 10 })
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voxplan"));
    c.args(args).env("RAYON_NUM_THREADS", TEST_THREADS).env("VOXPLAN_LOG", "warn");
    c
}

fn train_args<'a>(config: &'a str, run: &'a str) -> Vec<&'a str> {
    vec!["train", "--config", config, "--device", "cpu", "--run-dir", run]
}

fn run_to_end(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    records(run)
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

/// Waits until the run has logged `steps` step records (the child still running), or panics.
fn wait_for_steps(child: &mut Child, run: &Path, steps: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while step_losses(run).len() < steps {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {steps} steps");
        assert!(Instant::now() < deadline, "no {steps} steps within two minutes");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// The exported weights as f32 values by name.
fn weights(run: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(run.join("weights.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, t)| {
            let off = t["data_offsets"].as_array().unwrap();
            let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
            (k.clone(), data[a..b].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
        })
        .collect()
}

fn assert_same_run(a: &Path, b: &Path) {
    let (la, lb) = (step_losses(a), step_losses(b));
    assert_eq!(la.len(), 36, "3 epochs × 12 steps");
    assert_eq!(
        la.iter().map(|s| s.0).collect::<Vec<_>>(),
        lb.iter().map(|s| s.0).collect::<Vec<_>>(),
        "one record per step"
    );
    for ((step, x), (_, y)) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "step {step}: {x} vs {y}");
    }
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (name, x) in &wa {
        let diff = x.iter().zip(&wb[name]).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "{name}: weights differ by {diff}");
    }
}

#[test]
fn sigterm_checkpoints_mid_epoch_and_the_same_command_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "sigterm", false);
    let whole = tmp.path().join("whole");
    let out = run_to_end(&train_args(&config, whole.to_str().unwrap()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let run = tmp.path().join("run");
    let args = train_args(&config, run.to_str().unwrap());
    let mut child = command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_steps(&mut child, &run, 5);
    let sent = Instant::now();
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    assert_eq!(code(&out), 75, "interrupted and resumable: {}", stderr(&out));
    assert!(stderr(&out).contains("interrupted at optimizer step") && stderr(&out).contains("run the same command"));
    assert!(took < Duration::from_secs(30), "the first signal ends the run within a step: {took:?}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/last/state.json")).unwrap()).unwrap();
    let stopped_at = state["optimizer_steps"].as_u64().unwrap();
    assert!((5..36).contains(&stopped_at), "stopped mid-run at step {stopped_at}: {state}");
    assert!(records(&run).iter().any(|r| r["event"] == "interrupted"));

    // The same command again: resumes from the checkpoint, not from scratch, and ends as if never stopped.
    let again = run_to_end(&args);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("resumed from"));
    assert_same_run(&whole, &run);
    let resume = records(&run).into_iter().find(|r| r["event"] == "resume").expect("a resume event");
    assert_eq!(resume["step"].as_u64(), Some(stopped_at));

    // And once more: the run is finished, nothing is trained, the files stay as they are.
    let metrics_before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let third = run_to_end(&args);
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    assert!(String::from_utf8_lossy(&third.stdout).contains("already finished"));
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics_before);
}

/// Checkpointed after every step, a run killed with SIGKILL (no warning at all) loses at most the step in
/// progress, and its metrics keep one record per step after the resume.
#[test]
fn timed_checkpoints_make_a_sigkill_lose_at_most_a_step() {
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "sigkill", true);
    let whole = tmp.path().join("whole");
    assert_eq!(code(&run_to_end(&train_args(&config, whole.to_str().unwrap()))), 0);

    let run = tmp.path().join("run");
    let args = train_args(&config, run.to_str().unwrap());
    let mut child = command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_steps(&mut child, &run, 17);
    signal(&child, "KILL");
    let _ = child.wait();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/last/state.json")).unwrap()).unwrap();
    assert!(state["optimizer_steps"].as_u64().unwrap() >= 16, "a checkpoint at most one step old: {state}");
    let again = run_to_end(&args);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_same_run(&whole, &run);
}

/// A second signal, more than a second after the first, does not wait for the step: it exits at once with
/// 75 (no "interrupted at" report, which the graceful stop prints), and the last checkpoint is whole (the
/// same command resumes from it). A 64³ step takes seconds here, so the step is still running.
#[test]
fn a_second_signal_exits_at_once_and_the_checkpoint_stays_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let text = experiment_text("twice", true)
        .replace("patch_size = [16, 16, 16]", "patch_size = [64, 64, 64]")
        .replace("shape = [24, 24, 24]", "shape = [64, 64, 64]")
        .replace(
            r#"stages = [{ features = 4, stride = [1, 1, 1] }, { features = 8, stride = [2, 2, 2] }]"#,
            r#"stages = [{ features = 16, stride = [1, 1, 1] }, { features = 32, stride = [2, 2, 2] }]"#,
        )
        .replace("epochs = 3", "epochs = 1")
        .replace("steps_per_epoch = 12", "steps_per_epoch = 3");
    let config = write_experiment(tmp.path(), "twice", &text);
    let run = tmp.path().join("run");
    let args = train_args(&config, run.to_str().unwrap());
    let mut child = command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_steps(&mut child, &run, 1);
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(1500));
    let second = Instant::now();
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 75);
    assert!(second.elapsed() < Duration::from_secs(2), "exited at once: {:?}", second.elapsed());
    assert!(!stderr(&out).contains("interrupted at optimizer step"), "not the graceful path: {}", stderr(&out));
    let state = std::fs::read_to_string(run.join("checkpoints/last/state.json")).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&state).is_ok(), "{state}");
    assert!(run.join("checkpoints/last/model.mpk").is_file());
}

/// Two signals within a second are one stop (Slurm signals every process of a job while the batch shell
/// passes the same signal on): the run still finishes its step and checkpoints.
#[test]
fn two_signals_at_once_are_one_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "double", false);
    let run = tmp.path().join("run");
    let mut child = command(&train_args(&config, run.to_str().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_steps(&mut child, &run, 3);
    signal(&child, "TERM");
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 75);
    assert!(stderr(&out).contains("interrupted at optimizer step"), "{}", stderr(&out));
    let again = run_to_end(&train_args(&config, run.to_str().unwrap()));
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(step_losses(&run).len(), 36);
}

#[test]
fn sigusr1_the_slurm_warning_also_stops_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "usr1", false);
    let run = tmp.path().join("run");
    let mut child = command(&train_args(&config, run.to_str().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_steps(&mut child, &run, 2);
    signal(&child, "USR1");
    assert_eq!(child.wait().unwrap().code(), Some(75));
    assert!(run.join("checkpoints/last/state.json").is_file());
}

#[test]
fn the_same_run_directory_with_another_experiment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "first", false);
    let run = tmp.path().join("run");
    let mut child = command(&train_args(&config, run.to_str().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_steps(&mut child, &run, 2);
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(75));
    let other = experiment(tmp.path(), "second", false);
    let out = run_to_end(&train_args(&other, run.to_str().unwrap()));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds a run of another experiment") && stderr(&out).contains("[name]"),
        "{}",
        stderr(&out)
    );
}

/// A second process on the same run directory (a requeued job whose previous run still writes its
/// checkpoint, a command started twice) waits for the first to let go, then resumes where it stopped; one
/// told not to wait gives up at once with exit 75, naming the process that holds the directory.
#[test]
fn a_second_process_on_the_same_run_directory_waits_for_the_first_then_resumes() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path(), "locked", false);
    let whole = tmp.path().join("whole");
    assert_eq!(code(&run_to_end(&train_args(&config, whole.to_str().unwrap()))), 0);

    let run = tmp.path().join("run");
    let args = train_args(&config, run.to_str().unwrap());
    let mut first = command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_steps(&mut first, &run, 3);

    let impatient = run_to_end(&[args.as_slice(), &["--wait-for-run-dir", "0"]].concat());
    assert_eq!(code(&impatient), 75, "{}", stderr(&impatient));
    let holder = format!("pid {}", first.id());
    assert!(stderr(&impatient).contains("in use by another voxplan process") && stderr(&impatient).contains(&holder));

    let mut second = command(&[args.as_slice(), &["--wait-for-run-dir", "120"]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr_pipe = second.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            if line.contains("in use by another voxplan process") {
                let _ = tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the second process says that it waits");
    assert!(first.try_wait().unwrap().is_none(), "the first run still trains while the second waits");
    signal(&first, "TERM");
    assert_eq!(first.wait().unwrap().code(), Some(75));

    let out = second.wait_with_output().unwrap();
    let second_stderr = reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{second_stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed from"));
    assert_same_run(&whole, &run);
}

/// A wait that is not a whole number of seconds is bad input (exit 2) naming the option, before anything
/// is planned or written.
#[test]
fn a_bad_wait_for_run_dir_is_refused_as_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    for bad in ["-5", "soon", "1.5"] {
        let out =
            run_to_end(&["train", "--device", "cpu", "--run-dir", run.to_str().unwrap(), "--wait-for-run-dir", bad]);
        assert_eq!(code(&out), 2, "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("--wait-for-run-dir"), "{bad}: {}", stderr(&out));
        assert!(!run.exists(), "nothing written for {bad}");
    }
}

/// Every row of the exit-code table, from a real command.
#[test]
fn each_kind_of_outcome_has_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| run_to_end(args);
    // 2: usage, a missing or bad experiment, a bad device name, the wrong class count.
    assert_eq!(code(&run(&["train", "--no-such-flag"])), 2);
    let missing = tmp.path().join("missing.toml");
    let out = run(&["train", "--config", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.toml"));
    assert_eq!(code(&run(&["train", "--device", "tpu"])), 2);
    let wrong = tmp.path().join("wrong.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/default.toml")).unwrap();
    std::fs::write(&wrong, text.replace("num_classes = 4", "num_classes = 3")).unwrap();
    assert_eq!(code(&run(&["plan", "--config", wrong.to_str().unwrap()])), 2);
    // 3: nothing fits the budget, in plan and in train.
    assert_eq!(code(&run(&["plan", "--budget", "1MiB"])), 3);
    let out =
        run(&["train", "--device", "cpu", "--budget", "1MiB", "--run-dir", tmp.path().join("r").to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    // 4: a dataset whose image is all NaN makes the first loss NaN.
    let data = tmp.path().join("nan");
    assert_eq!(
        code(&run(&["phantoms", "--out", data.to_str().unwrap(), "--cases", "2", "--shape", "24", "24", "24"])),
        0
    );
    for entry in std::fs::read_dir(data.join("imagesTr")).unwrap() {
        let path = entry.unwrap().path();
        let mut v = voxplan_volumes::nifti::read_volume(&path).unwrap();
        v.data.iter_mut().for_each(|x| *x = f32::NAN);
        voxplan_volumes::nifti::write_volume(&path, &v, voxplan_volumes::nifti::DataType::F32).unwrap();
    }
    let config = experiment_text("nan", false).replace(
        r#"source = { kind = "phantom", cases = 4, shape = [24, 24, 24], structures = 2, seed = 5 }"#,
        &format!("source = {{ kind = \"msd\", root = {:?} }}", data.to_string_lossy()),
    );
    let config = write_experiment(tmp.path(), "nan", &config.replace("num_classes = 3", "num_classes = 4"));
    let out = run(&train_args(&config, tmp.path().join("nanrun").to_str().unwrap()));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("non-finite loss"), "{}", stderr(&out));
    // 1: anything else, such as a CUDA device that is not there.
    let out = run(&["train", "--device", "cuda:99", "--run-dir", tmp.path().join("gpu").to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // The table is in --help.
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    assert!(help.contains("Exit codes:") && help.contains("75  interrupted"), "{help}");
}

#[test]
fn a_log_file_has_no_escape_sequences_and_json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        write_experiment(tmp.path(), "logs", &experiment_text("logs", false).replace("epochs = 3", "epochs = 1"));
    let out = command(&train_args(&config, tmp.path().join("a").to_str().unwrap()))
        .env("VOXPLAN_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let text = stderr(&out);
    assert!(text.contains("INFO") && !text.contains('\u{1b}'), "no escape sequences when stderr is a file: {text}");
    let mut json = command(&["--log-format", "json"]);
    let out = json
        .args(train_args(&config, tmp.path().join("b").to_str().unwrap()))
        .env("VOXPLAN_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<&str> = std::str::from_utf8(&out.stderr).unwrap().lines().collect();
    assert!(lines.len() > 3);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
}

/// `predict` stops between files on a signal (75) and, run again with --skip-existing, finishes the rest;
/// no output file is ever half written.
#[test]
fn predict_is_interrupted_between_files_and_finishes_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        write_experiment(tmp.path(), "predict", &experiment_text("predict", false).replace("epochs = 3", "epochs = 1"));
    let run = tmp.path().join("run");
    assert_eq!(code(&run_to_end(&train_args(&config, run.to_str().unwrap()))), 0);
    let inputs = tmp.path().join("inputs");
    let made =
        run_to_end(&["phantoms", "--out", inputs.to_str().unwrap(), "--cases", "40", "--shape", "40", "40", "40"]);
    assert_eq!(code(&made), 0);
    let images: PathBuf = inputs.join("imagesTr");
    let output = tmp.path().join("out");
    let args = [
        "predict",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        images.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let mut child = command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&output).map_or(0, |d| d.count()) < 2 {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no output appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("--skip-existing"), "{}", stderr(&out));
    let written = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let first = written(&output);
    assert!(first.len() < 40, "stopped before the last file: {}", first.len());
    assert!(first.iter().all(|n| !n.starts_with(".partial")), "{first:?}");
    for name in &first {
        voxplan_volumes::nifti::read_labels(&output.join(name)).unwrap();
    }
    let mut again = args.to_vec();
    again.push("--skip-existing");
    let out = run_to_end(&again);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(written(&output).len(), 40);
}
