//! Output paths checked before the work that fills them: a command that
//! samples for minutes must not fail only when it writes the result.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Errors unless `path` can be written: not a directory, in an existing
/// directory where a file can be created (probed with a temporary file
/// named like the atomic writer's, removed at once).
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        bail!("{what} {}: is a directory", path.display());
    }
    let name = path.file_name().with_context(|| format!("{what} {}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("{what} {}: the directory {} does not exist", path.display(), dir.display());
    }
    let probe = dir.join(format!(
        "{}{}.probe-{}",
        diffuse_unet::atomic_file::TEMP_PREFIX,
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("{what} {}: cannot write in {}", path.display(), dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
