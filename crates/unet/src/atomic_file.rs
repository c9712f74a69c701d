//! The one way the workspace writes a file: whole or not at all.
//!
//! The bytes go to a temporary file in the destination's own directory (so
//! the final rename never crosses a file system), are synced to disk, and
//! the temporary file is then renamed over the destination; the directory is
//! synced afterwards where the platform allows, so the rename itself
//! survives a crash. A reader sees the old file or the new one, never a part
//! of either. On any failure the temporary file is removed and the old file
//! is left as it was.
//!
//! Temporary files are named `.tmp-<file name>.<random>` ([`TEMP_PREFIX`]),
//! so a file left behind by a killed process can be recognised and removed.

use std::io::Write;
use std::path::{Path, PathBuf};

/// How every temporary file written by [`write_atomic`] starts.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A failed atomic write: the destination and the operating system's reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` to `path` atomically (see the module documentation).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let fail = |source| WriteError { path: path.to_path_buf(), source };
    let name = path
        .file_name()
        .ok_or_else(|| fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!("{TEMP_PREFIX}{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    // tempfile creates 0600 files; ask for what `File::create` gives (0666
    // less the umask) so that replacing a file keeps it readable as before.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    // Dropping the NamedTempFile on any error below deletes it.
    let mut tmp = builder.tempfile_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: not every platform can open or sync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}
