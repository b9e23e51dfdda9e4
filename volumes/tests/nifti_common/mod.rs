//! Hand-made NIfTI bytes for the tests, written field by field from nifti1.h / nifti2.h offsets and
//! independent of the library's own encoder, so a shared misunderstanding cannot hide a bug.
#![allow(dead_code)]

use std::io::Write;

/// Every field a test may want to set; `Default` is a valid little-endian 3-D NIfTI-1 int16 image.
#[derive(Clone, Debug)]
pub struct Spec {
    pub version: u8,
    pub big_endian: bool,
    pub dim: Vec<i64>,
    pub datatype: i16,
    pub bitpix: i16,
    pub pixdim: [f64; 8],
    /// `None`: header + extender (+ extensions), i.e. the smallest valid offset.
    pub vox_offset: Option<i64>,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    /// Pair magic (`ni1`/`ni2`) instead of single-file magic.
    pub pair: bool,
    /// Raw extension records (each `esize` bytes incl. its 8-byte head); non-empty sets the extender flag.
    pub extensions: Vec<Vec<u8>>,
    /// Byte used to fill the gap between the extensions and vox_offset (non-zero catches shifted reads).
    pub gap_fill: u8,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: 1,
            big_endian: false,
            dim: vec![3, 4, 3, 2],
            datatype: 4,
            bitpix: 16,
            pixdim: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: None,
            scl_slope: 1.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 1,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            pair: false,
            extensions: Vec::new(),
            gap_fill: 0,
        }
    }
}

struct Buf {
    b: Vec<u8>,
    big: bool,
}

impl Buf {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn i16(&mut self, at: usize, v: i16) {
        self.put(at, &if self.big { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    fn i32(&mut self, at: usize, v: i32) {
        self.put(at, &if self.big { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    fn i64(&mut self, at: usize, v: i64) {
        self.put(at, &if self.big { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    fn f32(&mut self, at: usize, v: f64) {
        let v = v as f32;
        self.put(at, &if self.big { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    fn f64(&mut self, at: usize, v: f64) {
        self.put(at, &if self.big { v.to_be_bytes() } else { v.to_le_bytes() });
    }
}

impl Spec {
    pub fn header_size(&self) -> usize {
        if self.version == 1 { 348 } else { 540 }
    }

    /// Offset the voxels will start at.
    pub fn data_offset(&self) -> usize {
        match self.vox_offset {
            Some(o) => o as usize,
            None if self.pair => 0,
            None => self.header_size() + 4 + self.extensions.iter().map(Vec::len).sum::<usize>(),
        }
    }

    /// Header bytes only (348 / 540).
    pub fn header(&self) -> Vec<u8> {
        let mut h = Buf { b: vec![0u8; self.header_size()], big: self.big_endian };
        let offset = self.data_offset() as i64;
        if self.version == 1 {
            h.i32(0, 348);
            for (i, &d) in self.dim.iter().enumerate() {
                h.i16(40 + 2 * i, d as i16);
            }
            h.i16(70, self.datatype);
            h.i16(72, self.bitpix);
            for (i, &p) in self.pixdim.iter().enumerate() {
                h.f32(76 + 4 * i, p);
            }
            h.f32(108, offset as f64);
            h.f32(112, self.scl_slope);
            h.f32(116, self.scl_inter);
            h.put(148, b"hand-made test header");
            h.i16(252, self.qform_code as i16);
            h.i16(254, self.sform_code as i16);
            for i in 0..3 {
                h.f32(256 + 4 * i, self.quatern[i]);
                h.f32(268 + 4 * i, self.qoffset[i]);
                for j in 0..4 {
                    h.f32(280 + 16 * i + 4 * j, self.srow[i][j]);
                }
            }
            h.put(344, if self.pair { b"ni1\0" } else { b"n+1\0" });
        } else {
            h.i32(0, 540);
            h.put(4, if self.pair { b"ni2\0\r\n\x1a\n" } else { b"n+2\0\r\n\x1a\n" });
            h.i16(12, self.datatype);
            h.i16(14, self.bitpix);
            for (i, &d) in self.dim.iter().enumerate() {
                h.i64(16 + 8 * i, d);
            }
            for (i, &p) in self.pixdim.iter().enumerate() {
                h.f64(104 + 8 * i, p);
            }
            h.i64(168, offset);
            h.f64(176, self.scl_slope);
            h.f64(184, self.scl_inter);
            h.put(240, b"hand-made test header");
            h.i32(344, self.qform_code);
            h.i32(348, self.sform_code);
            for i in 0..3 {
                h.f64(352 + 8 * i, self.quatern[i]);
                h.f64(376 + 8 * i, self.qoffset[i]);
                for j in 0..4 {
                    h.f64(400 + 32 * i + 8 * j, self.srow[i][j]);
                }
            }
        }
        h.b
    }

    /// A complete single file: header, extender, extensions, gap, voxels.
    pub fn single_file(&self, voxels: &[u8]) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&[u8::from(!self.extensions.is_empty()), 0, 0, 0]);
        for e in &self.extensions {
            out.extend_from_slice(e);
        }
        let offset = self.data_offset();
        while out.len() < offset {
            out.push(self.gap_fill);
        }
        out.truncate(offset);
        out.extend_from_slice(voxels);
        out
    }
}

/// A NIfTI extension record: esize, ecode, content padded to a multiple of 16 bytes.
pub fn extension(code: i32, content: &[u8], big: bool) -> Vec<u8> {
    let size = (8 + content.len()).div_ceil(16) * 16;
    let mut out = Vec::with_capacity(size);
    let (s, c) = (size as i32, code);
    out.extend_from_slice(&if big { s.to_be_bytes() } else { s.to_le_bytes() });
    out.extend_from_slice(&if big { c.to_be_bytes() } else { c.to_le_bytes() });
    out.extend_from_slice(content);
    out.resize(size, 0);
    out
}

/// The NIfTI (code, bits) of a numpy-style type name.
pub fn code_of(name: &str) -> (i16, i16) {
    match name {
        "uint8" => (2, 8),
        "int8" => (256, 8),
        "uint16" => (512, 16),
        "int16" => (4, 16),
        "uint32" => (768, 32),
        "int32" => (8, 32),
        "uint64" => (1280, 64),
        "int64" => (1024, 64),
        "float32" => (16, 32),
        "float64" => (64, 64),
        other => panic!("test helper: unknown type {other}"),
    }
}

/// Stored bytes of `values` as type `name` in the requested byte order.
pub fn encode(name: &str, values: &[f64], big: bool) -> Vec<u8> {
    let mut out = Vec::new();
    macro_rules! push {
        ($t:ty) => {
            for &v in values {
                let x = v as $t;
                out.extend_from_slice(&if big { x.to_be_bytes() } else { x.to_le_bytes() });
            }
        };
    }
    match name {
        "uint8" => push!(u8),
        "int8" => push!(i8),
        "uint16" => push!(u16),
        "int16" => push!(i16),
        "uint32" => push!(u32),
        "int32" => push!(i32),
        "uint64" => push!(u64),
        "int64" => push!(i64),
        "float32" => push!(f32),
        "float64" => push!(f64),
        other => panic!("test helper: unknown type {other}"),
    }
    out
}

/// Gzip of `bytes`, as one member per chunk of `chunk` bytes (several members test multi-member reads).
pub fn gzip_members(bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in bytes.chunks(chunk.max(1)) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(part).expect("in-memory gzip");
        out.extend(e.finish().expect("in-memory gzip"));
    }
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_members(bytes, bytes.len())
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn put(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}
