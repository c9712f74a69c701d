//! `.npy` arrays: exact header bytes, round trips, errors.

use diffuse_trainer::npy::{load_npy, npy_bytes, save_npy};
use diffuse_trainer::Error;
use diffuse_unet::atomic_file::TEMP_PREFIX;

fn pattern(n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n * c * h * w).map(|i| (i % 97) as f32 / 96.0).collect()
}

/// Fails if `dir` holds a temporary file of an atomic write.
fn no_temp_files(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(TEMP_PREFIX), "left a temporary file {name}");
    }
}

#[test]
fn npy_header_bytes_are_exact() {
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let bytes = npy_bytes(&data, &[2, 1, 3, 4]).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(&bytes[6..8], &[1, 0]);
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data must start 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3, 4), }"));
    assert!(header.ends_with('\n'));
    assert!(header[..hlen - 1].trim_end().ends_with('}'));
    assert_eq!(bytes.len(), 10 + hlen + 24 * 4);
    let body = &bytes[10 + hlen..];
    assert_eq!(&body[..4], &(-3.0f32).to_le_bytes());
    assert_eq!(&body[4..8], &(-2.5f32).to_le_bytes());
    // The exact NumPy header for a 1-D array: "(5,)" with its trailing comma.
    let b = npy_bytes(&[0.0; 5], &[5]).unwrap();
    let h = std::str::from_utf8(&b[10..]).unwrap();
    assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"));
    // Shape mismatch.
    assert!(matches!(npy_bytes(&[0.0; 5], &[2, 3]), Err(Error::Shape(_))));
}

#[test]
fn npy_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("samples.npy");
    let data = pattern(3, 3, 5, 7);
    save_npy(&p, &data, &[3, 3, 5, 7]).unwrap();
    let (back, shape) = load_npy(&p).unwrap();
    assert_eq!(shape, vec![3, 3, 5, 7]);
    assert_eq!(back, data);
    // Overwrite in place.
    save_npy(&p, &data[..105], &[1, 3, 5, 7]).unwrap();
    assert_eq!(load_npy(&p).unwrap().1, vec![1, 3, 5, 7]);
    no_temp_files(tmp.path());
    // A truncated file is an error.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(load_npy(&p), Err(Error::Truncated { .. })));
}

#[test]
fn writing_into_a_missing_directory_is_an_error() {
    let e = save_npy("/nonexistent/dir/x.npy", &[1.0], &[1]).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/dir/x.npy"));
}
