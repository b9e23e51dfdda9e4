#!/usr/bin/env python3
"""Cross-check `voxplan inspect --json` against nibabel on real files.

Files: nibabel's own test data (nibabel/tests/data, shipped in the wheel), edge cases generated here
with nibabel (big-endian, scaled, NaNs, qform-only with qfac -1, rotated sform, 4-D, NIfTI-2, .hdr/.img
pairs, multi-member gzip, vox_offset gap), the mricron templates when installed
(/usr/share/mricron/templates, `apt-get install mricron-data`), plus any paths given on the command line.

For each file nibabel can load as a real-valued image of at most 4 non-trivial dimensions, voxplan must
agree on shape (trailing unit dims dropped), affine, and min/max/mean/sum/nan_count of the scaled voxels.
Files nibabel loads but voxplan rejects must be rejected for a documented reason (complex/RGB/5-D+).

Usage: python3 scripts/nibabel-crosscheck.py [--voxplan target/debug/voxplan] [FILE...]
Exit status 1 on any disagreement. Needs: pip install nibabel numpy.
"""
import argparse
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np

AFFINE_ATOL = 1e-4
STAT_RTOL = 1e-5
# Reasons voxplan may legitimately refuse a file nibabel loads (see docs/nifti.md).
EXPECTED_REJECTIONS = ("unsupported for training",)


def generated_cases(d):
    """Edge cases written with nibabel itself, so the expected values come from an independent writer."""
    rng = np.random.default_rng(7)
    out = []

    def save(img, name):
        p = os.path.join(d, name)
        nib.save(img, p)
        out.append(p)
        return p

    a = (rng.normal(size=(17, 13, 11)) * 300).astype(np.int16)
    img = nib.Nifti1Image(a, np.diag([1.5, -2.0, 3.0, 1.0]))
    img.header.set_slope_inter(0.25, -7.0)
    save(img, "scaled_int16.nii.gz")
    be = nib.Nifti1Image(a, np.diag([1.0, 1.0, 2.5, 1.0]), header=nib.Nifti1Header(endianness=">"))
    be.set_data_dtype(np.int16)
    be.header.set_slope_inter(2.0, 1.0)
    save(be, "bigendian_scaled.nii")
    f = rng.normal(size=(9, 8, 7)).astype(np.float64)
    f[1, 2, 3] = np.nan
    f[4, 4, 4] = np.nan
    save(nib.Nifti1Image(f, np.eye(4)), "float64_nans.nii.gz")
    # qform only, third axis mirrored (qfac -1), rotated 30 degrees about z
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    aff = np.array([[c, -s, 0, 4], [s, c, 0, -3], [0, 0, -2.0, 9], [0, 0, 0, 1]])
    q = nib.Nifti1Image(rng.integers(0, 200, (6, 7, 8)).astype(np.uint8), None)
    q.header.set_qform(aff, code=1)
    q.header.set_sform(None, code=0)
    save(q, "qform_only_qfac-1.nii")
    # sform and qform disagree: sform must win
    sq = nib.Nifti1Image(rng.integers(-100, 100, (5, 6, 7)).astype(np.int8), None)
    sq.header.set_qform(np.diag([3.0, 3.0, 3.0, 1.0]), code=1)
    sq.header.set_sform(np.array([[0, 0, 2.0, 1], [-1.0, 0, 0, 2], [0, 1.5, 0, 3], [0, 0, 0, 1]]), code=2)
    save(sq, "sform_beats_qform.nii.gz")
    save(nib.Nifti1Image(rng.integers(0, 60000, (8, 9, 10, 3)).astype(np.uint16), np.eye(4)), "four_d_uint16.nii.gz")
    save(nib.Nifti1Image(rng.normal(size=(6, 5, 4, 1)).astype(np.float32), np.eye(4)), "trailing_unit_dim.nii")
    save(nib.Nifti2Image(rng.integers(-5, 5, (7, 6, 5)), np.diag([0.5, 0.5, 0.5, 1]), dtype=np.int64), "nifti2_int64.nii")
    save(nib.Nifti2Image(rng.integers(0, 9, (7, 6, 5)).astype(np.uint32), np.eye(4)), "nifti2_uint32.nii.gz")
    save(nib.Nifti1Pair(rng.normal(size=(5, 5, 5)).astype(np.float32), np.diag([2, 2, 2, 1])), "pair.hdr")
    save(nib.Nifti1Pair(rng.integers(0, 99, (5, 4, 3)).astype(np.int32), np.eye(4)), "pair_gz.hdr.gz")
    # multi-member gzip: the same file split into three gzip members
    src = save(nib.Nifti1Image(rng.integers(0, 1000, (12, 11, 10)).astype(np.int16), np.eye(4)), "single.nii")
    raw = open(src, "rb").read()
    third = len(raw) // 3
    mm = os.path.join(d, "multi_member.nii.gz")
    with open(mm, "wb") as fh:
        for part in (raw[:third], raw[third : 2 * third], raw[2 * third :]):
            fh.write(gzip.compress(part))
    out.append(mm)
    # vox_offset gap with no extensions (the mricron atlases' layout)
    gap = nib.Nifti1Image(rng.integers(0, 255, (6, 6, 6)).astype(np.uint8), np.eye(4))
    gap.header.set_data_offset(1952)
    save(gap, "vox_offset_gap.nii")
    return out


def nibabel_facts(path):
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    if np.iscomplexobj(data) or data.dtype.fields is not None:
        return None, "complex or RGB"
    shape = list(img.shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape.pop()
    if len(shape) > 4:
        return None, f"{len(shape)}-D"
    f = img.get_fdata(dtype=np.float64)
    finite = f[~np.isnan(f)]
    facts = {
        "shape": shape,
        "affine": np.asarray(img.affine, dtype=np.float64),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "sum": float(finite.sum()),
        "nan_count": int(np.isnan(f).sum()),
    }
    return facts, None


def close(a, b, scale):
    if a is None or b is None:
        return a is None and b is None
    if np.isinf(a) or np.isinf(b):
        return a == b
    return abs(a - b) <= STAT_RTOL * max(1.0, scale)


def check(voxplan, path):
    try:
        facts, why_not = nibabel_facts(path)
    except Exception as e:  # nibabel itself refuses: not a comparison
        return "skip", f"nibabel cannot load it ({type(e).__name__}: {str(e)[:80]})"
    run = subprocess.run([voxplan, "inspect", "--json", path], capture_output=True, text=True)
    if facts is None:
        if run.returncode != 0 and any(r in run.stderr for r in EXPECTED_REJECTIONS):
            return "ok", f"rejected as expected ({why_not})"
        return "fail", f"nibabel sees {why_not}; voxplan: rc={run.returncode} {run.stderr.strip()[:120]}"
    if run.returncode != 0:
        return "fail", f"voxplan failed: {run.stderr.strip()[:200]}"
    v = json.loads(run.stdout)
    problems = []
    if v["shape"] != facts["shape"]:
        problems.append(f"shape {v['shape']} != {facts['shape']}")
    if not np.allclose(np.array(v["affine"]), facts["affine"], atol=AFFINE_ATOL, rtol=1e-6):
        problems.append(f"affine {v['affine']} != {facts['affine'].tolist()}")
    scale = max(abs(facts["min"] or 0), abs(facts["max"] or 0), 1.0)
    for k in ("min", "max", "mean"):
        if not close(v[k], facts[k], scale):
            problems.append(f"{k} {v[k]} != {facts[k]}")
    n = max(1, int(np.prod(facts["shape"])))
    if not close(v["sum"], facts["sum"], scale * n):
        problems.append(f"sum {v['sum']} != {facts['sum']}")
    if v["nan_count"] != facts["nan_count"]:
        problems.append(f"nan_count {v['nan_count']} != {facts['nan_count']}")
    detail = f"{v['datatype']} {v['endianness']}-endian NIfTI-{v['nifti_version']} {v['shape']} {v['orientation']}"
    return ("fail", "; ".join(problems)) if problems else ("ok", detail)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxplan", default=os.environ.get("VOXPLAN", "target/debug/voxplan"))
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if not shutil.which(args.voxplan) and not os.path.isfile(args.voxplan):
        sys.exit(f"voxplan binary not found at {args.voxplan} (cargo build --bin voxplan, or --voxplan PATH)")
    data = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
    files = sorted(glob.glob(os.path.join(data, "*.nii")) + glob.glob(os.path.join(data, "*.nii.gz")))
    files += sorted(glob.glob(os.path.join(data, "*.hdr")) + glob.glob(os.path.join(data, "*.hdr.gz")))
    files += sorted(glob.glob("/usr/share/mricron/templates/*.nii.gz"))
    files += args.files
    counts = {"ok": 0, "fail": 0, "skip": 0}
    with tempfile.TemporaryDirectory() as d:
        for path in files + generated_cases(d):
            status, detail = check(args.voxplan, path)
            counts[status] += 1
            print(f"{status.upper():4} {os.path.basename(path):<40} {detail}")
    print(f"nibabel {nib.__version__}: {counts['ok']} agree, {counts['fail']} disagree, {counts['skip']} skipped")
    sys.exit(1 if counts["fail"] else 0)


if __name__ == "__main__":
    main()
