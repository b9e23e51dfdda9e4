//! Axis codes (nibabel's `aff2axcodes`) and reorientation to the closest canonical RAS grid
//! (nibabel's `as_closest_canonical`): axes are permuted and flipped, voxels never interpolated.

// 3×3/4×4 matrix algebra reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use crate::volume::{Affine, Labels, Volume, linear_index, voxel_count};

/// Newton iterations for the polar decomposition; it converges quadratically, 3×3 needs under ten.
const POLAR_MAX_ITERATIONS: usize = 50;
/// Stop when no entry moves by more than this.
const POLAR_TOLERANCE: f64 = 1e-12;
/// Columns with all entries below this are degenerate (nibabel's `np.allclose(col, 0)` atol).
const ZERO_COLUMN: f64 = 1e-8;

/// For each voxel axis, the world axis (0 = x/R, 1 = y/A, 2 = z/S) it runs along and its direction
/// (+1 towards R/A/S); `None` for a degenerate axis. Same rule as nibabel's `io_orientation`.
pub fn io_orientation(affine: &Affine) -> [Option<(usize, f64)>; 3] {
    let mut r = [[0.0; 3]; 3];
    for j in 0..3 {
        let norm = (0..3).map(|i| affine[i][j] * affine[i][j]).sum::<f64>().sqrt();
        let norm = if norm == 0.0 { 1.0 } else { norm };
        for i in 0..3 {
            r[i][j] = affine[i][j] / norm;
        }
    }
    let mut r = closest_rotation(r);
    let strength = |j: usize, r: &[[f64; 3]; 3]| (0..3).map(|i| r[i][j] * r[i][j]).fold(0.0, f64::max);
    let mut order = [0usize, 1, 2];
    let before = r;
    order.sort_by(|&a, &b| strength(b, &before).total_cmp(&strength(a, &before)));
    let mut out = [None; 3];
    for in_ax in order {
        let col = [r[0][in_ax], r[1][in_ax], r[2][in_ax]];
        if col.iter().all(|v| v.abs() <= ZERO_COLUMN) {
            continue;
        }
        let out_ax = (0..3).fold(0, |best, i| if col[i].abs() > col[best].abs() { i } else { best });
        out[in_ax] = Some((out_ax, if col[out_ax] < 0.0 { -1.0 } else { 1.0 }));
        r[out_ax] = [0.0; 3];
    }
    out
}

/// nibabel's `aff2axcodes` with RAS labels: the world direction each voxel axis points *towards*.
/// `'?'` marks a degenerate axis.
pub fn orientation_codes(affine: &Affine) -> [char; 3] {
    const POSITIVE: [char; 3] = ['R', 'A', 'S'];
    const NEGATIVE: [char; 3] = ['L', 'P', 'I'];
    io_orientation(affine).map(|o| match o {
        Some((axis, dir)) if dir > 0.0 => POSITIVE[axis],
        Some((axis, _)) => NEGATIVE[axis],
        None => '?',
    })
}

/// A voxel grid's orientation as nibabel's `aff2axcodes` names it (`RAS`, `PIR`, `LPS`, …): for each voxel
/// axis, the world direction it points towards. Written and read as its three letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AxisCodes(pub [char; 3]);

impl AxisCodes {
    /// Right, anterior, superior: nibabel's closest canonical orientation.
    pub const RAS: AxisCodes = AxisCodes(['R', 'A', 'S']);

    /// The orientation of a grid with this affine ([`orientation_codes`]).
    pub fn of(affine: &Affine) -> Self {
        Self(orientation_codes(affine))
    }

    /// Whether every axis has a direction (no `?`): only then can a grid be reoriented.
    pub fn is_definite(&self) -> bool {
        !self.0.contains(&'?')
    }

    /// `(world axis, +1 | −1)` of each voxel axis, `None` for `?`.
    fn directions(&self) -> [Option<(usize, f64)>; 3] {
        self.0.map(|c| match c {
            'R' => Some((0, 1.0)),
            'L' => Some((0, -1.0)),
            'A' => Some((1, 1.0)),
            'P' => Some((1, -1.0)),
            'S' => Some((2, 1.0)),
            'I' => Some((2, -1.0)),
            _ => None,
        })
    }
}

impl std::fmt::Display for AxisCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.0[0], self.0[1], self.0[2])
    }
}

impl From<AxisCodes> for String {
    fn from(c: AxisCodes) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for AxisCodes {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let chars: Vec<char> = text.trim().chars().map(|c| c.to_ascii_uppercase()).collect();
        let codes = AxisCodes(match chars.as_slice() {
            &[a, b, c] => [a, b, c],
            _ => return Err(format!("{text:?} is not three axis letters such as RAS or PIR")),
        });
        let worlds: Vec<usize> = codes.directions().iter().filter_map(|d| d.map(|(w, _)| w)).collect();
        let distinct = worlds.len() == 3 && worlds.iter().all(|w| worlds.iter().filter(|v| *v == w).count() == 1);
        if !distinct {
            return Err(format!("{text:?} must name each of R/L, A/P and S/I once"));
        }
        Ok(codes)
    }
}

/// How to rebuild a grid in another orientation by permuting and flipping its axes (voxels are never
/// interpolated, so the round trip is exact): for each new axis, the old axis it comes from and whether it
/// is reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorientation {
    plan: [(usize, bool); 3],
    /// Shape of the grid it applies to.
    from_shape: [usize; 3],
}

impl Reorientation {
    /// From a grid of `shape` with `affine` to the orientation `target`; `None` when the affine is
    /// degenerate (nothing can be reoriented) or already in `target`.
    pub fn to(affine: &Affine, shape: [usize; 3], target: AxisCodes) -> Option<Self> {
        let ornt = io_orientation(affine);
        let want = target.directions();
        let mut plan = [(usize::MAX, false); 3];
        for (new, w) in want.iter().enumerate() {
            let (world, dir) = (*w)?;
            let old = ornt.iter().position(|o| o.is_some_and(|(ow, _)| ow == world))?;
            let (_, old_dir) = ornt[old]?;
            plan[new] = (old, old_dir != dir);
        }
        let identity = plan == [(0, false), (1, false), (2, false)];
        (!identity).then_some(Self { plan, from_shape: shape })
    }

    /// Shape after reorienting.
    pub fn shape(&self) -> [usize; 3] {
        self.plan.map(|(old, _)| self.from_shape[old])
    }

    /// Spacing `(x, y, z)` after reorienting.
    pub fn spacing(&self, spacing: [f64; 3]) -> [f64; 3] {
        self.plan.map(|(old, _)| spacing[old])
    }

    /// The reorientation that brings the result back to the original grid.
    pub fn inverse(&self) -> Self {
        let mut plan = [(0usize, false); 3];
        for (new, &(old, flip)) in self.plan.iter().enumerate() {
            plan[old] = (new, flip);
        }
        Self { plan, from_shape: self.shape() }
    }

    /// The image on the reoriented grid (every channel), with its affine.
    pub fn apply_volume(&self, v: &Volume) -> Volume {
        let (shape, affine) = reoriented_geometry(v.shape, &v.affine, &self.plan);
        let n = voxel_count(v.shape);
        let mut data = vec![0.0f32; v.data.len()];
        for c in 0..v.channels {
            permute(&v.data[c * n..(c + 1) * n], v.shape, &self.plan, &mut data[c * n..(c + 1) * n]);
        }
        Volume { data, shape, channels: v.channels, affine }
    }

    /// The label map on the reoriented grid, with its affine.
    pub fn apply_labels(&self, l: &Labels) -> Labels {
        let (shape, affine) = reoriented_geometry(l.shape, &l.affine, &self.plan);
        let mut data = vec![0u16; l.data.len()];
        permute(&l.data, l.shape, &self.plan, &mut data);
        Labels { data, shape, affine }
    }
}

/// The closest canonical (RAS) version of `v`; unchanged when already RAS or when the affine is degenerate.
pub fn reorient_volume_to_ras(v: Volume) -> Volume {
    match Reorientation::to(&v.affine, v.shape, AxisCodes::RAS) {
        Some(r) => r.apply_volume(&v),
        None => v,
    }
}

/// [`reorient_volume_to_ras`] for label maps.
pub fn reorient_labels_to_ras(l: Labels) -> Labels {
    match Reorientation::to(&l.affine, l.shape, AxisCodes::RAS) {
        Some(r) => r.apply_labels(&l),
        None => l,
    }
}

/// New shape and affine for a grid reoriented by `plan`.
fn reoriented_geometry(shape: [usize; 3], affine: &Affine, plan: &[(usize, bool); 3]) -> ([usize; 3], Affine) {
    let new_shape = plan.map(|(old, _)| shape[old]);
    // old voxel index = M · new index + c, with M[old][new] = ±1, c[old] = n_old − 1 where flipped.
    let mut m = [[0.0; 4]; 4];
    for (new, &(old, flip)) in plan.iter().enumerate() {
        m[old][new] = if flip { -1.0 } else { 1.0 };
        if flip {
            m[old][3] = shape[old] as f64 - 1.0;
        }
    }
    m[3][3] = 1.0;
    let mut out = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            out[i][j] = (0..4).map(|k| affine[i][k] * m[k][j]).sum();
        }
    }
    (new_shape, out)
}

/// Copies one channel into the new axis order.
fn permute<T: Copy>(src: &[T], shape: [usize; 3], plan: &[(usize, bool); 3], dst: &mut [T]) {
    let new_shape = plan.map(|(old, _)| shape[old]);
    let stride = [1, shape[0], shape[0] * shape[1]];
    let (mut step, mut base) = ([0isize; 3], 0isize);
    for (new, &(old, flip)) in plan.iter().enumerate() {
        let s = stride[old] as isize;
        if flip {
            step[new] = -s;
            base += (shape[old] as isize - 1) * s;
        } else {
            step[new] = s;
        }
    }
    for z in 0..new_shape[2] {
        for y in 0..new_shape[1] {
            let row = base + step[1] * y as isize + step[2] * z as isize;
            let out = linear_index(new_shape, 0, y, z);
            for x in 0..new_shape[0] {
                dst[out + x] = src[(row + step[0] * x as isize) as usize];
            }
        }
    }
}

/// The orthogonal matrix nearest `a` (polar decomposition, Newton's iteration Q ← (Q + Q⁻ᵀ)/2), which
/// equals nibabel's `P·Qs` from the SVD for a full-rank matrix. A singular `a` is returned as is.
fn closest_rotation(a: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut q = a;
    for _ in 0..POLAR_MAX_ITERATIONS {
        let Some(inv_t) = inverse_transpose(&q) else { return a };
        let mut delta = 0.0f64;
        for i in 0..3 {
            for j in 0..3 {
                let next = 0.5 * (q[i][j] + inv_t[i][j]);
                delta = delta.max((next - q[i][j]).abs());
                q[i][j] = next;
            }
        }
        if delta < POLAR_TOLERANCE {
            break;
        }
    }
    q
}

fn inverse_transpose(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    // Cofactor matrix divided by the determinant is exactly the inverse transposed.
    let cof = |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let c = [
        [cof(1, 2, 1, 2), -cof(1, 2, 0, 2), cof(1, 2, 0, 1)],
        [-cof(0, 2, 1, 2), cof(0, 2, 0, 2), -cof(0, 2, 0, 1)],
        [cof(0, 1, 1, 2), -cof(0, 1, 0, 2), cof(0, 1, 0, 1)],
    ];
    let det = m[0][0] * c[0][0] + m[0][1] * c[0][1] + m[0][2] * c[0][2];
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    Some(c.map(|row| row.map(|v| v / det)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_transpose_of_rotation_is_itself() {
        let r = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(inverse_transpose(&r), Some(r));
    }

    #[test]
    fn a_reorientation_and_its_inverse_restore_the_grid_exactly() {
        // PIR, the spine CT's orientation: x runs posterior, y inferior, z right; one odd edge per axis.
        let pir: Affine =
            [[0.0, 0.0, 1.5, -40.0], [-1.5, 0.0, 0.0, 30.0], [0.0, -1.5, 0.0, 20.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(AxisCodes::of(&pir).to_string(), "PIR");
        let shape = [5, 3, 4];
        let labels = Labels { data: (0..60).collect(), shape, affine: pir };
        let to_ras = Reorientation::to(&pir, shape, AxisCodes::RAS).unwrap();
        let ras = to_ras.apply_labels(&labels);
        assert_eq!(AxisCodes::of(&ras.affine), AxisCodes::RAS);
        assert_eq!(ras.shape, to_ras.shape());
        assert_eq!(to_ras.spacing([1.0, 2.0, 3.0]), [3.0, 1.0, 2.0]);
        let back = to_ras.inverse().apply_labels(&ras);
        assert_eq!(back.data, labels.data);
        assert_eq!(back.shape, shape);
        for (a, b) in back.affine.iter().flatten().zip(pir.iter().flatten()) {
            assert!((a - b).abs() < 1e-9, "{back:?}");
        }
        // Any target, not only RAS: the same voxel keeps its world position.
        let lps = Reorientation::to(&pir, shape, "LPS".to_string().try_into().unwrap()).unwrap();
        assert_eq!(AxisCodes::of(&lps.apply_labels(&labels).affine).to_string(), "LPS");
        assert!(Reorientation::to(&pir, shape, AxisCodes::of(&pir)).is_none(), "already there");
    }

    #[test]
    fn axis_codes_read_three_distinct_directions() {
        assert_eq!(AxisCodes::try_from("ras".to_string()), Ok(AxisCodes::RAS));
        assert!(AxisCodes::try_from("RAR".to_string()).is_err());
        assert!(AxisCodes::try_from("RA".to_string()).is_err());
        assert!(!AxisCodes(['R', 'A', '?']).is_definite());
    }

    #[test]
    fn shear_is_resolved_to_the_dominant_axis() {
        let a: Affine = [[1.0, 0.3, 0.0, 0.0], [0.1, -1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(orientation_codes(&a), ['R', 'P', 'S']);
    }
}
