//! Stored voxels to scaled `f32` in one pass, in place.
//!
//! The decoder puts the raw bytes at the *end* of the `Vec<f32>` that becomes the volume, then this pass
//! walks forward converting chunk by chunk: each chunk is copied out before its `f32`s are written, and
//! the writes never reach bytes not yet read (output element i ends at byte 4(i+1), its input starts at
//! `start + size·i`, and `start ≥ (4 − size)·n`). No second buffer: peak memory is the output itself,
//! against about three copies in the `nifti` crate.

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

/// Bytes a `Vec<f32>` must span to hold `n` output values and, at its end, `n` stored values plus
/// `lead` bytes that precede them (header bytes of a gzip stream inflated along with the voxels).
pub fn buffer_floats(n: usize, size: usize, lead: usize) -> Option<usize> {
    let out = n.checked_mul(4)?;
    let stored = n.checked_mul(size)?;
    let bytes = out.max(stored).checked_add(lead)?;
    Some(bytes.div_ceil(4))
}

/// Converts the `n` stored values occupying the last `n·size` bytes of `buf` into the first `n` floats,
/// then truncates `buf` to them.
pub fn convert_tail_in_place(mut buf: Vec<f32>, n: usize, layout: Layout) -> Vec<f32> {
    let size = layout.datatype.size();
    let start = buf.len() * 4 - n * size;
    debug_assert!(start >= (4usize.saturating_sub(size)) * n);
    {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        match layout.datatype {
            DataType::U8 => run::<1>(bytes, start, n, layout, |b| f64::from(b[0]), |b| f32::from(b[0])),
            DataType::I8 => run::<1>(bytes, start, n, layout, |b| f64::from(b[0] as i8), |b| f32::from(b[0] as i8)),
            DataType::U16 => run::<2>(
                bytes,
                start,
                n,
                layout,
                |b| f64::from(u16::from_ne_bytes(b)),
                |b| f32::from(u16::from_ne_bytes(b)),
            ),
            DataType::I16 => run::<2>(
                bytes,
                start,
                n,
                layout,
                |b| f64::from(i16::from_ne_bytes(b)),
                |b| f32::from(i16::from_ne_bytes(b)),
            ),
            DataType::U32 => run::<4>(
                bytes,
                start,
                n,
                layout,
                |b| f64::from(u32::from_ne_bytes(b)),
                |b| u32::from_ne_bytes(b) as f32,
            ),
            DataType::I32 => run::<4>(
                bytes,
                start,
                n,
                layout,
                |b| f64::from(i32::from_ne_bytes(b)),
                |b| i32::from_ne_bytes(b) as f32,
            ),
            DataType::U64 => {
                run::<8>(bytes, start, n, layout, |b| u64::from_ne_bytes(b) as f64, |b| u64::from_ne_bytes(b) as f32)
            }
            DataType::I64 => {
                run::<8>(bytes, start, n, layout, |b| i64::from_ne_bytes(b) as f64, |b| i64::from_ne_bytes(b) as f32)
            }
            DataType::F32 => {
                run::<4>(bytes, start, n, layout, |b| f64::from(f32::from_ne_bytes(b)), f32::from_ne_bytes)
            }
            DataType::F64 => run::<8>(bytes, start, n, layout, f64::from_ne_bytes, |b| f64::from_ne_bytes(b) as f32),
        }
    }
    buf.truncate(n);
    if buf.capacity() > n + n / 8 {
        // 8-byte types and gzip header lead leave slack; give it back (realloc of a large block is a remap).
        buf.shrink_to_fit();
    }
    buf
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
) {
    let swap = layout.endian != Endian::NATIVE && S > 1;
    let scaled = layout.slope != 1.0 || layout.inter != 0.0;
    let (slope, inter) = (layout.slope, layout.inter);
    match (swap, scaled) {
        (false, false) => chunks::<S>(bytes, start, n, narrow),
        (true, false) => chunks::<S>(bytes, start, n, move |mut b| {
            b.reverse();
            narrow(b)
        }),
        // Scaling in f64 then rounding once, as nibabel's float64 arithmetic followed by a cast.
        (false, true) => chunks::<S>(bytes, start, n, move |b| (wide(b) * slope + inter) as f32),
        (true, true) => chunks::<S>(bytes, start, n, move |mut b| {
            b.reverse();
            (wide(b) * slope + inter) as f32
        }),
    }
}

#[inline(always)]
fn chunks<const S: usize>(bytes: &mut [u8], start: usize, n: usize, f: impl Fn([u8; S]) -> f32) {
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
        bytes[done * 4..(done + k) * 4].copy_from_slice(bytemuck::cast_slice(&out[..k]));
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
        let mut buf = vec![0f32; buffer_floats(n, 2, 0).expect("small")];
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
        let mut buf = vec![0f32; buffer_floats(3, 8, 0).expect("small")];
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
        let mut buf = vec![0f32; buffer_floats(n, 1, 0).expect("small")];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        let start = bytes.len() - n;
        for i in 0..n {
            bytes[start + i] = (i % 251) as u8;
        }
        let out = convert_tail_in_place(buf, n, layout(DataType::U8, Endian::Little, 1.0, 0.0));
        assert!(out.iter().enumerate().all(|(i, &v)| v == (i % 251) as f32));
    }
}
