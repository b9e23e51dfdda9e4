#!/usr/bin/env python3
"""Odd and broken NIfTI files, and how nibabel and `voxplan inspect` treat each.

Every case starts from an image written by nibabel and then has header bytes patched with `struct` at the
offsets of nifti1.h / nifti2.h (or its files cut, concatenated, renamed). For each case the script records
nibabel's behaviour (`nib.load` + `get_fdata`: shape, affine, statistics, or the exception) and voxplan's
(`inspect --json` and `inspect --json --header-only`: exit status, output, stderr) and classifies it:

  agree          both load and agree on shape, affine and statistics
  both-reject    nibabel raises, voxplan exits 2 (bad input, docs/jobs.md) with a one-line error naming the file
  DIFFER         both load but disagree on values
  V-REJECTS      nibabel loads, voxplan refuses (a bug unless docs/nifti.md lists it as deliberate)
  V-ACCEPTS      nibabel raises, voxplan loads
  PANIC          voxplan panicked, was killed by a signal, timed out or exited with a code other than 0 or
                 2 (always a bug: a broken file is bad input, exit 2, never "any other failure", exit 1)
  BAD-ERROR      voxplan failed without naming the file or with more than one line
  deliberate     a V-REJECTS / V-ACCEPTS / DIFFER that docs/nifti.md lists as a deliberate difference
                 (DELIBERATE below); the exit status is 1 only for the others

Usage: python3 scripts/nifti_oddities.py [--voxplan target/debug/voxplan] [--only SUBSTRING] [--json OUT]
The module's `cases(dir)` is also used by scripts/nibabel-crosscheck.py for the representative cases.
"""
import argparse
import gzip
import json
import logging
import os
import resource
import struct
import subprocess
import sys

# `voxplan`'s exit code for bad input (src/exit.rs; the table in README and `voxplan --help`).
EXIT_BAD_INPUT = 2
import tempfile
import warnings

import nibabel as nib
import numpy as np

# NIfTI-1 field offsets and struct formats (nifti1.h).
N1 = {
    "sizeof_hdr": (0, "i"), "dim": (40, "8h"), "intent_p1": (56, "f"), "intent_code": (68, "h"),
    "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim": (76, "8f"), "vox_offset": (108, "f"),
    "scl_slope": (112, "f"), "scl_inter": (116, "f"), "xyzt_units": (123, "B"), "cal_max": (124, "f"),
    "cal_min": (128, "f"), "glmax": (140, "i"), "glmin": (144, "i"), "qform_code": (252, "h"),
    "sform_code": (254, "h"), "quatern": (256, "3f"), "qoffset": (268, "3f"), "srow_x": (280, "4f"),
    "srow_y": (296, "4f"), "srow_z": (312, "4f"), "magic": (344, "4s"), "extender": (348, "4B"),
    "origin": (253, "5h"),  # SPM Analyze only (overlaps qform_code in NIfTI)
}
# NIfTI-2 field offsets (nifti2.h).
N2 = {
    "sizeof_hdr": (0, "i"), "magic": (4, "8s"), "datatype": (12, "h"), "bitpix": (14, "h"),
    "dim": (16, "8q"), "pixdim": (104, "8d"), "vox_offset": (168, "q"), "scl_slope": (176, "d"),
    "scl_inter": (184, "d"), "qform_code": (344, "i"), "sform_code": (348, "i"), "quatern": (352, "3d"),
    "qoffset": (376, "3d"), "srow_x": (400, "4d"), "srow_y": (432, "4d"), "srow_z": (464, "4d"),
    "xyzt_units": (500, "i"), "intent_code": (504, "i"), "extender": (540, "4B"),
}

# Disagreements docs/nifti.md lists as deliberate: (status, case-name substrings, reason).
DELIBERATE = [
    ("V-REJECTS", ("dim0=0", "dim2=0", "dim0 0"), "no voxels (a dim of 0): nothing to train on"),
    ("V-REJECTS", ("dim0=8", "dim0=-1", "dim0=-3"), "dim[0] outside 1..7 (nibabel's result is an accident of its byte-order guess)"),
    ("V-REJECTS", ("pixdim1=nan", "pixdim1=inf", "b=nan", "qoffset=nan", "srow-nan,code1", "srow-inf"),
     "the affine would hold NaN/Inf"),
    ("V-REJECTS", ("vox_offset=0", "vox_offset 0"), "vox_offset inside the header of a single file (header bytes as voxels)"),
    ("V-REJECTS", ("(5, 6, 7, 1, 3)", "(5, 6, 7, 2, 2)"), "5-D vectors per voxel: unsupported for training"),
    ("V-ACCEPTS", (".nii.gz not gzip", "gzip named .nii"), "compression is detected by content, not by the suffix"),
    ("V-ACCEPTS", ("gz trailing garbage",), "bytes after the voxels are not read (nibabel rejects only files under ~1 KiB)"),
    ("V-ACCEPTS", (".img.gz",), "either member of a pair may be gzipped independently"),
    ("V-ACCEPTS", ("unknown suffix",), "any file name is read, the magic deciding single file or pair"),
    ("DIFFER", ("scl 3e+38",), "voxels are float32: scaled values beyond ±3.4e38 become ±inf"),
]

AFFINE_ATOL = 1e-4
STAT_RTOL = 1e-5
logging.getLogger("nibabel").setLevel(logging.CRITICAL)  # its header fix-up notes, not results


def patch(data, field, value, version=1, big=False, index=None):
    """Returns `data` with header `field` (or element `index` of it) overwritten."""
    table = N1 if version == 1 else N2
    off, fmt = table[field]
    order = ">" if big else "<"
    b = bytearray(data)
    if index is not None:
        elem = fmt[-1]
        size = struct.calcsize(order + elem)
        struct.pack_into(order + elem, b, off + index * size, value)
    else:
        vals = value if isinstance(value, (list, tuple)) else (value,)
        struct.pack_into(order + fmt, b, off, *vals)
    return bytes(b)


def field(data, name, version=1, big=False):
    off, fmt = (N1 if version == 1 else N2)[name]
    out = struct.unpack_from((">" if big else "<") + fmt, data, off)
    return out if len(out) > 1 else out[0]


def nii_bytes(img, name="x.nii"):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, name)
        nib.save(img, p)
        return {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}


def base(version=1, big=False, dtype=np.int16, shape=(5, 6, 7), affine=None, pair=False, klass=None):
    """Bytes of a nibabel-written image: a ramp, sform and qform set (codes 1), voxels at 352 / 544."""
    n = int(np.prod(shape))
    data = (np.arange(n) % 251 - 40).reshape(shape, order="F").astype(dtype)
    if affine is None:
        affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 20], [0, 0, 4.0, -30], [0, 0, 0, 1]])
    if klass is None:
        klass = {(1, False): nib.Nifti1Image, (2, False): nib.Nifti2Image,
                 (1, True): nib.Nifti1Pair, (2, True): nib.Nifti2Pair}[(version, pair)]
    hdr = klass.header_class(endianness=">" if big else "<")
    img = klass(data, affine, header=hdr)
    img.set_data_dtype(dtype)
    if hasattr(img.header, "set_qform"):
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
    files = nii_bytes(img, "x.hdr" if pair else "x.nii")
    return files


class Case:
    def __init__(self, name, files, main=None, note=""):
        self.name, self.files, self.note = name, files, note
        self.main = main or next(iter(files))


def single(name, data, fname="x.nii", note=""):
    return Case(name, {fname: data}, fname, note)


def gz(b):
    return gzip.compress(b, compresslevel=1)


def extension(esize, ecode, content=b"", big=False):
    o = ">" if big else "<"
    body = content.ljust(max(esize - 8, 0), b"\0")[: max(esize - 8, 0)]
    return struct.pack(o + "ii", esize, ecode) + body


def cases():
    out = []
    for version in (1, 2):
        for big in (False, True):
            tag = f"n{version}{'be' if big else 'le'}"
            b = base(version, big)["x.nii"]
            hs = 352 if version == 1 else 544
            p = lambda d, f, v, i=None: patch(d, f, v, version, big, i)  # noqa: E731
            dim = list(field(b, "dim", version, big))
            out.append(single(f"{tag}/plain", b))
            out.append(single(f"{tag}/plain.gz", gz(b), "x.nii.gz"))
            # --- dims
            for d0 in (0, 8, -1, -3):
                out.append(single(f"{tag}/dim0={d0}", p(b, "dim", d0, 0)))
            for v in (0, -6):
                out.append(single(f"{tag}/dim2={v}", p(b, "dim", v, 2)))
            out.append(single(f"{tag}/dim0=3,dim4=5", p(b, "dim", 5, 4)))
            garbage = [3] + dim[1:4] + [-3, 0, 999, 32767]
            out.append(single(f"{tag}/dims-beyond-rank-garbage", p(b, "dim", garbage)))
            out.append(single(f"{tag}/dim0=2 (2-D view of 3-D data)", p(b, "dim", 2, 0)))
            out.append(single(f"{tag}/dim0=4,dim4=1", p(p(b, "dim", 4, 0), "dim", 1, 4)))
            out.append(single(f"{tag}/dim0=7,all-unit-tail", p(b, "dim", [7] + dim[1:4] + [1, 1, 1, 1])))
            out.append(single(f"{tag}/dim0=5,dim5=3", p(b, "dim", [5] + dim[1:4] + [1, 3, 1, 1])))
            out.append(single(f"{tag}/dim0=6", p(b, "dim", [6] + dim[1:4] + [1, 1, 2, 1])))
            if version == 2:
                out.append(single(f"{tag}/dim1=2^40", p(b, "dim", 2**40, 1)))
                out.append(single(f"{tag}/dims-overflow", p(b, "dim", [3, 2**31, 2**31, 2**31, 1, 1, 1, 1])))
            else:
                out.append(single(f"{tag}/dims-32767^3", p(b, "dim", [3, 32767, 32767, 32767, 1, 1, 1, 1])))
            # --- pixdim / qfac (qform only, and base affine)
            q = p(b, "sform_code", 0)
            nb = p(q, "qform_code", 0)
            for v in (-2.0, 0.0, float("nan"), float("inf")):
                out.append(single(f"{tag}/qform/pixdim1={v}", p(q, "pixdim", v, 1)))
                out.append(single(f"{tag}/base/pixdim1={v}", p(nb, "pixdim", v, 1)))
                out.append(single(f"{tag}/sform/pixdim1={v}", p(b, "pixdim", v, 1)))
            for qfac in (0.0, 2.0, -1.0, -0.5, float("nan")):
                out.append(single(f"{tag}/qform/qfac={qfac}", p(q, "pixdim", qfac, 0)))
            out.append(single(f"{tag}/qform/pixdim3<0,qfac=-1", p(p(q, "pixdim", -4.0, 3), "pixdim", -1.0, 0)))
            # --- quaternion
            for label, bcd in (
                ("norm^2=1+1e-7", (np.sqrt(1 + 1e-7), 0.0, 0.0)),
                ("norm^2=1+1e-6", (np.sqrt(1 + 1e-6), 0.0, 0.0)),
                ("norm^2=1+1e-12", (np.sqrt(1 + 1e-12), 0.0, 0.0)),
                ("norm^2=1.5", (1.0, 0.5, 0.5)),
                ("b=nan", (float("nan"), 0.0, 0.0)),
                ("c=inf", (0.0, float("inf"), 0.0)),
                ("half-turn", (1.0, 0.0, 0.0)),
                ("unit-diag", (0.6, 0.8, 0.0)),
            ):
                out.append(single(f"{tag}/quatern {label}", p(q, "quatern", bcd)))
            out.append(single(f"{tag}/qoffset=nan", p(q, "qoffset", (float("nan"), 0.0, 0.0))))
            # --- xform codes (sform holds a different affine to see which wins)
            alt = p(b, "srow_x", (0.0, 0.0, 5.0, 1.0))
            alt = p(alt, "srow_z", (-5.0, 0.0, 0.0, 2.0))
            for code in (7, -1, 255, 5):
                out.append(single(f"{tag}/sform_code={code}", p(alt, "sform_code", code)))
                out.append(single(f"{tag}/qform_code={code} (sform 0)", p(p(alt, "sform_code", 0), "qform_code", code)))
            zero = p(p(p(b, "srow_x", (0.0,) * 4), "srow_y", (0.0,) * 4), "srow_z", (0.0,) * 4)
            out.append(single(f"{tag}/sform-all-zero,code1", zero))
            out.append(single(f"{tag}/sform-all-zero,code0", p(zero, "sform_code", 0)))
            out.append(single(f"{tag}/srow-nan,code1", p(b, "srow_y", (0.0, float("nan"), 0.0, 0.0))))
            out.append(single(f"{tag}/srow-nan,code0", p(p(b, "srow_y", (0.0, float("nan"), 0.0, 0.0)), "sform_code", 0)))
            out.append(single(f"{tag}/srow-inf,code2", p(b, "srow_x", (float("inf"), 0.0, 0.0, 0.0))))
            # --- scaling
            nan, inf = float("nan"), float("inf")
            for s, i in ((0.0, 5.0), (nan, 5.0), (inf, 5.0), (-inf, 5.0), (-2.5, 1.0), (1.0, nan), (1.0, inf),
                         (0.0, nan), (nan, nan), (2.0, 5.0), (1e-30, 0.0), (1e36, 0.0), (1.0, -inf), (1.0, 0.0), (3e38, 0.0)):
                out.append(single(f"{tag}/scl {s},{i}", p(p(b, "scl_slope", s), "scl_inter", i)))
            # --- vox_offset
            size = len(b)
            for v in (0, hs - 5, hs - 1, hs + 1, hs + 0.5, hs + 8, 1e10, size + 100, -16, hs - 16):
                if version == 2 and isinstance(v, float) and not float(v).is_integer():
                    continue
                vv = int(v) if version == 2 else v
                d = p(b, "vox_offset", vv)
                if isinstance(v, (int, float)) and hs < v < 100000 and v != size + 100:
                    d = d[:hs] + b"\0" * int(v - hs) + b[hs:]  # voxels really moved there
                out.append(single(f"{tag}/vox_offset={v}", d))
            if version == 1:
                out.append(single(f"{tag}/vox_offset=nan", p(b, "vox_offset", float("nan"))))
                out.append(single(f"{tag}/vox_offset=360 in .gz", gz(p(b, "vox_offset", 360.0)[:hs] + b"\0" * 8 + b[hs:]), "x.nii.gz"))
            # --- extensions (flag set at byte hs-4 .. hs)
            ext_at = hs - 4

            def with_ext(exts, vox):
                d = p(b, "vox_offset", vox if version == 1 else int(vox))
                d = d[:ext_at] + b"\x01\0\0\0" + exts
                d = d + b"\0" * (int(vox) - len(d))
                return d[: int(vox)] + b[hs:]

            o = ">" if big else "<"
            out.append(single(f"{tag}/ext flag, no room", b[:ext_at] + b"\x01\0\0\0" + b[hs:]))
            out.append(single(f"{tag}/ext ok esize16", with_ext(extension(16, 6, b"hello", big), hs + 16)))
            out.append(single(f"{tag}/ext ok esize32 unknown code", with_ext(extension(32, 9999, b"x" * 20, big), hs + 32)))
            out.append(single(f"{tag}/ext esize20 (not x16)", with_ext(extension(20, 6, b"abc", big), hs + 32)))
            out.append(single(f"{tag}/ext esize0", with_ext(struct.pack(o + "ii", 0, 6), hs + 16)))
            out.append(single(f"{tag}/ext esize-8", with_ext(struct.pack(o + "ii", -8, 6), hs + 16)))
            out.append(single(f"{tag}/ext esize8 empty", with_ext(struct.pack(o + "ii", 8, 6) + b"\0" * 8, hs + 16)))
            out.append(single(f"{tag}/ext esize8 then zeros", with_ext(struct.pack(o + "ii", 8, 6), hs + 32)))
            out.append(single(f"{tag}/ext esize overruns vox_offset", with_ext(struct.pack(o + "ii", 1000, 6), hs + 16)))
            out.append(single(f"{tag}/ext esize beyond file", with_ext(struct.pack(o + "ii", 10**8, 6), hs + 16)))
            out.append(single(f"{tag}/ext esize16 then garbage", with_ext(extension(16, 6, b"a", big) + struct.pack(o + "ii", 3, 6), hs + 32)))
            out.append(single(f"{tag}/ext dicom garbage", with_ext(extension(32, 2, b"\x01\x02garbage", big), hs + 32)))
            out.append(single(f"{tag}/ext in .gz esize0", gz(with_ext(struct.pack(o + "ii", 0, 6), hs + 16)), "x.nii.gz"))
            # --- magic
            if version == 1:
                out.append(single(f"{tag}/magic ni1 in .nii", p(b, "magic", b"ni1\0")))
                out.append(single(f"{tag}/magic ni1 in .nii, vox_offset 0", p(p(b, "magic", b"ni1\0"), "vox_offset", 0.0)))
                out.append(single(f"{tag}/magic garbage", p(b, "magic", b"xyz\0")))
                out.append(single(f"{tag}/magic n+1 no NUL", p(b, "magic", b"n+1 ")))
                out.append(single(f"{tag}/magic N+1", p(b, "magic", b"N+1\0")))
                out.append(single(f"{tag}/sizeof_hdr=0 with magic", p(b, "sizeof_hdr", 0)))
                out.append(single(f"{tag}/sizeof_hdr=540 with n+1", p(b, "sizeof_hdr", 540)))
            else:
                out.append(single(f"{tag}/magic ni2 in .nii", p(b, "magic", b"ni2\0\r\n\x1a\n")))
                out.append(single(f"{tag}/eol_check zero", p(b, "magic", b"n+2\0\0\0\0\0")))
                out.append(single(f"{tag}/eol_check garbage", p(b, "magic", b"n+2\0\r\r\x1a\n")))
                out.append(single(f"{tag}/magic garbage", p(b, "magic", b"xyz\0\r\n\x1a\n")))
                out.append(single(f"{tag}/sizeof_hdr=0", p(b, "sizeof_hdr", 0)))
            # --- datatype / bitpix
            out.append(single(f"{tag}/bitpix=8 for int16", p(b, "bitpix", 8)))
            out.append(single(f"{tag}/bitpix=0", p(b, "bitpix", 0)))
            for code in (0, 3, 1, 32, 128, 1536, 1792, 2048, 2304, -4):
                out.append(single(f"{tag}/datatype={code}", p(b, "datatype", code)))
            # --- intent / units
            for ic in (1002, 1007, 2001, 9999):
                out.append(single(f"{tag}/intent_code={ic}", p(b, "intent_code", ic)))
            for u in (1, 3, 0x1F, 255):
                out.append(single(f"{tag}/xyzt_units={u}", p(b, "xyzt_units", u)))
            # --- data: truncation and compression
            out.append(single(f"{tag}/truncated by 10", b[:-10]))
            out.append(single(f"{tag}/header only", b[:hs]))
            out.append(single(f"{tag}/header minus 1", b[: hs - 5]))
            out.append(single(f"{tag}/truncated .gz (complete stream)", gz(b[:-10]), "x.nii.gz"))
            full = gz(b)
            out.append(single(f"{tag}/gz cut mid-stream", full[: len(full) // 2], "x.nii.gz"))
            out.append(single(f"{tag}/gz cut in header", full[:30], "x.nii.gz"))
            out.append(single(f"{tag}/gz trailing garbage", full + b"garbage!" * 4, "x.nii.gz"))
            out.append(single(f"{tag}/gz trailing zeros", full + b"\0" * 64, "x.nii.gz"))
            out.append(single(f"{tag}/gz extra data after voxels", gz(b + b"\x07" * 100), "x.nii.gz"))
            bad_crc = bytearray(full)
            bad_crc[-8] ^= 0xFF
            out.append(single(f"{tag}/gz bad crc", bytes(bad_crc), "x.nii.gz"))
            flip = bytearray(full)
            flip[len(flip) // 2] ^= 0x55
            out.append(single(f"{tag}/gz corrupt middle", bytes(flip), "x.nii.gz"))
            out.append(single(f"{tag}/.nii.gz not gzip", b, "x.nii.gz"))
            out.append(single(f"{tag}/gzip named .nii", full, "x.nii"))
            out.append(single(f"{tag}/extra bytes after voxels", b + b"\x09" * 100))
    # --- shapes written directly by nibabel
    rng = np.random.default_rng(3)
    shapes = [(30,), (5, 6), (10, 1, 12), (1, 1, 12), (5, 6, 7, 1), (5, 6, 7, 1, 1), (5, 6, 7, 3), (5, 6, 7, 1, 3),
              (5, 6, 7, 2, 2), (1,), (1, 1, 1), (4, 3, 2, 1, 1, 1, 1)]
    for shp in shapes:
        a = rng.integers(-100, 100, shp).astype(np.int16)
        out.append(single(f"shape {shp}", nii_bytes(nib.Nifti1Image(a, np.eye(4)))["x.nii"]))
    # --- files that are not NIfTI at all
    out.append(single("empty file", b""))
    out.append(single("empty .nii.gz", b"", "x.nii.gz"))
    out.append(single("347-byte file", base()["x.nii"][:347]))
    out.append(single("3-byte file", b"abc"))
    out.append(single("random 1000 bytes", bytes(rng.integers(0, 256, 1000, dtype=np.uint8))))
    out.append(single("gzip of garbage", gz(bytes(rng.integers(0, 256, 1000, dtype=np.uint8))), "x.nii.gz"))
    out.append(single("gzip of empty", gz(b""), "x.nii.gz"))
    out.append(single("gzip magic only", b"\x1f\x8b", "x.nii.gz"))
    # --- pairs
    for version in (1, 2):
        pr = base(version, pair=True)
        hdr, img = pr["x.hdr"], pr["x.img"]
        t = f"pair{version}"
        out.append(Case(f"{t}/ok", pr, "x.hdr"))
        out.append(Case(f"{t}/ok via .img", pr, "x.img"))
        out.append(Case(f"{t}/missing .img", {"x.hdr": hdr}, "x.hdr"))
        out.append(Case(f"{t}/.img short", {"x.hdr": hdr, "x.img": img[:-10]}, "x.hdr"))
        out.append(Case(f"{t}/.img.gz", {"x.hdr": hdr, "x.img.gz": gz(img)}, "x.hdr"))
        out.append(Case(f"{t}/.hdr.gz+.img.gz", {"x.hdr.gz": gz(hdr), "x.img.gz": gz(img)}, "x.hdr.gz"))
        hs = 352 if version == 1 else 544
        single_magic = b"n+1\0" if version == 1 else b"n+2\0\r\n\x1a\n"
        out.append(Case(f"{t}/magic n+{version} in .hdr (vox_offset 0)", {"x.hdr": patch(hdr, "magic", single_magic, version), "x.img": img}, "x.hdr"))
        h2 = patch(patch(hdr, "magic", single_magic, version), "vox_offset", hs if version == 2 else float(hs), version)
        out.append(Case(f"{t}/magic n+{version} in .hdr (vox_offset {hs})", {"x.hdr": h2, "x.img": b"\0" * hs + img}, "x.hdr"))
        out.append(Case(f"{t}/vox_offset 16 in .img", {"x.hdr": patch(hdr, "vox_offset", 16 if version == 2 else 16.0, version), "x.img": b"\0" * 16 + img}, "x.hdr"))
        out.append(Case(f"{t}/hdr with trailing ext", {"x.hdr": hdr + b"\x01\0\0\0" + extension(16, 6, b"hi"), "x.img": img}, "x.hdr"))
        out.append(Case(f"{t}/hdr with broken ext", {"x.hdr": hdr + b"\x01\0\0\0" + struct.pack("<ii", 40, 6), "x.img": img}, "x.hdr"))
    # --- Analyze 7.5 (no magic) written by nibabel
    for klass, label in ((nib.AnalyzeImage, "analyze"), (nib.Spm99AnalyzeImage, "spm99"), (nib.Spm2AnalyzeImage, "spm2")):
        for big in (False, True):
            a = (np.arange(5 * 6 * 7) % 200).reshape((5, 6, 7), order="F").astype(np.int16)
            hdr = klass.header_class(endianness=">" if big else "<")
            img = klass(a, np.diag([2.0, 3.0, 4.0, 1.0]), header=hdr)
            pr = nii_bytes(img, "x.hdr")
            out.append(Case(f"{label}{'-be' if big else ''}/as written", pr, "x.hdr"))
            out.append(Case(f"{label}{'-be' if big else ''}/via .img", {k: v for k, v in pr.items() if k != "x.mat"}, "x.img"))
        pr = {k: v for k, v in nii_bytes(nib.AnalyzeImage(a, np.eye(4)), "x.hdr").items()}
        h = pr["x.hdr"]
        out.append(Case(f"{label}/origin (3,4,5)", {"x.hdr": patch(h, "origin", (3, 4, 5, 0, 0)), "x.img": pr["x.img"]}, "x.hdr"))
        out.append(Case(f"{label}/origin outside", {"x.hdr": patch(h, "origin", (-30, 4, 5, 0, 0)), "x.img": pr["x.img"]}, "x.hdr"))
        out.append(Case(f"{label}/pixdim -2", {"x.hdr": patch(h, "pixdim", -2.0, index=1), "x.img": pr["x.img"]}, "x.hdr"))
        out.append(Case(f"{label}/funused1 slope 2", {"x.hdr": patch(h, "scl_slope", 2.0), "x.img": pr["x.img"]}, "x.hdr"))
        out.append(Case(f"{label}/slope 2 inter 3", {"x.hdr": patch(patch(h, "scl_slope", 2.0), "scl_inter", 3.0), "x.img": pr["x.img"]}, "x.hdr"))
        gl = patch(patch(h, "glmax", 100), "glmin", 0)
        gl = patch(patch(gl, "cal_max", 50.0), "cal_min", 10.0)
        out.append(Case(f"{label}/gl-cal scaling", {"x.hdr": gl, "x.img": pr["x.img"]}, "x.hdr"))
        out.append(Case(f"{label}/datatype int8 (not Analyze)", {"x.hdr": patch(h, "datatype", 256), "x.img": pr["x.img"]}, "x.hdr"))
        out.append(Case(f"{label}/.nii name no magic", {"x.nii": h + b"\0" * 4 + pr["x.img"]}, "x.nii"))
        img = pr["x.img"]
        nan = float("nan")
        for name, hh in (
            ("slope nan", patch(h, "scl_slope", nan)),
            ("slope inf, gl-cal", patch(patch(patch(h, "scl_slope", float("inf")), "glmax", 10), "cal_max", 5.0)),
            ("cal range nan", patch(patch(h, "glmax", 10), "cal_max", nan)),
            ("2-D, dim3 garbage", patch(patch(h, "dim", 2, index=0), "dim", 0, index=3)),
            ("2-D, origin set", patch(patch(patch(h, "dim", 2, index=0), "dim", 1, index=3), "origin", (2, 2, 1, 0, 0))),
            ("garbage magic", patch(h, "magic", b"xyz\0")),
            ("n+2 magic, 348 bytes", patch(h, "magic", b"n+2\0")),
            ("sizeof_hdr 0", patch(h, "sizeof_hdr", 0)),
            ("vox_offset 16", patch(h, "vox_offset", 16.0)),
            ("vox_offset -16", patch(h, "vox_offset", -16.0)),
            ("datatype 0", patch(h, "datatype", 0)),
            ("datatype complex", patch(h, "datatype", 32)),
            ("dim0 0", patch(h, "dim", 0, index=0)),
        ):
            data = (b"\0" * 16 + img) if name == "vox_offset 16" else img
            out.append(Case(f"{label}/{name}", {"x.hdr": hh, "x.img": data}, "x.hdr"))
        out.append(Case(f"{label}/gz pair", {"x.hdr.gz": gz(h), "x.img.gz": gz(img)}, "x.hdr.gz"))
        out.append(Case(f"{label}/.mat present", {"x.hdr": h, "x.img": img, "x.mat": b"MATLAB 5.0 MAT-file"}, "x.hdr"))
        out.append(Case(f"{label}/empty .mat", {"x.hdr": h, "x.img": img, "x.mat": b""}, "x.hdr"))
        break  # the three writers give the same bytes; keep one set of patched variants
    # --- names
    b = base()["x.nii"]
    out.append(single("upper-case X.NII.GZ", gz(b), "X.NII.GZ"))
    out.append(single("unknown suffix .dat", b, "x.dat"))
    # --- the crosscheck's SKIP files, and the three .hdr files with a made-up .img of the right size
    data = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
    for n in ("row_major.dconn.nii", "analyze.hdr", "nifti1.hdr", "nifti2.hdr"):
        pth = os.path.join(data, n)
        if not os.path.exists(pth):
            continue
        raw = open(pth, "rb").read()
        out.append(Case(f"nibabel-data/{n}", {n: raw}, n))
        if n.endswith(".hdr"):
            klass = nib.Nifti2Header if n.startswith("nifti2") else nib.Nifti1Header if n.startswith("nifti1") else nib.AnalyzeHeader
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdr = klass.from_fileobj(open(pth, "rb"))
            nbytes = int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize + hdr.get_data_offset()
            fake = bytes(rng.integers(0, 256, nbytes, dtype=np.uint8))
            stem = n[: -len(".hdr")]
            out.append(Case(f"nibabel-data/{n} + made-up .img", {n: raw, stem + ".img": fake}, n))
    return out


# ---------------------------------------------------------------- evaluation


def nibabel_facts(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(path)
            shape = [int(s) for s in img.shape]
            nbytes = int(np.prod(shape)) * 8 if shape else 0
            if nbytes > 2**31:
                return {"error": f"MemoryError-guard: {shape}"}
            dt = img.get_data_dtype()
            if dt.kind == "c" or dt.fields is not None:
                return {"loads": True, "kind": "complex/RGB", "shape": shape, "class": type(img).__name__}
            f = img.get_fdata(dtype=np.float64)
            aff = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - any failure is nibabel's behaviour
        return {"error": f"{type(e).__name__}: {str(e)[:160]}"}
    while len(shape) > 1 and shape[-1] == 1:
        shape.pop()
    finite = f[~np.isnan(f)]
    return {
        "loads": True, "class": type(img).__name__, "shape": shape, "affine": aff.tolist(),
        "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None, "sum": float(finite.sum()),
        "nan_count": int(np.isnan(f).sum()),
    }


def run_voxplan(voxplan, path, header_only=False):
    cmd = [voxplan, "inspect", "--json", path] + (["--header-only"] if header_only else [])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return {"rc": "timeout", "stderr": "", "out": None}
    out = None
    if r.returncode == 0:
        try:
            out = json.loads(r.stdout)
        except json.JSONDecodeError:
            out = "unparsable"
    return {"rc": r.returncode, "stderr": r.stderr.strip(), "out": out}


def close(a, b, scale):
    if a is None or b is None:
        return a is None and b is None
    if np.isinf(a) or np.isinf(b) or np.isnan(a) or np.isnan(b):
        return a == b or (np.isnan(a) and np.isnan(b))
    return abs(a - b) <= STAT_RTOL * max(1.0, scale)


def compare(nb, v):
    problems = []
    if v["shape"] != nb["shape"]:
        problems.append(f"shape {v['shape']} != {nb['shape']}")
    va, na = np.array(v["affine"], dtype=float), np.array(nb["affine"], dtype=float)
    if not np.allclose(va, na, atol=AFFINE_ATOL, rtol=1e-6, equal_nan=True):
        problems.append(f"affine {va.tolist()} != {na.tolist()}")
    scale = max(abs(nb["min"] or 0), abs(nb["max"] or 0), 1.0)
    for k in ("min", "max", "mean"):
        if not close(v[k], nb[k], scale):
            problems.append(f"{k} {v[k]} != {nb[k]}")
    n = max(1, int(np.prod(nb["shape"])))
    if not close(v["sum"], nb["sum"], scale * n):
        problems.append(f"sum {v['sum']} != {nb['sum']}")
    if v["nan_count"] != nb["nan_count"]:
        problems.append(f"nan_count {v['nan_count']} != {nb['nan_count']}")
    return problems


def classify(case, path, nb, full, head):
    for r in (full, head):
        if r["rc"] in ("timeout",) or (isinstance(r["rc"], int) and r["rc"] not in (0, EXIT_BAD_INPUT)) or "panicked" in r["stderr"]:
            return "PANIC", f"rc={r['rc']} {r['stderr'][:300]}"
    for r in (full, head):
        if r["rc"] == EXIT_BAD_INPUT:
            lines = r["stderr"].splitlines()
            named = any(n in r["stderr"] for n in case.files) or os.path.dirname(path) in r["stderr"]
            if len(lines) != 1 or not named:
                return "BAD-ERROR", r["stderr"][:300]
    if full["rc"] == 0 and head["rc"] != 0:
        return "BAD-ERROR", "full read succeeds but --header-only fails: " + head["stderr"]
    nb_ok = "error" not in nb
    if nb_ok and nb.get("kind"):
        return ("both-reject" if full["rc"] == EXIT_BAD_INPUT else "V-ACCEPTS"), f"nibabel: {nb['kind']}; voxplan: {full['stderr'] or 'loads'}"
    if nb_ok and full["rc"] == 0:
        probs = compare(nb, full["out"])
        return ("DIFFER", "; ".join(probs)) if probs else ("agree", f"{nb['class']} {nb['shape']}")
    if nb_ok:
        return "V-REJECTS", f"nibabel {nb['class']} {nb['shape']}; voxplan: {full['stderr'][:200]}"
    if full["rc"] == 0:
        return "V-ACCEPTS", f"nibabel: {nb['error']}; voxplan shape {full['out']['shape']}"
    return "both-reject", f"nibabel: {nb['error'][:90]} | voxplan: {full['stderr'][:140]}"


def evaluate(voxplan, case, path, details=False):
    """nibabel and voxplan on the case written at `path`: (status, detail), DELIBERATE applied."""
    nb = nibabel_facts(path)
    full, head = run_voxplan(voxplan, path), run_voxplan(voxplan, path, True)
    status, detail = classify(case, path, nb, full, head)
    for st, keys, reason in DELIBERATE:
        if status == st and any(k in case.name for k in keys):
            status, detail = "deliberate", f"{st}: {reason}"
            break
    return (status, detail, nb, full, head) if details else (status, detail)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxplan", default=os.environ.get("VOXPLAN", "target/debug/voxplan"))
    ap.add_argument("--only", default="")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--quiet", action="store_true", help="print only the cases that are not agree/both-reject")
    args = ap.parse_args()
    voxplan = os.path.abspath(args.voxplan)
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    results, counts = [], {}
    with tempfile.TemporaryDirectory() as root:
        for i, case in enumerate(c for c in cases() if args.only in c.name):
            d = os.path.join(root, str(i))
            os.makedirs(d)
            for n, data in case.files.items():
                with open(os.path.join(d, n), "wb") as fh:
                    fh.write(data)
            path = os.path.join(d, case.main)
            status, detail, nb, full, head = evaluate(voxplan, case, path, details=True)
            counts[status] = counts.get(status, 0) + 1
            results.append({"case": case.name, "status": status, "detail": detail, "nibabel": nb,
                            "voxplan": {k: v for k, v in full.items()}, "header_only_rc": head["rc"],
                            "header_only_stderr": head["stderr"]})
            if not args.quiet or status not in ("agree", "both-reject", "deliberate"):
                print(f"{status:11} {case.name:<52} {detail}")
    print(f"{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    bad = sum(v for k, v in counts.items() if k not in ("agree", "both-reject", "deliberate"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
