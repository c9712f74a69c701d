//! `write_atomic`: whole files or none, the old file kept on failure, no
//! temporary file left behind.

use diffuse_unet::atomic_file::{write_atomic, TEMP_PREFIX};
use std::path::Path;

/// The names in `dir` that look like a temporary file of an atomic write.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

#[test]
fn writes_and_replaces_whole_files() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("out.bin");
    let first: Vec<u8> = (0..10_007u32).map(|i| (i * 31 % 251) as u8).collect();
    write_atomic(&p, &first).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), first);
    // A shorter file replaces a longer one completely.
    write_atomic(&p, b"short").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"short");
    write_atomic(&p, b"").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"");
    assert!(temp_files(tmp.path()).is_empty());
}

#[cfg(unix)]
#[test]
fn new_files_get_the_same_permissions_as_file_create() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    let p = tmp.path().join("atomic");
    write_atomic(&p, b"x").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p), mode(&reference), "not the owner-only 0600 of a bare temporary file");
}

#[test]
fn a_parent_that_is_a_file_is_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"keep me").unwrap();
    let p = file.join("x.npy");
    let e = write_atomic(&p, b"data").unwrap_err();
    assert!(e.to_string().starts_with(&p.display().to_string()), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(temp_files(tmp.path()).is_empty());
}

#[test]
fn a_failed_rename_removes_the_temporary_file() {
    // The destination is a non-empty directory: the temporary file is
    // written and synced, then the rename fails.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("occupied");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("inside"), b"old").unwrap();
    let e = write_atomic(&p, b"new").unwrap_err();
    assert!(e.to_string().contains("occupied"), "{e}");
    assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"old");
    assert!(temp_files(tmp.path()).is_empty(), "left {:?}", temp_files(tmp.path()));
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_keeps_the_old_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let p = dir.join("ckpt.safetensors");
    write_atomic(&p, b"old contents").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions: then there is nothing to test.
    let probe = dir.join("probe");
    let privileged = std::fs::write(&probe, b"").is_ok();
    let result = write_atomic(&p, b"new contents");
    let _ = std::fs::remove_file(&probe);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if privileged {
        eprintln!("skipped: this user can write into a read-only directory");
        return;
    }
    assert!(result.is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
    assert!(temp_files(&dir).is_empty());
}

#[test]
fn concurrent_writers_leave_one_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("shared.json");
    let payload = |k: u8| vec![b'a' + k; 64 * 1024 + k as usize];
    std::thread::scope(|s| {
        for k in 0..8u8 {
            let p = &p;
            s.spawn(move || {
                for _ in 0..5 {
                    write_atomic(p, &payload(k)).unwrap();
                }
            });
        }
    });
    let got = std::fs::read(&p).unwrap();
    assert!((0..8).any(|k| got == payload(k)), "a mixture of writes ({} bytes)", got.len());
    assert!(temp_files(tmp.path()).is_empty());
}
