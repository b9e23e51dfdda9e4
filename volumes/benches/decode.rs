//! `cargo bench -p voxplan-volumes --bench decode [-- [--repeats N] [--keep DIR] [--labels FILE]... [FILE]...]`
//!
//! The same measurement as `voxplan bench decode` (both call [`time_file`] and print [`format_table`]), in a
//! release binary that does not link burn. Without files it writes and times a BraTS-like case; `--labels`
//! marks a file as a label map (read as checked `u16`, as training reads it).

use std::path::PathBuf;

use voxplan_volumes::bench_decode::{ReadAs, format_table, time_file, write_brats_like_case};

/// Timed repetitions per file when `--repeats` is not given (the median is reported).
const DEFAULT_REPEATS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut repeats = DEFAULT_REPEATS;
    let mut keep: Option<PathBuf> = None;
    let mut files: Vec<(PathBuf, ReadAs)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {} // cargo bench passes this to every bench target
            "--repeats" => repeats = args.next().ok_or("--repeats needs a number")?.parse()?,
            "--keep" => keep = Some(args.next().ok_or("--keep needs a folder")?.into()),
            "--labels" => files.push((args.next().ok_or("--labels needs a file")?.into(), ReadAs::Labels)),
            _ => files.push((a.into(), ReadAs::Image)),
        }
    }
    let _temp;
    if files.is_empty() {
        let dir = match keep {
            Some(d) => d,
            None => {
                _temp = tempfile::tempdir()?;
                _temp.path().to_path_buf()
            }
        };
        std::fs::create_dir_all(&dir)?;
        eprintln!("writing a BraTS-like case into {} ...", dir.display());
        files = write_brats_like_case(&dir)?;
    }
    let timings = files.iter().map(|(f, read_as)| time_file(f, *read_as, repeats)).collect::<Result<Vec<_>, _>>()?;
    print!("{}", format_table(&timings));
    Ok(())
}
