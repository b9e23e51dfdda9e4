#!/usr/bin/env python3
"""nibabel's side of `voxplan bench decode`: load each file to float32 as TorchIO does
(`nib.load(f).get_fdata(dtype=np.float32)`), single-threaded, median of N runs. Reports wall time and the
thread's CPU time (`time.thread_time`), the same two clocks as the Rust side, so figures taken on a shared
machine can be compared per core.

Usage: python3 benches/nibabel_load.py [--repeats N] FILE...
"""
import argparse
import os
import statistics
import time

import nibabel as nib
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    print(
        f"{'nibabel ' + nib.__version__:<24} {'raw MB':>7} {'f32 ms':>8} {'f32 cpu':>8} {'MB/s cpu':>8}"
        f" {'native ms':>9} {'nat. cpu':>8}"
    )
    tot = [0.0] * 5
    for f in args.files:
        f32, f32_cpu, native, native_cpu = [], [], [], []
        for _ in range(max(1, args.repeats)):
            t, c = time.perf_counter(), time.thread_time()
            a = nib.load(f).get_fdata(dtype=np.float32)
            f32.append(time.perf_counter() - t)
            f32_cpu.append(time.thread_time() - c)
            del a
            t, c = time.perf_counter(), time.thread_time()
            b = np.asanyarray(nib.load(f).dataobj)
            native.append(time.perf_counter() - t)
            native_cpu.append(time.thread_time() - c)
        mb = b.nbytes / 1e6
        row = [mb] + [statistics.median(v) * 1e3 for v in (f32, f32_cpu, native, native_cpu)]
        tot = [x + y for x, y in zip(tot, row)]
        print(
            f"{os.path.basename(f):<24} {mb:>7.2f} {row[1]:>8.1f} {row[2]:>8.1f} {mb / row[2] * 1e3:>8.0f}"
            f" {row[3]:>9.1f} {row[4]:>8.1f}"
        )
        del b
    if len(args.files) > 1:
        print(
            f"{'total':<24} {tot[0]:>7.2f} {tot[1]:>8.1f} {tot[2]:>8.1f} {tot[0] / tot[2] * 1e3:>8.0f}"
            f" {tot[3]:>9.1f} {tot[4]:>8.1f}"
        )


if __name__ == "__main__":
    main()
