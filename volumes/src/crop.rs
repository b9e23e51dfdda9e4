//! Cutting a box out of an x-fastest 3-D array, padding what lies outside the array.
//!
//! Patches near borders and patches larger than the volume are routine (nnU-Net pads to the patch size), so
//! the origin may be negative and the box may extend past the end; outside voxels get `pad`. Rows along x are
//! copied as slices, which keeps a 128³ crop at memcpy speed.

use crate::augment::Geometry;
use crate::volume::{linear_index, voxel_count};

/// Per axis, the overlap of `[origin, origin + size)` with `[0, n)`: `(first source index, first patch
/// index, length)`, or `None` when the box misses the array along that axis.
pub fn overlap(origin: [isize; 3], size: [usize; 3], shape: [usize; 3]) -> Option<[(usize, usize, usize); 3]> {
    let mut out = [(0, 0, 0); 3];
    for i in 0..3 {
        let start = origin[i].max(0);
        let end = (origin[i] + size[i] as isize).min(shape[i] as isize);
        if end <= start {
            return None;
        }
        out[i] = (start as usize, (start - origin[i]) as usize, (end - start) as usize);
    }
    Some(out)
}

/// Copies the box at `origin` of `size` out of `src` (shape `shape`), padding with `pad`.
pub fn crop_padded<T: Copy>(src: &[T], shape: [usize; 3], origin: [isize; 3], size: [usize; 3], pad: T) -> Vec<T> {
    let mut out = vec![pad; voxel_count(size)];
    crop_into(src, shape, origin, size, &mut out);
    out
}

/// Like [`crop_padded`] into an existing buffer of `size` voxels; voxels outside the array are untouched.
pub fn crop_into<T: Copy>(src: &[T], shape: [usize; 3], origin: [isize; 3], size: [usize; 3], out: &mut [T]) {
    let Some([(sx, px, lx), (sy, py, ly), (sz, pz, lz)]) = overlap(origin, size, shape) else {
        return;
    };
    for z in 0..lz {
        for y in 0..ly {
            let s = linear_index(shape, sx, sy + y, sz + z);
            let d = linear_index(size, px, py + y, pz + z);
            out[d..d + lx].copy_from_slice(&src[s..s + lx]);
        }
    }
}

/// Cuts the box at `origin` of `size` out of `src` (shape `shape`) *and* applies `geometry` (flips, axial
/// quarter turns) and `map` (the intensity transform) in the same pass, writing every voxel of `out`
/// (padding becomes `map(pad)`). Equal to [`crop_padded`], then [`Geometry::apply`], then `map` per voxel,
/// but it reads each source voxel once and never materialises the unaugmented patch: that was three passes
/// and two 8 MB temporaries per channel of a 128³ patch.
///
/// Along an output row the source position moves by a unit step along x or y (a flip or a quarter turn
/// never moves it along z), so each row is one contiguous or strided run of the source, clipped to the
/// volume, with padding on either side.
#[allow(clippy::too_many_arguments)] // crop_padded's five plus the transform, its map, and the output
pub fn crop_transformed<T: Copy, U: Copy>(
    src: &[T],
    shape: [usize; 3],
    origin: [isize; 3],
    size: [usize; 3],
    geometry: &Geometry,
    pad: T,
    map: impl Fn(T) -> U,
    out: &mut [U],
) {
    let padded = map(pad);
    crop_transformed_filled(src, shape, origin, size, geometry, padded, map, out);
}

/// [`crop_transformed`] with the output value of padding given directly, for sources whose map sends no
/// stored value to it (a stored-type case pads with the normalised 0, which no stored integer maps to).
#[allow(clippy::too_many_arguments)] // as crop_transformed, with the padding's output value for its input
pub fn crop_transformed_filled<T: Copy, U: Copy>(
    src: &[T],
    shape: [usize; 3],
    origin: [isize; 3],
    size: [usize; 3],
    geometry: &Geometry,
    padded: U,
    map: impl Fn(T) -> U,
    out: &mut [U],
) {
    debug_assert_eq!(out.len(), voxel_count(size));
    let nx = size[0];
    for z in 0..size[2] {
        for y in 0..size[1] {
            let row_start = linear_index(size, 0, y, z);
            let row = &mut out[row_start..row_start + nx];
            // Source position of output x = 0 and the per-x step, in volume coordinates.
            let p0 = geometry.source(size, 0, y, z);
            let p1 = if nx > 1 { geometry.source(size, 1, y, z) } else { p0 };
            let s0: [isize; 3] = std::array::from_fn(|a| origin[a] + p0[a] as isize);
            let d: [isize; 3] = std::array::from_fn(|a| p1[a] as isize - p0[a] as isize);
            let (lo, hi) = inside_run(s0, d, shape, nx);
            row[..lo].fill(padded);
            row[hi.max(lo)..].fill(padded);
            if lo >= hi {
                continue;
            }
            let at = |x: usize| -> [usize; 3] { std::array::from_fn(|a| (s0[a] + x as isize * d[a]) as usize) };
            let [ax, ay, az] = at(lo);
            let first = linear_index(shape, ax, ay, az);
            let step = d[0] + d[1] * shape[0] as isize;
            let len = hi - lo;
            let dst = &mut row[lo..hi];
            match step {
                1 => dst.iter_mut().zip(&src[first..first + len]).for_each(|(o, &v)| *o = map(v)),
                -1 => dst.iter_mut().zip(src[first + 1 - len..=first].iter().rev()).for_each(|(o, &v)| *o = map(v)),
                _ => dst
                    .iter_mut()
                    .enumerate()
                    .for_each(|(k, o)| *o = map(src[(first as isize + k as isize * step) as usize])),
            }
        }
    }
}

/// The range `[lo, hi)` of x in `0..nx` for which `s0 + x·d` lies inside `shape` on every axis (empty when
/// `lo >= hi`).
fn inside_run(s0: [isize; 3], d: [isize; 3], shape: [usize; 3], nx: usize) -> (usize, usize) {
    let (mut lo, mut hi) = (0isize, nx as isize);
    for a in 0..3 {
        let n = shape[a] as isize;
        match d[a] {
            0 if s0[a] < 0 || s0[a] >= n => return (0, 0),
            0 => {}
            // s0 + x·d ∈ [0, n): for d = 1, x ∈ [−s0, n − s0); for d = −1, x ∈ (s0 − n, s0].
            1 => {
                lo = lo.max(-s0[a]);
                hi = hi.min(n - s0[a]);
            }
            _ => {
                lo = lo.max(s0[a] - n + 1);
                hi = hi.min(s0[a] + 1);
            }
        }
    }
    (lo.clamp(0, nx as isize) as usize, hi.clamp(0, nx as isize) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_crop_equals_crop_then_transform_then_map_for_every_geometry() {
        let shape = [7, 6, 5];
        let src: Vec<i32> = (0..voxel_count(shape) as i32).collect();
        let size = [4, 4, 3];
        let origins = [[0, 0, 0], [3, 2, 2], [-2, -1, -1], [5, 4, 4], [-3, 3, 1], [9, 0, 0]];
        let big = [10, 10, 8];
        for turns in 0..4 {
            for f in 0..8u8 {
                let g = Geometry { flips: [f & 1 != 0, f & 2 != 0, f & 4 != 0], quarter_turns: turns };
                for origin in origins {
                    let reference: Vec<i64> = g
                        .apply(&crop_padded(&src, shape, origin, size, -1), size)
                        .iter()
                        .map(|&v| 3 * v as i64 + 1)
                        .collect();
                    let mut fused = vec![0i64; voxel_count(size)];
                    crop_transformed(&src, shape, origin, size, &g, -1, |v| 3 * v as i64 + 1, &mut fused);
                    assert_eq!(fused, reference, "{g:?} at {origin:?}");
                }
                // A patch larger than the volume, hanging over every side.
                let reference = g.apply(&crop_padded(&src, shape, [-2, -2, -2], big, -1), big);
                let mut fused = vec![0; voxel_count(big)];
                crop_transformed(&src, shape, [-2, -2, -2], big, &g, -1, |v| v, &mut fused);
                assert_eq!(fused, reference, "{g:?} larger than the volume");
            }
        }
    }

    #[test]
    fn interior_crop_copies_and_border_crop_pads() {
        let shape = [4, 3, 2];
        let src: Vec<i32> = (0..24).collect();
        let inner = crop_padded(&src, shape, [1, 1, 1], [2, 2, 1], -1);
        assert_eq!(inner, vec![17, 18, 21, 22]);
        let border = crop_padded(&src, shape, [-1, 2, 1], [3, 2, 1], -1);
        assert_eq!(border, vec![-1, 20, 21, -1, -1, -1]);
    }

    #[test]
    fn a_box_larger_than_the_array_holds_all_of_it() {
        let shape = [2, 2, 2];
        let src: Vec<u16> = (1..=8).collect();
        let big = crop_padded(&src, shape, [-1, -1, -1], [4, 4, 4], 0);
        assert_eq!(big.iter().map(|&v| u32::from(v)).sum::<u32>(), 36);
        assert_eq!(big[linear_index([4, 4, 4], 1, 1, 1)], 1);
        assert_eq!(big[linear_index([4, 4, 4], 2, 2, 2)], 8);
    }

    #[test]
    fn a_box_outside_is_all_padding() {
        assert_eq!(crop_padded(&[1u8; 8], [2, 2, 2], [5, 0, 0], [2, 2, 2], 9), vec![9; 8]);
    }
}
