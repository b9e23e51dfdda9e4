//! Stored voxels to scaled `f32` (images) or checked `u16` (label maps) in one pass, in place.
//!
//! The decoder puts the raw bytes at the *end* of the `Vec` that becomes the output, then this pass walks
//! forward converting chunk by chunk: each chunk is copied out before its outputs are written, and the
//! writes never reach bytes not yet read (output element i of width `W` ends at byte W(i+1), its input
//! starts at `start + size·i`, and `start ≥ (W − size)·n`). No second buffer: peak memory is the output
//! itself, against about three copies in the `nifti` crate.
//!
//! Label maps get their own output type because training reads them as `u16`: converting a BraTS label
//! map to a 36 MB `f32` volume only to check and narrow it again cost 16 ms more than the inflation itself.

use super::datatype::DataType;
use super::raw::Endian;

/// Voxels converted per chunk: large enough to vectorise, small enough to stay in L1.
const CHUNK: usize = 256;

/// Where the raw voxels sit in a byte buffer and how to turn them into `f32`s.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub datatype: DataType,
    pub endian: Endian,
    pub slope: f64,
    pub inter: f64,
}

/// A voxel of a label map that is not a class index: its position and its value after scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadLabel {
    pub index: usize,
    pub value: f32,
}

/// How many outputs of `width` bytes a buffer must hold to fit `n` of them and, at its end, `n` stored
/// values of `size` bytes plus `lead` bytes that precede them (header bytes of a gzip stream inflated along
/// with the voxels).
pub fn buffer_units(n: usize, size: usize, lead: usize, width: usize) -> Option<usize> {
    let out = n.checked_mul(width)?;
    let stored = n.checked_mul(size)?;
    let bytes = out.max(stored).checked_add(lead)?;
    Some(bytes.div_ceil(width))
}

/// Converts the `n` stored values occupying the last `n·size` bytes of `buf` into the first `n` floats,
/// then truncates `buf` to them.
pub fn convert_tail_in_place(mut buf: Vec<f32>, n: usize, layout: Layout) -> Vec<f32> {
    convert_tail_slice(&mut buf, n, layout);
    buf.truncate(n);
    shrink_slack(buf, n)
}

/// [`convert_tail_in_place`] on a slice (a region of a larger buffer): afterwards `buf[..n]` holds the floats.
pub fn convert_tail_slice(buf: &mut [f32], n: usize, layout: Layout) {
    let start = buf.len() * 4 - n * layout.datatype.size();
    debug_assert!(start >= (4usize.saturating_sub(layout.datatype.size())) * n);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
    dispatch(bytes, start, n, layout, |bytes: &mut [u8], done: usize, values: &[f32]| {
        bytes[done * 4..(done + values.len()) * 4].copy_from_slice(bytemuck::cast_slice(values));
        true
    });
}

/// Converts the `n` stored values at the end of `buf` into the first `n` class indices, checking each: a
/// label is the value after scaling (computed exactly as [`convert_tail_in_place`] does) when that is an
/// integer in `0..=65535`. Stops at the first voxel that is not.
pub fn labels_tail_in_place(mut buf: Vec<u16>, n: usize, layout: Layout) -> Result<Vec<u16>, BadLabel> {
    let start = buf.len() * 2 - n * layout.datatype.size();
    debug_assert!(start >= (2usize.saturating_sub(layout.datatype.size())) * n);
    let scaled = layout.slope != 1.0 || layout.inter != 0.0;
    let mut bad = None;
    {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        let swap = layout.endian != Endian::NATIVE;
        // Real label maps are unscaled 8/16-bit integers: checked as integers, no float round trip (the
        // float path below runs ~5× slower; it serves float, wide-integer and scaled label maps).
        match (layout.datatype, scaled) {
            (DataType::U8, false) => small_int_labels::<1>(bytes, start, n, |b| i32::from(b[0]), &mut bad),
            (DataType::I8, false) => small_int_labels::<1>(bytes, start, n, |b| i32::from(b[0] as i8), &mut bad),
            (DataType::U16, false) if swap => {
                small_int_labels::<2>(bytes, start, n, |b| i32::from(u16::from_ne_bytes([b[1], b[0]])), &mut bad)
            }
            (DataType::U16, false) => {
                small_int_labels::<2>(bytes, start, n, |b| i32::from(u16::from_ne_bytes(b)), &mut bad)
            }
            (DataType::I16, false) if swap => {
                small_int_labels::<2>(bytes, start, n, |b| i32::from(i16::from_ne_bytes([b[1], b[0]])), &mut bad)
            }
            (DataType::I16, false) => {
                small_int_labels::<2>(bytes, start, n, |b| i32::from(i16::from_ne_bytes(b)), &mut bad)
            }
            _ => dispatch(bytes, start, n, layout, |bytes: &mut [u8], done: usize, values: &[f32]| {
                let mut labels = [0u16; CHUNK];
                let mut all_ok = true;
                for (l, &v) in labels.iter_mut().zip(values) {
                    // Saturating cast: NaN → 0, out of range → 0 or 65535; only a class index survives the
                    // round trip unchanged (this is `fract() == 0 && 0 ≤ v ≤ 65535`, without a libm call).
                    *l = v as u16;
                    all_ok &= f32::from(*l) == v;
                }
                if !all_ok {
                    let i = values.iter().position(|&v| f32::from(v as u16) != v).unwrap_or(0);
                    bad = Some(BadLabel { index: done + i, value: values[i] });
                    return false;
                }
                let out = &mut bytes[done * 2..(done + values.len()) * 2];
                out.copy_from_slice(bytemuck::cast_slice(&labels[..values.len()]));
                true
            }),
        }
    }
    if let Some(b) = bad {
        return Err(b);
    }
    buf.truncate(n);
    Ok(shrink_slack(buf, n))
}

/// Label conversion for unscaled 8/16-bit stored integers: a value is a label when it lies in `0..=65535`.
#[inline(always)]
fn small_int_labels<const S: usize>(
    bytes: &mut [u8],
    start: usize,
    n: usize,
    decode: impl Fn([u8; S]) -> i32,
    bad: &mut Option<BadLabel>,
) {
    let mut values = [0i32; CHUNK];
    let mut done = 0;
    while done < n {
        let k = CHUNK.min(n - done);
        let src = &bytes[start + done * S..start + (done + k) * S];
        let mut all_ok = true;
        for (v, b) in values[..k].iter_mut().zip(src.chunks_exact(S)) {
            let mut a = [0u8; S];
            a.copy_from_slice(b);
            *v = decode(a);
            all_ok &= (0..=i32::from(u16::MAX)).contains(v);
        }
        if !all_ok {
            let i = values[..k].iter().position(|v| !(0..=i32::from(u16::MAX)).contains(v)).unwrap_or(0);
            *bad = Some(BadLabel { index: done + i, value: values[i] as f32 });
            return;
        }
        for (o, &v) in bytes[done * 2..(done + k) * 2].chunks_exact_mut(2).zip(&values[..k]) {
            o.copy_from_slice(&(v as u16).to_ne_bytes());
        }
        done += k;
    }
}

/// 8-byte types and gzip header lead leave slack; give it back (realloc of a large block is a remap).
fn shrink_slack<T>(mut buf: Vec<T>, n: usize) -> Vec<T> {
    if buf.capacity() > n + n / 8 {
        buf.shrink_to_fit();
    }
    buf
}

/// Receives each converted chunk: `(buffer bytes, index of the chunk's first voxel, its values)`; returns
/// false to stop.
trait Sink: FnMut(&mut [u8], usize, &[f32]) -> bool {}
impl<F: FnMut(&mut [u8], usize, &[f32]) -> bool> Sink for F {}

/// Picks the decoder for the stored type; every branch is monomorphised, so the inner loops have no
/// per-voxel match on datatype, byte order or scaling.
fn dispatch(bytes: &mut [u8], start: usize, n: usize, layout: Layout, sink: impl Sink) {
    match layout.datatype {
        DataType::U8 => run::<1>(bytes, start, n, layout, |b| f64::from(b[0]), |b| f32::from(b[0]), sink),
        DataType::I8 => run::<1>(bytes, start, n, layout, |b| f64::from(b[0] as i8), |b| f32::from(b[0] as i8), sink),
        DataType::U16 => run::<2>(
            bytes,
            start,
            n,
            layout,
            |b| f64::from(u16::from_ne_bytes(b)),
            |b| f32::from(u16::from_ne_bytes(b)),
            sink,
        ),
        DataType::I16 => run::<2>(
            bytes,
            start,
            n,
            layout,
            |b| f64::from(i16::from_ne_bytes(b)),
            |b| f32::from(i16::from_ne_bytes(b)),
            sink,
        ),
        DataType::U32 => run::<4>(
            bytes,
            start,
            n,
            layout,
            |b| f64::from(u32::from_ne_bytes(b)),
            |b| u32::from_ne_bytes(b) as f32,
            sink,
        ),
        DataType::I32 => run::<4>(
            bytes,
            start,
            n,
            layout,
            |b| f64::from(i32::from_ne_bytes(b)),
            |b| i32::from_ne_bytes(b) as f32,
            sink,
        ),
        DataType::U64 => {
            run::<8>(bytes, start, n, layout, |b| u64::from_ne_bytes(b) as f64, |b| u64::from_ne_bytes(b) as f32, sink)
        }
        DataType::I64 => {
            run::<8>(bytes, start, n, layout, |b| i64::from_ne_bytes(b) as f64, |b| i64::from_ne_bytes(b) as f32, sink)
        }
        DataType::F32 => {
            run::<4>(bytes, start, n, layout, |b| f64::from(f32::from_ne_bytes(b)), f32::from_ne_bytes, sink)
        }
        DataType::F64 => run::<8>(bytes, start, n, layout, f64::from_ne_bytes, |b| f64::from_ne_bytes(b) as f32, sink),
    }
}

/// The conversion loop, monomorphised per stored width `S` and decoder; byte order and scaling are
/// decided once outside the loop so the inner loop has no branches.
fn run<const S: usize>(
    bytes: &mut [u8],
    start: usize,
    n: usize,
    layout: Layout,
    wide: impl Fn([u8; S]) -> f64 + Copy,
    narrow: impl Fn([u8; S]) -> f32 + Copy,
    sink: impl Sink,
) {
    let swap = layout.endian != Endian::NATIVE && S > 1;
    let scaled = layout.slope != 1.0 || layout.inter != 0.0;
    let (slope, inter) = (layout.slope, layout.inter);
    match (swap, scaled) {
        (false, false) => chunks::<S>(bytes, start, n, narrow, sink),
        (true, false) => chunks::<S>(
            bytes,
            start,
            n,
            move |mut b| {
                b.reverse();
                narrow(b)
            },
            sink,
        ),
        // Scaling in f64 then rounding once, as nibabel's float64 arithmetic followed by a cast.
        (false, true) => chunks::<S>(bytes, start, n, move |b| (wide(b) * slope + inter) as f32, sink),
        (true, true) => chunks::<S>(
            bytes,
            start,
            n,
            move |mut b| {
                b.reverse();
                (wide(b) * slope + inter) as f32
            },
            sink,
        ),
    }
}

#[inline(always)]
fn chunks<const S: usize>(bytes: &mut [u8], start: usize, n: usize, f: impl Fn([u8; S]) -> f32, mut sink: impl Sink) {
    let mut out = [0f32; CHUNK];
    let mut done = 0;
    while done < n {
        let k = CHUNK.min(n - done);
        let src = &bytes[start + done * S..start + (done + k) * S];
        for (o, b) in out[..k].iter_mut().zip(src.chunks_exact(S)) {
            let mut a = [0u8; S];
            a.copy_from_slice(b);
            *o = f(a);
        }
        if !sink(bytes, done, &out[..k]) {
            return;
        }
        done += k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(datatype: DataType, endian: Endian, slope: f64, inter: f64) -> Layout {
        Layout { datatype, endian, slope, inter }
    }

    #[test]
    fn int16_tail_converts_in_place_with_swap_and_scale() {
        let values: [i16; 5] = [-3, 0, 7, 300, -32768];
        let n = values.len();
        let mut buf = vec![0f32; buffer_units(n, 2, 0, 4).expect("small")];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        let start = bytes.len() - 2 * n;
        for (i, v) in values.iter().enumerate() {
            bytes[start + 2 * i..start + 2 * i + 2].copy_from_slice(&v.to_be_bytes());
        }
        let out = convert_tail_in_place(buf, n, layout(DataType::I16, Endian::Big, 0.5, 1.0));
        assert_eq!(out, vec![-0.5, 1.0, 4.5, 151.0, -16383.0]);
    }

    #[test]
    fn float64_shrinks_to_output() {
        let values = [1.5f64, -2.25, 1e300];
        let mut buf = vec![0f32; buffer_units(3, 8, 0, 4).expect("small")];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        for (i, v) in values.iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        let out = convert_tail_in_place(buf, 3, layout(DataType::F64, Endian::Little, 1.0, 0.0));
        assert_eq!(out, vec![1.5, -2.25, f32::INFINITY]);
    }

    #[test]
    fn many_chunks_of_u8_keep_order() {
        let n = 3 * CHUNK + 17;
        let mut buf = vec![0f32; buffer_units(n, 1, 0, 4).expect("small")];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        let start = bytes.len() - n;
        for i in 0..n {
            bytes[start + i] = (i % 251) as u8;
        }
        let out = convert_tail_in_place(buf, n, layout(DataType::U8, Endian::Little, 1.0, 0.0));
        assert!(out.iter().enumerate().all(|(i, &v)| v == (i % 251) as f32));
    }

    /// Stored bytes of value `x` (which must fit the type) in `endian`.
    fn encode(t: DataType, x: f64, endian: Endian) -> Vec<u8> {
        let le = endian == Endian::Little;
        macro_rules! enc {
            ($ty:ty) => {{
                let v = x as $ty;
                if le { v.to_le_bytes().to_vec() } else { v.to_be_bytes().to_vec() }
            }};
        }
        match t {
            DataType::U8 => enc!(u8),
            DataType::I8 => enc!(i8),
            DataType::U16 => enc!(u16),
            DataType::I16 => enc!(i16),
            DataType::U32 => enc!(u32),
            DataType::I32 => enc!(i32),
            DataType::U64 => enc!(u64),
            DataType::I64 => enc!(i64),
            DataType::F32 => enc!(f32),
            DataType::F64 => enc!(f64),
        }
    }

    /// The per-voxel definition, written independently of the chunked loops: unscaled values are cast
    /// straight to `f32` from their stored type; scaled ones go through `f64` (nibabel) and round once.
    fn reference(t: DataType, x: f64, slope: f64, inter: f64) -> f32 {
        if slope == 1.0 && inter == 0.0 {
            match t {
                DataType::U64 => (x as u64) as f32,
                DataType::I64 => (x as i64) as f32,
                _ => x as f32,
            }
        } else {
            let stored = match t {
                DataType::U64 => (x as u64) as f64,
                DataType::I64 => (x as i64) as f64,
                DataType::F32 => f64::from(x as f32),
                _ => x,
            };
            (stored * slope + inter) as f32
        }
    }

    /// Values every type can hold, over more than one chunk, with some extremes of the narrow types.
    fn sample_values(t: DataType) -> Vec<f64> {
        let signed = !matches!(t, DataType::U8 | DataType::U16 | DataType::U32 | DataType::U64);
        let max = match t {
            DataType::U8 => 255.0,
            DataType::I8 => 127.0,
            DataType::I16 => 32767.0,
            _ => 65535.0,
        };
        (0..CHUNK * 2 + 37)
            .map(|i| {
                let v = ((i * 7919) % (max as usize + 1)) as f64;
                if signed && i % 3 == 0 { 0.0 - v } else { v }
            })
            .collect()
    }

    fn tail_buffer<T: bytemuck::Pod + Default>(t: DataType, values: &[f64], endian: Endian, lead: usize) -> Vec<T> {
        let width = std::mem::size_of::<T>();
        let n = values.len();
        let mut buf = vec![T::default(); buffer_units(n, t.size(), lead, width).expect("small")];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        let start = bytes.len() - n * t.size();
        for (i, &x) in values.iter().enumerate() {
            bytes[start + i * t.size()..start + (i + 1) * t.size()].copy_from_slice(&encode(t, x, endian));
        }
        buf
    }

    #[test]
    fn every_datatype_and_byte_order_matches_the_per_voxel_definition() {
        for t in DataType::ALL {
            for endian in [Endian::Little, Endian::Big] {
                for (slope, inter) in [(1.0, 0.0), (0.37, -12.5)] {
                    let values = sample_values(t);
                    let buf = tail_buffer::<f32>(t, &values, endian, 5);
                    let out = convert_tail_in_place(buf, values.len(), layout(t, endian, slope, inter));
                    let want: Vec<f32> = values.iter().map(|&x| reference(t, x, slope, inter)).collect();
                    let same = out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same && out.len() == want.len(), "{t:?} {endian:?} slope {slope}");
                }
            }
        }
    }

    #[test]
    fn labels_of_every_datatype_and_byte_order_match_the_f32_path() {
        for t in DataType::ALL {
            for endian in [Endian::Little, Endian::Big] {
                for (slope, inter) in [(1.0, 0.0), (2.0, 1.0)] {
                    let values: Vec<f64> = sample_values(t).into_iter().map(f64::abs).collect();
                    let as_f32 = convert_tail_in_place(
                        tail_buffer::<f32>(t, &values, endian, 3),
                        values.len(),
                        layout(t, endian, slope, inter),
                    );
                    let labels = labels_tail_in_place(
                        tail_buffer::<u16>(t, &values, endian, 3),
                        values.len(),
                        layout(t, endian, slope, inter),
                    );
                    match as_f32.iter().position(|&v| !(v.fract() == 0.0 && (0.0..=65535.0).contains(&v))) {
                        None => {
                            let want: Vec<u16> = as_f32.iter().map(|&v| v as u16).collect();
                            assert_eq!(labels, Ok(want), "{t:?} {endian:?} slope {slope}");
                        }
                        Some(i) => assert_eq!(
                            labels,
                            Err(BadLabel { index: i, value: as_f32[i] }),
                            "{t:?} {endian:?} slope {slope}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn non_labels_are_reported_at_their_first_voxel() {
        let cases: [(DataType, f64, f64, f64); 5] = [
            (DataType::I16, -1.0, 1.0, 0.0),
            (DataType::F32, 2.5, 1.0, 0.0),
            (DataType::F32, f64::NAN, 1.0, 0.0),
            (DataType::I32, 70_000.0, 1.0, 0.0),
            (DataType::U8, 3.0, 0.5, 0.0),
        ];
        for (t, bad, slope, inter) in cases {
            let mut values = vec![1.0; CHUNK + 10];
            values[CHUNK + 3] = bad;
            let got = labels_tail_in_place(
                tail_buffer::<u16>(t, &values, Endian::Little, 0),
                values.len(),
                layout(t, Endian::Little, slope, inter),
            );
            let first_bad = if slope == 0.5 { 0 } else { CHUNK + 3 };
            assert_eq!(got.map_err(|b| b.index), Err(first_bad), "{t:?} holding {bad}");
        }
    }
}
