#!/usr/bin/env python3
"""nibabel's side of `voxplan bench decode`: load each file to float32 as TorchIO does
(`nib.load(f).get_fdata(dtype=np.float32)`), single-threaded, median of N runs.

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
    print(f"{'nibabel ' + nib.__version__:<28} {'raw MB':>9} {'f32 ms':>11} {'f32 MB/s':>10} {'native ms':>10}")
    tot_f32 = tot_native = tot_mb = 0.0
    for f in args.files:
        f32, native = [], []
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            a = nib.load(f).get_fdata(dtype=np.float32)
            f32.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = np.asanyarray(nib.load(f).dataobj)
            native.append(time.perf_counter() - t)
        mb = b.nbytes / 1e6
        m32, mnat = statistics.median(f32) * 1e3, statistics.median(native) * 1e3
        tot_f32, tot_native, tot_mb = tot_f32 + m32, tot_native + mnat, tot_mb + mb
        print(f"{os.path.basename(f):<28} {mb:>9.2f} {m32:>11.1f} {mb / m32 * 1e3:>10.0f} {mnat:>10.1f}")
        del a, b
    if len(args.files) > 1:
        print(f"{'total':<28} {tot_mb:>9.2f} {tot_f32:>11.1f} {tot_mb / tot_f32 * 1e3:>10.0f} {tot_native:>10.1f}")


if __name__ == "__main__":
    main()
