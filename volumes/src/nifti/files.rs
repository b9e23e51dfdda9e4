//! Which file holds the header and which the voxels: `.nii[.gz]` singles and Analyze-style
//! `.hdr[.gz]`/`.img[.gz]` pairs (either member may be named on the command line).

use std::path::{Path, PathBuf};

/// Header file and, for pairs, the image file candidates to try in order.
pub struct FileSet {
    pub header: PathBuf,
    /// Empty for a single `.nii` file.
    pub images: Vec<PathBuf>,
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
}
