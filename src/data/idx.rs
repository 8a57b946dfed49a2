//! IDX files, the format MNIST and Fashion-MNIST ship in (LeCun et al.): a magic
//! number naming the element type and rank, the size of every dimension, then the
//! elements. Plain or gzip-compressed files are both read.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A labelled set of grey-scale images as stored on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImages {
    /// Row-major pixels, `count * rows * cols` bytes (0 = background).
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl LabelledImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes (already decompressed). Only unsigned-byte arrays (type 0x08) are
/// accepted: every MNIST-style file is one.
pub fn parse(bytes: &[u8]) -> Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file (it starts 0000 08 <rank>)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not supported: MNIST-style files hold unsigned bytes (0x08)",
            bytes[2]
        ));
    }
    let rank = bytes[3] as usize;
    if rank == 0 {
        return Err("an IDX file of rank 0 has no data".into());
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: rank {rank} needs {header} bytes, the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count: usize = dims.iter().product();
    let body = bytes.len() - header;
    if body != count {
        return Err(format!(
            "dimensions {dims:?} need {count} data bytes, the file has {body}{}",
            if body < count {
                " (truncated download?)"
            } else {
                ""
            }
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX file, decompressing it if it is gzip (detected by its magic bytes,
/// whatever its name).
pub fn read(path: &Path) -> Result<IdxArray, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: corrupt gzip data: {e}", path.display()))?;
        out
    } else {
        raw
    };
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The file for `stem` (e.g. `train-images-idx3-ubyte`) in `dir`, plain or `.gz`.
pub fn find(dir: &Path, stem: &str) -> Result<PathBuf, String> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let path = dir.join(&name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(format!(
        "{} has no `{stem}` (or `{stem}.gz`)",
        dir.display()
    ))
}

/// The files a split is read from: (images, labels).
pub fn split_files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf), String> {
    let prefix = split.prefix();
    Ok((
        find(dir, &format!("{prefix}-images-idx3-ubyte"))?,
        find(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
    ))
}

/// MNIST's two splits, by their file-name prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Reads one split of an MNIST-style directory, checking that images and labels agree.
pub fn load_split(dir: &Path, split: Split) -> Result<LabelledImages, String> {
    let (image_path, label_path) = split_files(dir, split)?;
    let images = read(&image_path)?;
    let labels = read(&label_path)?;
    if images.dims.len() != 3 {
        return Err(format!(
            "{}: images must be a rank-3 array [count, rows, cols], got dimensions {:?}",
            image_path.display(),
            images.dims
        ));
    }
    if labels.dims.len() != 1 {
        return Err(format!(
            "{}: labels must be a rank-1 array, got dimensions {:?}",
            label_path.display(),
            labels.dims
        ));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(format!(
            "{} holds {} images but {} holds {} labels",
            image_path.display(),
            images.dims[0],
            label_path.display(),
            labels.dims[0]
        ));
    }
    Ok(LabelledImages {
        pixels: images.data,
        labels: labels.data,
        rows: images.dims[1],
        cols: images.dims[2],
    })
}

/// Encodes an unsigned-byte IDX array (for tests and for users building small sets).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trips_and_reads_gzip() {
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode(&[2, 3, 4], &data);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.dims, vec![2, 3, 4]);
        assert_eq!(parsed.data, data);

        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a");
        std::fs::write(&plain, &bytes).unwrap();
        let gz = dir.path().join("b.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read(&plain).unwrap(), parsed);
        assert_eq!(read(&gz).unwrap(), parsed);
    }

    #[test]
    fn truncated_and_foreign_files_are_refused() {
        let bytes = encode(&[2, 3, 4], &[0; 24]);
        let err = parse(&bytes[..bytes.len() - 5]).unwrap_err();
        assert!(err.contains("need 24 data bytes, the file has 19"), "{err}");
        assert!(err.contains("truncated"), "{err}");
        let err = parse(&bytes[..10]).unwrap_err();
        assert!(err.contains("truncated header"), "{err}");
        let err = parse(b"\x89PNG\r\n\x1a\n").unwrap_err();
        assert!(err.contains("wrong magic number 89504e47"), "{err}");
        let mut floats = bytes.clone();
        floats[2] = 0x0d;
        assert!(parse(&floats).unwrap_err().contains("0x0d"));
    }

    #[test]
    fn a_split_needs_matching_images_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            encode(&[3, 2, 2], &[7; 12]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            encode(&[2], &[1, 2]),
        )
        .unwrap();
        let err = load_split(dir.path(), Split::Test).unwrap_err();
        assert!(err.contains("holds 3 images but"), "{err}");
        let err = load_split(dir.path(), Split::Train).unwrap_err();
        assert!(err.contains("no `train-images-idx3-ubyte`"), "{err}");
    }
}
