//! An on-disk cache of NVRTC's output (CUBIN or PTX), so a second process
//! on the same machine compiles nothing. An entry is keyed by a SHA-256 of
//! everything the image depends on: the kernel file and every header, the
//! NVRTC options (architecture included), the output kind and the NVRTC
//! version. Entries are written atomically (a temporary file renamed into
//! place) and carry a SHA-256 of their image: a torn, truncated or altered
//! entry is ignored and recompiled over.
//!
//! Where: `$DIFFUSE_KERNEL_CACHE` (`off` or `0` turns the cache off), else
//! `$XDG_CACHE_HOME/diffuse/kernels`, else `~/.cache/diffuse/kernels`. A
//! cache that cannot be read or written only costs the compile.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an entry starts with, before the image's SHA-256 and the image.
const MAGIC: &[u8] = b"diffuse-kernel-cache v1\n";

/// Everything a compiled image depends on.
#[derive(Clone, Debug)]
pub struct CacheKey {
    /// File name part: `noise.cu` for sm_90 becomes `noise-sm_90-<hash>.cubin`.
    stem: String,
    hash: String,
}

impl CacheKey {
    /// The key of kernel file `name` with `source`, compiled with `headers`
    /// (name, source) available, `options`, for `target` (such as `sm_90`)
    /// as `kind` (`cubin` or `ptx`) by NVRTC `nvrtc`.
    pub fn new(
        name: &str,
        source: &str,
        headers: &[(&str, &str)],
        options: &[String],
        target: &str,
        kind: &str,
        nvrtc: (i32, i32),
    ) -> CacheKey {
        let mut h = Sha256::new();
        // length-prefixed fields: no two different inputs hash the same bytes
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(name.as_bytes());
        field(source.as_bytes());
        for (hn, hs) in headers {
            field(hn.as_bytes());
            field(hs.as_bytes());
        }
        for o in options {
            field(o.as_bytes());
        }
        field(target.as_bytes());
        field(kind.as_bytes());
        field(format!("nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
        let hash = hex(&h.finalize());
        let stem = format!("{}-{target}", name.trim_end_matches(".cu"));
        let ext = if kind == "ptx" { "ptx" } else { "cubin" };
        CacheKey { stem: format!("{stem}-{}.{ext}", &hash[..32]), hash }
    }

    /// The entry's file name.
    pub fn file_name(&self) -> &str {
        &self.stem
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cache directory.
#[derive(Clone, Debug)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    pub fn at(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache { dir: dir.into() }
    }

    /// The cache the environment asks for (see the module docs); None when
    /// turned off or when no home directory is known.
    pub fn from_env() -> Option<KernelCache> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Self::dir_from(var("DIFFUSE_KERNEL_CACHE"), var("XDG_CACHE_HOME"), var("HOME")).map(KernelCache::at)
    }

    /// The directory from `DIFFUSE_KERNEL_CACHE`, `XDG_CACHE_HOME`, `HOME`.
    pub fn dir_from(
        explicit: Option<std::ffi::OsString>,
        xdg: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> Option<PathBuf> {
        if let Some(e) = explicit {
            return (e != "off" && e != "0").then(|| PathBuf::from(e));
        }
        if let Some(x) = xdg {
            return Some(Path::new(&x).join("diffuse").join("kernels"));
        }
        home.map(|h| Path::new(&h).join(".cache").join("diffuse").join("kernels"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// The cached image, if the entry exists and is intact.
    pub fn load(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let rest = bytes.strip_prefix(MAGIC)?;
        if rest.len() < 64 + 1 {
            return None;
        }
        let (sum, rest) = rest.split_at(64);
        let (image_key, image) = rest.split_at(key.hash().len().min(rest.len()));
        // the full key is stored too: a file name prefix collision is a miss
        if image_key != key.hash().as_bytes() || sum != hex(&Sha256::digest(image)).as_bytes() {
            return None;
        }
        Some(image.to_vec())
    }

    /// Writes `image` for `key` atomically: a temporary file in the cache
    /// directory, synced, renamed over the entry.
    pub fn store(&self, key: &CacheKey, image: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::Builder::new().prefix(&format!(".tmp-{}.", key.file_name())).tempfile_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(hex(&Sha256::digest(image)).as_bytes())?;
        tmp.write_all(key.hash().as_bytes())?;
        tmp.write_all(image)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(key)).map_err(|e| e.error)?;
        Ok(())
    }

    /// The cached image for `key`, or `compile`'s, stored for next time
    /// (a failed store is only logged). The flag says whether it was a hit.
    pub fn get_or_compile<E>(
        &self,
        key: &CacheKey,
        compile: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<(Vec<u8>, bool), E> {
        if let Some(image) = self.load(key) {
            return Ok((image, true));
        }
        let image = compile()?;
        if let Err(e) = self.store(key, &image) {
            eprintln!("diffuse: could not cache a compiled kernel in {}: {e}", self.dir.display());
        }
        Ok((image, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: &str, options: &[&str], target: &str, nvrtc: (i32, i32)) -> CacheKey {
        let options: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        CacheKey::new("noise.cu", source, &[("philox.cuh", "// p")], &options, target, "cubin", nvrtc)
    }

    fn scratch(name: &str) -> KernelCache {
        KernelCache::at(tempfile::Builder::new().prefix(name).tempdir().unwrap().keep())
    }

    #[test]
    fn keys_change_with_everything_the_image_depends_on() {
        let base = key("src", &["--fmad=false"], "sm_90", (12, 9));
        assert_eq!(base.hash(), key("src", &["--fmad=false"], "sm_90", (12, 9)).hash());
        for other in [
            key("src ", &["--fmad=false"], "sm_90", (12, 9)),
            key("src", &[], "sm_90", (12, 9)),
            key("src", &["--fmad=false"], "sm_80", (12, 9)),
            key("src", &["--fmad=false"], "sm_90", (12, 8)),
            CacheKey::new(
                "noise.cu",
                "src",
                &[("philox.cuh", "// q")],
                &["--fmad=false".into()],
                "sm_90",
                "cubin",
                (12, 9),
            ),
            CacheKey::new(
                "noise.cu",
                "src",
                &[("philox.cuh", "// p")],
                &["--fmad=false".into()],
                "sm_90",
                "ptx",
                (12, 9),
            ),
        ] {
            assert_ne!(base.hash(), other.hash());
        }
        assert!(base.file_name().starts_with("noise-sm_90-") && base.file_name().ends_with(".cubin"));
    }

    #[test]
    fn a_stored_image_is_loaded_and_the_second_compile_is_skipped() {
        let cache = scratch("diffuse-kcache-hit");
        let k = key("src", &[], "sm_90", (12, 9));
        assert_eq!(cache.load(&k), None);
        let image = b"\x7fELF not really".to_vec();
        let (got, hit) = cache.get_or_compile(&k, || Ok::<_, ()>(image.clone())).unwrap();
        assert_eq!((got, hit), (image.clone(), false));
        let (got, hit) = cache.get_or_compile(&k, || -> Result<Vec<u8>, ()> { panic!("compiled again") }).unwrap();
        assert_eq!((got, hit), (image, true));
        // no temporary files left behind
        let names: Vec<String> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [k.file_name().to_string()]);
        std::fs::remove_dir_all(cache.dir()).unwrap();
    }

    #[test]
    fn corrupt_entries_are_ignored_and_replaced() {
        let cache = scratch("diffuse-kcache-corrupt");
        let k = key("src", &[], "sm_80", (12, 9));
        let image = vec![7u8; 300];
        cache.store(&k, &image).unwrap();
        let good = std::fs::read(cache.path(&k)).unwrap();
        let damaged: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..good.len() - 1].to_vec(),
            good[..MAGIC.len() + 10].to_vec(),
            {
                let mut b = good.clone();
                *b.last_mut().unwrap() ^= 1;
                b
            },
            {
                let mut b = good.clone();
                b[0] ^= 1;
                b
            },
            {
                let mut b = good.clone();
                b[MAGIC.len() + 64] ^= 1;
                b
            }, // the stored key
        ];
        for (i, bad) in damaged.into_iter().enumerate() {
            std::fs::write(cache.path(&k), bad).unwrap();
            assert_eq!(cache.load(&k), None, "damage {i} went unnoticed");
            let (got, hit) = cache.get_or_compile(&k, || Ok::<_, ()>(image.clone())).unwrap();
            assert_eq!((got.as_slice(), hit), (image.as_slice(), false), "damage {i}");
            assert_eq!(cache.load(&k).as_deref(), Some(image.as_slice()), "damage {i}: rewritten");
        }
        std::fs::remove_dir_all(cache.dir()).unwrap();
    }

    #[test]
    fn an_unwritable_cache_only_costs_the_compile() {
        // a regular file where the directory should be
        let file = tempfile::NamedTempFile::new().unwrap();
        let cache = KernelCache::at(file.path().join("kernels"));
        let k = key("src", &[], "sm_90", (12, 9));
        let (got, hit) = cache.get_or_compile(&k, || Ok::<_, ()>(vec![1, 2, 3])).unwrap();
        assert_eq!((got, hit), (vec![1, 2, 3], false));
        assert_eq!(cache.get_or_compile(&k, || Err::<Vec<u8>, _>("nvrtc failed")), Err("nvrtc failed"));
    }

    #[test]
    fn the_directory_follows_the_environment() {
        use std::ffi::OsString;
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(KernelCache::dir_from(s("/c"), s("/x"), s("/h")), Some(PathBuf::from("/c")));
        assert_eq!(KernelCache::dir_from(s("off"), s("/x"), s("/h")), None);
        assert_eq!(KernelCache::dir_from(s("0"), None, None), None);
        assert_eq!(KernelCache::dir_from(None, s("/x"), s("/h")), Some(PathBuf::from("/x/diffuse/kernels")));
        assert_eq!(KernelCache::dir_from(None, None, s("/h")), Some(PathBuf::from("/h/.cache/diffuse/kernels")));
        assert_eq!(KernelCache::dir_from(None, None, None), None);
    }
}
