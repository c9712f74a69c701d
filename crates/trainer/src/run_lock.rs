//! One writer per run directory: an advisory lock on `<run>/lock`, held
//! for the life of a [`crate::train::Trainer`]. A second `train` (fresh or
//! `--resume`) on the same directory fails at once instead of mixing its
//! config, checkpoints and metrics with the first one's.
//!
//! The lock is the operating system's (`flock` on Unix, `LockFileEx` on
//! Windows), so it goes away with the process however that ends; the file
//! itself stays and only records the holder's process id for the error
//! message.

use crate::{Error, Result};
use diffuse_unet::atomic_file::TEMP_PREFIX;
use fs4::{FileExt, TryLockError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The name of the lock file inside a run directory.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a run directory; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    _file: File,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, or fails at once with
    /// [`Error::Locked`] when another process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: the holder's pid must stay readable until we own the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Locked { dir: dir.to_path_buf(), pid: text.trim().parse().ok() });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the temporary files (`.tmp-*`) that writes killed midway
    /// left in the run directory and its immediate sub-folders. Safe only
    /// because the lock is held: no other process is writing here.
    pub fn remove_stale_temp_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut removed = Vec::new();
        let mut folders = vec![dir.to_path_buf()];
        folders.extend(entries(dir)?.into_iter().filter(|p| p.is_dir()));
        for folder in folders {
            for p in entries(&folder)? {
                let is_temp = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX));
                if is_temp && p.is_file() {
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                    removed.push(p);
                }
            }
        }
        Ok(removed)
    }
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails_and_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let first = RunLock::acquire(&run).unwrap();
        assert_eq!(std::fs::read_to_string(first.path()).unwrap(), std::process::id().to_string());
        let err = RunLock::acquire(&run).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Locked { pid: Some(p), .. } if p == std::process::id()), "{msg}");
        assert!(msg.contains(&run.display().to_string()) && msg.contains("in use"), "{msg}");
        // Another directory is independent.
        let _other = RunLock::acquire(&d.path().join("other")).unwrap();
        drop(first);
        let again = RunLock::acquire(&run).unwrap();
        assert!(again.path().is_file());
    }

    #[test]
    fn stale_temporary_files_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let ck = run.join("checkpoints");
        std::fs::create_dir_all(&ck).unwrap();
        let keep = [run.join("metrics.jsonl"), ck.join("ckpt-00000002.safetensors"), ck.join("x.tmp-y")];
        let stale = [run.join(".tmp-config.json.abc"), ck.join(".tmp-ckpt-00000004.safetensors.Zx9")];
        for p in keep.iter().chain(&stale) {
            std::fs::write(p, b"x").unwrap();
        }
        let lock = RunLock::acquire(&run).unwrap();
        let mut removed = lock.remove_stale_temp_files().unwrap();
        removed.sort();
        let mut want = stale.to_vec();
        want.sort();
        assert_eq!(removed, want);
        assert!(keep.iter().all(|p| p.is_file()) && stale.iter().all(|p| !p.exists()));
    }
}
