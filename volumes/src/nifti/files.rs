//! Which file holds the header and which the voxels: `.nii[.gz]` singles and Analyze-style
//! `.hdr[.gz]`/`.img[.gz]` pairs (either member may be named on the command line).

use std::path::{Path, PathBuf};

/// Header file and, for pairs, the image file candidates to try in order.
pub struct FileSet {
    pub header: PathBuf,
    /// Empty for a single `.nii` file.
    pub images: Vec<PathBuf>,
}

/// Where the voxels of a header are, as the file name says (nibabel decides by the name alone; the magic
/// is only checked to be one of the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `.nii[.gz]`: the voxels follow the header in the same file, whatever its magic.
    Single,
    /// `.hdr[.gz]` / `.img[.gz]`: the voxels are in the `.img`.
    Pair,
    /// Any other name: the magic decides (`n+1`/`n+2` single, `ni1`/`ni2` pair).
    ByMagic,
}

/// The container a file name implies.
pub fn container(path: &Path) -> Container {
    match split(path) {
        Some((_, ext, _)) if ext == "nii" => Container::Single,
        Some((_, ext, _)) if ext == "hdr" || ext == "img" => Container::Pair,
        _ => Container::ByMagic,
    }
}

/// SPM's affine file beside an Analyze pair (`x.mat`, or `x.mat.gz` for gzipped pairs), when present and
/// not empty: nibabel's `Spm99AnalyzeImage` takes the affine from it.
pub fn spm_mat(path: &Path) -> Option<PathBuf> {
    let (stem, _, gz) = split(path)?;
    [gz, !gz]
        .into_iter()
        .map(|gz| path.with_file_name(format!("{stem}.mat{}", if gz { ".gz" } else { "" })))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
}

/// Splits a lower-cased file name into (stem, extension without `.gz`, gzipped).
fn split(path: &Path) -> Option<(String, String, bool)> {
    let name = path.file_name()?.to_str()?;
    let (base, gz) = match name.len().checked_sub(3) {
        Some(cut) if name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".gz") => (&name[..cut], true),
        _ => (name, false),
    };
    let dot = base.rfind('.')?;
    Some((base[..dot].to_string(), base[dot + 1..].to_ascii_lowercase(), gz))
}

/// Resolves the files behind `path`.
pub fn resolve(path: &Path) -> FileSet {
    let Some((stem, ext, gz)) = split(path) else {
        return FileSet { header: path.to_path_buf(), images: Vec::new() };
    };
    let sibling = |ext: &str, gz: bool| path.with_file_name(format!("{stem}.{ext}{}", if gz { ".gz" } else { "" }));
    match ext.as_str() {
        "hdr" => FileSet { header: path.to_path_buf(), images: vec![sibling("img", gz), sibling("img", !gz)] },
        "img" => {
            FileSet { header: existing_or_first(sibling("hdr", gz), sibling("hdr", !gz)), images: vec![path.into()] }
        }
        _ => FileSet { header: path.to_path_buf(), images: Vec::new() },
    }
}

/// Image candidates for a single-named file whose magic says "pair" (`ni1`): `x.nii` → `x.img`.
pub fn pair_images(path: &Path) -> Vec<PathBuf> {
    match split(path) {
        Some((stem, _, gz)) => {
            let sib = |gz: bool| path.with_file_name(format!("{stem}.img{}", if gz { ".gz" } else { "" }));
            vec![sib(gz), sib(!gz)]
        }
        None => Vec::new(),
    }
}

fn existing_or_first(a: PathBuf, b: PathBuf) -> PathBuf {
    if !a.exists() && b.exists() { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_resolve_both_ways() {
        let set = resolve(Path::new("/d/brain.hdr"));
        assert_eq!(set.images, vec![PathBuf::from("/d/brain.img"), PathBuf::from("/d/brain.img.gz")]);
        let set = resolve(Path::new("/d/brain.img.gz"));
        assert_eq!(set.header, PathBuf::from("/d/brain.hdr.gz"));
        assert!(resolve(Path::new("/d/brain.nii.gz")).images.is_empty());
        assert!(resolve(Path::new("/d/noext")).images.is_empty());
    }

    #[test]
    fn the_name_decides_the_container() {
        assert_eq!(container(Path::new("/d/a.nii")), Container::Single);
        assert_eq!(container(Path::new("/d/a.NII.GZ")), Container::Single);
        assert_eq!(container(Path::new("/d/a.hdr.gz")), Container::Pair);
        assert_eq!(container(Path::new("/d/a.img")), Container::Pair);
        assert_eq!(container(Path::new("/d/a.bin")), Container::ByMagic);
        assert_eq!(container(Path::new("/d/noext")), Container::ByMagic);
    }
}
