#!/usr/bin/env python3
"""nibabel's side of the `voxplan dataset check` benchmark (docs/benchmarks.md): the same checks on an
nnU-Net v2 dataset, written as a nibabel user would (nnU-Net's verify_dataset_integrity does the same per
case with SimpleITK): every header; image and label shape and affine (1e-3 mm); the label map's values and
their counts (np.unique); each image as float32 (get_fdata), its NaN/Inf count and foreground statistics.
Cases are spread over --processes worker processes, as nnU-Net's check spreads them over a Pool.

Usage: python3 benches/nibabel_check.py DATASET [--processes N]
"""
import argparse
import json
import multiprocessing
import os
import time

import nibabel as nib
import numpy as np


def check_case(args):
    root, case, channels, ending, declared = args
    problems = []
    label = nib.load(os.path.join(root, "labelsTr", case + ending))
    lab = np.asanyarray(label.dataobj)
    values, counts = np.unique(lab, return_counts=True)
    undeclared = [int(v) for v in values if int(v) not in declared]
    if undeclared:
        problems.append(f"{case}: undeclared {undeclared}")
    foreground = lab != 0
    for c in range(channels):
        img = nib.load(os.path.join(root, "imagesTr", f"{case}_{c:04d}{ending}"))
        if img.shape[:3] != label.shape[:3] or not np.allclose(img.affine, label.affine, atol=1e-3):
            problems.append(f"{case}_{c:04d}: grid differs from the label")
        data = img.get_fdata(dtype=np.float32)
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            problems.append(f"{case}_{c:04d}: {bad} non-finite voxels")
        fg = data[foreground]
        _ = (float(fg.mean()) if fg.size else 0.0, float(fg.std()) if fg.size else 0.0)
    return problems, dict(zip(values.tolist(), counts.tolist()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args()
    started = time.perf_counter()
    meta = json.load(open(os.path.join(args.dataset, "dataset.json")))
    ending = meta.get("file_ending", ".nii.gz")
    declared = set(int(v) for v in meta["labels"].values())
    channels = len(meta["channel_names"])
    cases = sorted(f[: -len(ending)] for f in os.listdir(os.path.join(args.dataset, "labelsTr")) if f.endswith(ending))
    jobs = [(args.dataset, c, channels, ending, declared) for c in cases]
    if args.processes > 1:
        with multiprocessing.Pool(args.processes) as pool:
            results = pool.map(check_case, jobs)
    else:
        results = [check_case(j) for j in jobs]
    problems = [p for r, _ in results for p in r]
    wall = time.perf_counter() - started
    print(f"nibabel {nib.__version__}: {len(cases)} cases, {len(problems)} problems, {wall:.1f} s wall "
          f"on {args.processes} process(es)")


if __name__ == "__main__":
    main()
