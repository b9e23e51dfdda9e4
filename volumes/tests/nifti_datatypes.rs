//! Every datatype, in both byte orders, both NIfTI versions, plain and gzipped, decodes to the exact
//! values written by hand; and the library's writer round-trips every datatype.

mod nifti_common;

use nifti_common::{Spec, code_of, encode, gzip, put};
use voxplan_volumes::nifti::{self, DataType, Endian};
use voxplan_volumes::{Labels, Volume};

/// Values each type holds exactly, including its extremes where f32 represents them.
fn sample_values(dt: DataType) -> Vec<f64> {
    let base: Vec<f64> = match dt {
        DataType::U8 => vec![0.0, 1.0, 127.0, 128.0, 255.0],
        DataType::I8 => vec![-128.0, -1.0, 0.0, 1.0, 127.0],
        DataType::U16 => vec![0.0, 1.0, 256.0, 40000.0, 65535.0],
        DataType::I16 => vec![-32768.0, -300.0, 0.0, 258.0, 32767.0],
        DataType::U32 => vec![0.0, 1.0, 65536.0, 16_777_216.0, 4_294_967_040.0],
        DataType::I32 => vec![-2_147_483_648.0, -70000.0, 0.0, 70000.0, 2_147_483_520.0],
        DataType::U64 => vec![0.0, 1.0, 4_294_967_296.0, 2f64.powi(40), 2f64.powi(63)],
        DataType::I64 => vec![-(2f64.powi(62)), -5.0, 0.0, 5.0, 2f64.powi(62)],
        DataType::F32 => vec![-1.5, 0.0, 3.25, 1e-30, -6.5e20],
        DataType::F64 => vec![-1.5, 0.0, 3.25, 1e-30, -6.5e20],
    };
    // 4×3×2 = 24 voxels: repeat the pattern so every position in a chunk sees every value.
    (0..24).map(|i| base[i % base.len()]).collect()
}

#[test]
fn every_type_both_endians_both_versions_plain_and_gzip() {
    let dir = tempfile::tempdir().expect("tempdir");
    for dt in DataType::ALL {
        let values = sample_values(dt);
        let (code, bits) = code_of(dt.name());
        for big in [false, true] {
            for version in [1u8, 2] {
                let spec = Spec { version, big_endian: big, datatype: code, bitpix: bits, ..Spec::default() };
                let bytes = spec.single_file(&encode(dt.name(), &values, big));
                for gz in [false, true] {
                    let name = format!("{dt}_{big}_{version}.nii{}", if gz { ".gz" } else { "" });
                    let path = put(dir.path(), &name, &if gz { gzip(&bytes) } else { bytes.clone() });
                    let h = nifti::read_header(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!((h.version, h.datatype, h.shape), (version, dt, [4, 3, 2]), "{name}");
                    assert_eq!(h.endian, if big { Endian::Big } else { Endian::Little }, "{name}");
                    let v = nifti::read_volume(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let want: Vec<f32> = values.iter().map(|&x| x as f32).collect();
                    assert_eq!(v.data, want, "{name}");
                }
            }
        }
    }
}

#[test]
fn writer_round_trips_every_type_plain_and_gzip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let affine = [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -4.0], [0.0, 0.0, 3.0, 7.5], [0.0, 0.0, 0.0, 1.0]];
    for dt in DataType::ALL {
        let data: Vec<f32> = sample_values(dt).iter().map(|&x| x as f32).collect();
        let v = Volume { data, shape: [4, 3, 2], channels: 1, affine };
        for ext in ["nii", "nii.gz"] {
            let path = dir.path().join(format!("w_{dt}.{ext}"));
            nifti::write_volume(&path, &v, dt).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let back = nifti::read_volume(&path).expect("read back");
            assert_eq!(back.data, v.data, "{dt} {ext}");
            assert_eq!(back.shape, v.shape);
            assert_eq!(nifti::read_header(&path).expect("header").datatype, dt);
            for (row, want) in back.affine.iter().zip(&affine) {
                for (a, b) in row.iter().zip(want) {
                    assert!((a - b).abs() < 1e-5, "{dt} {ext}: {:?}", back.affine);
                }
            }
        }
    }
}

#[test]
fn four_d_writes_and_reads_as_channels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = Volume::zeros([3, 2, 2], 3, voxplan_volumes::IDENTITY_AFFINE);
    for (i, x) in v.data.iter_mut().enumerate() {
        *x = i as f32 * 0.5;
    }
    let path = dir.path().join("four.nii.gz");
    nifti::write_volume(&path, &v, DataType::F32).expect("write");
    let h = nifti::read_header(&path).expect("header");
    assert_eq!((h.dims.clone(), h.channels), (vec![3, 2, 2, 3], 3));
    let back = nifti::read_volume(&path).expect("read");
    assert_eq!(back, v);
    assert_eq!(back.channel(2)[0], 12.0);
}

#[test]
fn labels_round_trip_in_every_integer_type_that_holds_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Labels {
        data: (0..24).map(|i| (i * 5) as u16).collect(),
        shape: [4, 3, 2],
        affine: voxplan_volumes::IDENTITY_AFFINE,
    };
    for dt in DataType::ALL {
        let path = dir.path().join(format!("l_{dt}.nii.gz"));
        nifti::write_labels(&path, &l, dt).unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(nifti::read_labels(&path).expect("read"), l, "{dt}");
    }
}

#[test]
fn decoding_into_one_shared_buffer_equals_separate_reads_for_every_type() {
    // The loader's path: several files decoded back to back into one buffer, each at its offset, over
    // stale contents (the buffer is reused). Every datatype and byte order, gzipped and plain.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for dt in DataType::ALL {
        let (code, bits) = code_of(dt.name());
        for big in [false, true] {
            let spec = Spec { big_endian: big, datatype: code, bitpix: bits, ..Spec::default() };
            let bytes = spec.single_file(&encode(dt.name(), &sample_values(dt), big));
            let gz = big; // alternate: big-endian files gzipped, little-endian plain
            let name = format!("into_{dt}_{big}.nii{}", if gz { ".gz" } else { "" });
            files.push(put(dir.path(), &name, &if gz { gzip(&bytes) } else { bytes }));
        }
    }
    let headers: Vec<_> = files.iter().map(|f| nifti::read_header(f).expect("header")).collect();
    let per_file = headers[0].voxel_count();
    let room = headers.iter().enumerate().map(|(i, h)| i * per_file + nifti::decode_room(h).expect("room")).max();
    let mut buffer = vec![f32::NAN; room.expect("files")];
    for (i, (f, h)) in files.iter().zip(&headers).enumerate() {
        nifti::read_volume_into(f, h, &mut buffer[i * per_file..]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for (i, f) in files.iter().enumerate() {
        let alone = nifti::read_volume(f).expect("read");
        let shared = &buffer[i * per_file..(i + 1) * per_file];
        assert!(alone.data.iter().zip(shared).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", f.display());
    }
    let too_small = nifti::read_volume_into(&files[0], &headers[0], &mut [0.0; 3]);
    assert!(too_small.is_err(), "a buffer without room is an error, not a panic");
}
