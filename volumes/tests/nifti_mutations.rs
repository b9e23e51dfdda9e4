//! A deterministic, fuzz-like sweep: valid files with random header bytes overwritten or cut short must give
//! a volume or an error naming the file, never a panic (cargo-fuzz's `read_nifti` target does the same
//! without a time limit, but needs a nightly toolchain and cargo-fuzz; this runs in every `cargo test`).

mod nifti_common;

use std::path::Path;

use nifti_common::{Spec, encode, extension, gzip, put};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voxplan_volumes::nifti;

fn seeds() -> Vec<Vec<u8>> {
    let voxels = |big| encode("int16", &(0..24).map(f64::from).collect::<Vec<_>>(), big);
    let mut out = Vec::new();
    for version in [1u8, 2] {
        for big in [false, true] {
            out.push(Spec { version, big_endian: big, ..Spec::default() }.single_file(&voxels(big)));
            let exts = vec![extension(6, b"comment", big), extension(4, &[1; 20], big)];
            out.push(Spec { version, big_endian: big, extensions: exts, ..Spec::default() }.single_file(&voxels(big)));
        }
    }
    out.push(
        Spec { sform_code: 0, qform_code: 1, quatern: [0.0, 0.0, 0.7], ..Spec::default() }.single_file(&voxels(false)),
    );
    out
}

/// Overwrites 1–8 bytes (mostly in the header and extension region) or cuts the file short.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    if rng.random_ratio(1, 8) {
        b.truncate(rng.random_range(0..b.len()));
        return b;
    }
    for _ in 0..rng.random_range(1..=8) {
        let at =
            if rng.random_ratio(7, 8) { rng.random_range(0..b.len().min(600)) } else { rng.random_range(0..b.len()) };
        b[at] = match rng.random_range(0..4) {
            0 => 0,
            1 => 0xff,
            2 => b[at] ^ (1 << rng.random_range(0..8)),
            _ => rng.random(),
        };
    }
    b
}

#[test]
fn mutated_single_files_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(20261202);
    let name = Path::new("mutant.nii");
    let (mut ok, mut err) = (0, 0);
    for seed in seeds() {
        for i in 0..3000 {
            let mut bytes = mutate(&mut rng, &seed);
            if i % 3 == 0 {
                bytes = gzip(&bytes);
            }
            let _ = nifti::parse_header_bytes(name, &bytes);
            match nifti::read_volume_from_bytes(name, &bytes) {
                Ok(v) => {
                    assert_eq!(v.data.len(), v.voxels() * v.channels);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("mutant.nii"), "{e}");
                    err += 1;
                }
            }
            let _ = nifti::read_labels_from_bytes(name, &bytes);
        }
    }
    eprintln!("{ok} read, {err} refused");
    assert!(ok > 100 && err > 100, "the sweep should hit both outcomes: {ok} read, {err} refused");
}

#[test]
fn mutated_pairs_and_analyze_headers_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let voxels = encode("int16", &(0..24).map(f64::from).collect::<Vec<_>>(), false);
    let mut analyze = Spec { pair: true, sform_code: 0, ..Spec::default() }.header();
    analyze[344..348].fill(0);
    let seeds = [
        Spec { pair: true, ..Spec::default() }.header(),
        Spec { version: 2, pair: true, ..Spec::default() }.header(),
        analyze,
    ];
    put(dir.path(), "p.img", &voxels);
    for seed in &seeds {
        for _ in 0..600 {
            let mut header = mutate(&mut rng, seed);
            if rng.random_ratio(1, 4) {
                header.extend([1, 0, 0, 0]);
                header.extend((0..rng.random_range(0..40)).map(|_| rng.random::<u8>()));
            }
            let hdr = put(dir.path(), "p.hdr", &header);
            if let Err(e) = nifti::read_volume(&hdr) {
                assert!(e.to_string().contains("p.hdr") || e.to_string().contains("p.img"), "{e}");
            }
            let _ = nifti::read_header(&hdr);
        }
    }
}
