#!/usr/bin/env bash
# Real scans for tests/real_data.rs, fetched by the project's own files and never committed: the sample spine
# CT and T2 MRI with vertebra masks shipped inside the `tptbox` wheel on PyPI (TPTBox/tests/sample_ct and
# sample_mri: int16 CT and uint16 MRI at 1.5 mm in PIR orientation, qform_code 0 / sform_code 2, masks with
# the non-consecutive values 21-23 and 5-7/105-106/205-207; about 1 MB of the 9 MB wheel).
#
# Usage: scripts/fetch-real-data.sh DEST  (writes DEST/TPTBox/tests/sample_{ct,mri}/*.nii.gz)
# Needs python3 with pip and PyPI. Fails loudly when either is missing: the test never skips.
set -euo pipefail
dest=${1:?usage: scripts/fetch-real-data.sh DEST}
version=1.1.0
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip download --quiet --no-deps --dest "$tmp" "tptbox==$version"
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/tptbox-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("TPTBox/tests/sample_") and n.endswith(".nii.gz")]
    for n in names:
        z.extract(n, sys.argv[2])
if len(names) < 6:
    sys.exit(f"{wheel}: expected the 6 sample NIfTI files, found {len(names)}")
print(f"{len(names)} files from {wheel.split('/')[-1]} in {sys.argv[2]}")
PY
