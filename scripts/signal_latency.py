#!/usr/bin/env python3
"""How long `voxplan train` takes to exit after a SIGTERM (docs/jobs.md): starts a run, waits until it has
logged --steps optimizer steps, sends SIGTERM at a random point of the next step, and times the exit (the
rest of the step in progress, then the checkpoint). Prints one line per round.

Usage: python3 scripts/signal_latency.py [--config FILE] [--steps N] [--rounds R] [--voxplan PATH]
"""
import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import time


def steps_logged(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if '"kind":"step"' in l]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--voxplan", default="target/release/voxplan")
    args = ap.parse_args()
    rng = random.Random(1)
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run = os.path.join(tmp, "run")
            cmd = [args.voxplan, "train", "--device", "cpu", "--run-dir", run]
            if args.config:
                cmd += ["--config", args.config]
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=dict(os.environ, VOXPLAN_LOG="warn"))
            metrics = os.path.join(run, "metrics.jsonl")
            while len(steps_logged(metrics)) < args.steps:
                if child.poll() is not None:
                    raise SystemExit(f"the run ended before {args.steps} steps: {child.stderr.read().decode()}")
                time.sleep(0.005)
            last = steps_logged(metrics)[-1]
            step_s = 2.0 / max(last["samples_per_s"], 1e-9) if "samples_per_s" in last else 0.0
            # A random point inside the next step.
            time.sleep(rng.uniform(0.0, step_s))
            sent = time.perf_counter()
            child.send_signal(signal.SIGTERM)
            code = child.wait()
            took = time.perf_counter() - sent
            state = json.load(open(os.path.join(run, "checkpoints", "last", "state.json")))
            print(f"round {r + 1}: exit {code} after {took:.2f} s; step ≈ {step_s:.2f} s; "
                  f"checkpoint at optimizer step {state['optimizer_steps']}")


if __name__ == "__main__":
    main()
