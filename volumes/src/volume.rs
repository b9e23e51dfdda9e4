//! In-memory images and label maps, the currency every other module trades in.
//!
//! Axis order, once for the whole project: shapes, spacings, patch sizes and strides are written in NIfTI
//! voxel order `(x, y, z)`, as nibabel prints them. Voxels are stored with `x` varying fastest (NIfTI's own
//! order), so a volume is already laid out as a row-major `[z][y][x]` array: burn tensors are
//! `[N, C, z, y, x]` and need no transpose, only the axis lists reversed.

/// A 4×4 voxel-to-world (RAS+ millimetres) matrix, row-major, as nibabel's `img.affine`.
pub type Affine = [[f64; 4]; 4];

/// Identity affine: 1 mm isotropic voxels at the origin.
pub const IDENTITY_AFFINE: Affine =
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];

/// Number of voxels of a 3-D shape.
pub fn voxel_count(shape: [usize; 3]) -> usize {
    shape[0] * shape[1] * shape[2]
}

/// Linear index of voxel `(x, y, z)` in an x-fastest buffer.
#[inline]
pub fn linear_index(shape: [usize; 3], x: usize, y: usize, z: usize) -> usize {
    x + shape[0] * (y + shape[1] * z)
}

/// A multi-channel 3-D image as scaled `f32` values (scl_slope/scl_inter already applied).
///
/// Channels are stored one after another (channel-major), each x-fastest: the layout of a NIfTI 4-D image
/// whose fourth axis holds the channels, and of a `[C, z, y, x]` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub data: Vec<f32>,
    /// `[nx, ny, nz]`.
    pub shape: [usize; 3],
    pub channels: usize,
    pub affine: Affine,
}

impl Volume {
    /// A zero-filled volume.
    pub fn zeros(shape: [usize; 3], channels: usize, affine: Affine) -> Self {
        Self { data: vec![0.0; voxel_count(shape) * channels], shape, channels, affine }
    }

    /// Voxels per channel.
    pub fn voxels(&self) -> usize {
        voxel_count(self.shape)
    }

    /// One channel's voxels.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.voxels();
        &self.data[c * n..(c + 1) * n]
    }

    /// One channel's voxels, mutable.
    pub fn channel_mut(&mut self, c: usize) -> &mut [f32] {
        let n = self.voxels();
        &mut self.data[c * n..(c + 1) * n]
    }

    /// Voxel spacing in millimetres along each voxel axis: the column norms of the affine's 3×3 part.
    pub fn spacing(&self) -> [f64; 3] {
        spacing_of(&self.affine)
    }
}

/// A label map: one class index per voxel, x-fastest. `u16` holds atlases with hundreds of regions.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub data: Vec<u16>,
    /// `[nx, ny, nz]`.
    pub shape: [usize; 3],
    pub affine: Affine,
}

impl Labels {
    /// Voxel count.
    pub fn voxels(&self) -> usize {
        voxel_count(self.shape)
    }

    /// Spacing in millimetres along each voxel axis.
    pub fn spacing(&self) -> [f64; 3] {
        spacing_of(&self.affine)
    }
}

/// Column norms of the affine's rotation-zoom part: the voxel size along each voxel axis.
pub fn spacing_of(affine: &Affine) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (j, s) in out.iter_mut().enumerate() {
        *s = (0..3).map(|i| affine[i][j] * affine[i][j]).sum::<f64>().sqrt();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_index_is_x_fastest() {
        let shape = [4, 3, 2];
        assert_eq!(linear_index(shape, 1, 0, 0), 1);
        assert_eq!(linear_index(shape, 0, 1, 0), 4);
        assert_eq!(linear_index(shape, 0, 0, 1), 12);
        assert_eq!(linear_index(shape, 3, 2, 1), 23);
    }

    #[test]
    fn spacing_reads_column_norms_of_a_rotated_affine() {
        let a = [[0.0, -2.0, 0.0, 5.0], [3.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.5, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(spacing_of(&a), [3.0, 2.0, 1.5]);
    }

    #[test]
    fn channels_are_contiguous_blocks() {
        let mut v = Volume::zeros([2, 2, 2], 3, IDENTITY_AFFINE);
        v.channel_mut(1).fill(1.0);
        assert_eq!(v.data[..8].iter().sum::<f32>(), 0.0);
        assert_eq!(v.data[8..16].iter().sum::<f32>(), 8.0);
        assert_eq!(v.channel(2).len(), 8);
    }
}
