//! Cutting a box out of an x-fastest 3-D array, padding what lies outside the array.
//!
//! Patches near borders and patches larger than the volume are routine (nnU-Net pads to the patch size), so
//! the origin may be negative and the box may extend past the end; outside voxels get `pad`. Rows along x are
//! copied as slices, which keeps a 128³ crop at memcpy speed.

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

#[cfg(test)]
mod tests {
    use super::*;

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
