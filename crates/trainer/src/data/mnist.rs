//! MNIST IDX files (images `0x00000803`, labels `0x00000801`), plain or gzip.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{byte_to_signed, Dataset, DatasetKind};
use crate::error::{Error, Result};
use crate::memory_budget::{MemoryBudget, Need};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Bytes read at a time from a gzip stream whose decompressed size is not
/// known yet: the buffer grows only as data really arrives.
const GZIP_CHUNK: u64 = 1 << 20;

/// How far past its announced end a gzip stream is inflated (into a sink)
/// to tell corrupt data from extra data.
const GZIP_DRAIN: u64 = 64 << 20;

fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound { path: path.to_path_buf() }
    } else {
        Error::io(path, e)
    }
}

fn gzip_error(path: &Path, e: std::io::Error) -> Error {
    Error::CorruptGzip {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "unexpected end of the compressed stream (the file is truncated)".into()
        } else {
            e.to_string()
        },
    }
}

/// A file opened for reading, decompressed on the fly when it starts with
/// the gzip magic bytes (whatever its extension).
struct MaybeGzip {
    reader: Box<dyn Read>,
    /// The file's length when it is not compressed (then sizes are checked
    /// before anything is read).
    plain_len: Option<u64>,
    path: PathBuf,
}

impl MaybeGzip {
    fn open(path: &Path) -> Result<MaybeGzip> {
        let mut file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut magic = [0u8; 2];
        let got = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        let path = path.to_path_buf();
        if got == 2 && magic == GZIP_MAGIC {
            let reader = Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)));
            Ok(MaybeGzip { reader, plain_len: None, path })
        } else {
            Ok(MaybeGzip { reader: Box::new(file), plain_len: Some(len), path })
        }
    }

    /// Fills `buf` as far as the data goes; returns how much was read.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize> {
        let r = read_up_to(&mut self.reader, buf);
        r.map_err(|e| if self.plain_len.is_some() { Error::io(&self.path, e) } else { gzip_error(&self.path, e) })
    }

    /// Reads at most `limit` bytes, growing the buffer only as data arrives.
    fn read_at_most(&mut self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; GZIP_CHUNK.min(limit) as usize];
        while (out.len() as u64) < limit {
            let want = (limit - out.len() as u64).min(chunk.len() as u64) as usize;
            let got = self.read_up_to(&mut chunk[..want])?;
            if got == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..got]);
        }
        Ok(out)
    }

    /// Reads up to `limit` more bytes into a sink, for the stream's errors.
    fn drain(&mut self, limit: u64) -> Result<()> {
        let mut rest = (&mut self.reader).take(limit);
        match std::io::copy(&mut rest, &mut std::io::sink()) {
            Ok(_) => Ok(()),
            Err(e) if self.plain_len.is_some() => Err(Error::io(&self.path, e)),
            Err(e) => Err(gzip_error(&self.path, e)),
        }
    }
}

/// `read` until `buf` is full or the stream ends (retrying interrupts).
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a whole file, decompressing it if it starts with the gzip magic
/// bytes (whatever its extension); more than `cap` bytes (decompressed) is
/// an error, found as soon as byte `cap + 1` arrives.
pub fn read_maybe_gzip(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let mut f = MaybeGzip::open(path)?;
    let too_big = |size: String| Error::BadDims {
        path: path.to_path_buf(),
        reason: format!("{size} is more than the {cap} bytes this file may have"),
    };
    if let Some(len) = f.plain_len {
        if len > cap {
            return Err(too_big(format!("{len} bytes")));
        }
    }
    let out = f.read_at_most(cap.saturating_add(1))?;
    if out.len() as u64 > cap {
        return Err(too_big("the decompressed data".into()));
    }
    Ok(out)
}

/// Reads an IDX file: checks the magic and the header, then the memory its
/// payload needs (`bytes_per_value` per value: what the caller converts it
/// to), then reads exactly the payload the header announces, and errors if
/// the file holds less or more. A gzip stream is inflated only as far as the
/// header says (plus one byte, to see that nothing follows).
fn read_idx(path: &Path, magic: u32, what: &'static str, bytes_per_value: u64) -> Result<(Vec<usize>, Vec<u8>)> {
    let ndim = (magic & 0xff) as usize;
    let mut f = MaybeGzip::open(path)?;
    let mut head = [0u8; 4];
    let got = f.read_up_to(&mut head)?;
    if got < 4 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "the IDX magic number".into(),
            expected: 4,
            found: got as u64,
        });
    }
    let found = u32::from_be_bytes(head);
    if found != magic {
        return Err(Error::BadMagic { path: path.to_path_buf(), what, found, expected: magic });
    }
    let header = 4 + 4 * ndim;
    let mut dims_bytes = vec![0u8; 4 * ndim];
    let got = f.read_up_to(&mut dims_bytes)?;
    if got < dims_bytes.len() {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!("the IDX header ({ndim} dimensions)"),
            expected: header as u64,
            found: 4 + got as u64,
        });
    }
    let dims: Vec<usize> =
        dims_bytes.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&c| c <= (usize::MAX / 4) as u64)
        .ok_or_else(|| Error::BadDims {
            path: path.to_path_buf(),
            reason: format!("dimensions {dims:?} are too large"),
        })?;
    let dims_text = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let truncated = |found: u64| Error::Truncated {
        path: path.to_path_buf(),
        what: format!("the header's {dims_text} {what}"),
        expected: header as u64 + count,
        found,
    };
    if let Some(len) = f.plain_len {
        // Plain file: its length says everything before a byte is read.
        let payload = len.saturating_sub(header as u64);
        if payload < count {
            return Err(truncated(len));
        }
        if payload > count {
            return Err(Error::BadDims {
                path: path.to_path_buf(),
                reason: format!("the header says {dims_text} {what} ({count} bytes) but {payload} bytes follow it"),
            });
        }
    }
    MemoryBudget::global()?.check(
        format!("{}: the header's {dims_text} {what}", path.display()),
        &Need::one("", count.saturating_mul(bytes_per_value)),
    )?;
    let payload = f.read_at_most(count + 1)?;
    if (payload.len() as u64) < count {
        return Err(truncated(header as u64 + payload.len() as u64));
    }
    if payload.len() as u64 > count {
        // Corrupt deflate data often decodes to too much: when the stream
        // breaks within the next few MiB (inflated into a sink, not kept),
        // that is the error to report.
        f.drain(GZIP_DRAIN)?;
        return Err(Error::BadDims {
            path: path.to_path_buf(),
            reason: format!("the header says {dims_text} {what} ({count} bytes) but the decompressed data is longer"),
        });
    }
    Ok((dims, payload))
}

/// Loads an IDX image file (plain or gzip): returns the raw bytes and
/// `(n, rows, cols)`.
pub fn load_idx_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    // Each byte becomes an f32 (4 bytes) beside the raw byte.
    let (dims, payload) = read_idx(path, IDX_IMAGES_MAGIC, "images", 5)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 {
        return Err(Error::Empty { path: path.to_path_buf(), reason: "the IDX header says 0 images".into() });
    }
    if rows == 0 || cols == 0 {
        return Err(Error::BadDims { path: path.to_path_buf(), reason: format!("images of {rows}x{cols} pixels") });
    }
    Ok((payload, n, rows, cols))
}

/// Loads an IDX label file (plain or gzip).
pub fn load_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let (_, payload) = read_idx(path, IDX_LABELS_MAGIC, "labels", 1)?;
    Ok(payload)
}

/// The image file of an MNIST directory, if it has one.
pub(super) fn find_idx_in_dir(dir: &Path) -> Option<PathBuf> {
    ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte", "train-images.idx3-ubyte.gz"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The labels file that goes with an images file, if there is one: the same
/// name with `images-idx3`/`images.idx3` replaced by `labels-idx1`/
/// `labels.idx1`, with or without `.gz`.
fn labels_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    let swapped = if name.contains("images-idx3") {
        name.replace("images-idx3", "labels-idx1")
    } else if name.contains("images.idx3") {
        name.replace("images.idx3", "labels.idx1")
    } else {
        return None;
    };
    let base = swapped.strip_suffix(".gz").unwrap_or(&swapped).to_string();
    let dir = images.parent().unwrap_or(Path::new("."));
    [base.clone(), format!("{base}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Loads an MNIST images file and, when present beside it, its labels.
pub(super) fn load_mnist(path: &Path) -> Result<Dataset> {
    let (bytes, n, rows, cols) = load_idx_images(path)?;
    let labels = match labels_for(path) {
        Some(lp) => {
            let l = load_idx_labels(&lp)?;
            if l.len() != n {
                return Err(Error::Labels {
                    path: lp,
                    reason: format!("{} labels for {n} images in {}", l.len(), path.display()),
                });
            }
            Some(l)
        }
        None => None,
    };
    let images: Vec<f32> = bytes.iter().map(|&b| byte_to_signed(b)).collect();
    Dataset::from_vec(images, labels, 1, rows, cols, DatasetKind::Mnist, path)
}
