//! Reading and writing stage artifacts: safetensors for tensors, JSON for small
//! records, CSV (through polars) for tables.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use polars::prelude::{CsvReadOptions, CsvWriter, DataFrame, SerReader, SerWriter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{StageError, StageResult};

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> StageResult<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| StageError::Failed(e.to_string()))?;
    std::fs::write(path, text).map_err(StageError::io(path))
}

/// Replaces the file a user reads (a report, a table, the last run's record) all at
/// once: written beside it, then renamed over it. A full disk or a kill leaves the old
/// file whole and no temporary behind (it is deleted when the write fails).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.flush()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A table as CSV text, for [`replace`].
pub fn csv_bytes(df: &mut DataFrame) -> StageResult<Vec<u8>> {
    let mut bytes = Vec::new();
    CsvWriter::new(&mut bytes)
        .finish(df)
        .map_err(|e| StageError::Failed(format!("writing CSV: {e}")))?;
    Ok(bytes)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> StageResult<T> {
    let bytes = std::fs::read(path).map_err(StageError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::BadInput {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub fn save_tensors(path: &Path, tensors: &[(&str, Tensor)]) -> StageResult<()> {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, path)
        .map_err(|e| StageError::Failed(format!("writing {}: {e}", path.display())))?;
    readable_by_all(path)
}

/// Writes f32 tensors with `metadata` in the file's header (safetensors'
/// `__metadata__`, string to string), where any reader finds it without runner. The
/// file is laid out here rather than by the `safetensors` crate, whose metadata map
/// is a `HashMap` serialized in a random order: one key must mean the same bytes, so
/// the header's keys and the tensors are in name order.
pub fn save_tensors_with(
    path: &Path,
    tensors: &[(&str, Tensor)],
    metadata: &std::collections::BTreeMap<String, String>,
) -> StageResult<()> {
    let mut sorted: Vec<&(&str, Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).expect("strings"),
    );
    let mut body: Vec<u8> = Vec::new();
    for (name, tensor) in sorted {
        let values = tensor
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let start = body.len();
        body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": "F32", "shape": tensor.dims(), "data_offsets": [start, body.len()] }),
        );
    }
    let mut text = serde_json::to_vec(&header).expect("headers serialize");
    // The format pads the header with spaces so the data starts 8-byte aligned.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut bytes = Vec::with_capacity(8 + text.len() + body.len());
    bytes.extend((text.len() as u64).to_le_bytes());
    bytes.extend(text);
    bytes.extend(body);
    std::fs::write(path, bytes).map_err(StageError::io(path))?;
    readable_by_all(path)
}

/// The safetensors writer creates its files owner-only (0600) while every other
/// result is 0644; results are meant to be shared, so they all get the same mode.
fn readable_by_all(path: &Path) -> StageResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(StageError::io(path))?;
    }
    Ok(())
}

pub fn load_tensors(path: &Path, device: &Device) -> StageResult<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| StageError::BadInput {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One named tensor from a safetensors file, as a flat f32 buffer (converted from
/// its stored dtype) and its shape.
pub fn load_f32(path: &Path, name: &str) -> StageResult<(Vec<f32>, Vec<usize>)> {
    tensor_f32(&load_tensors(path, &Device::Cpu)?, path, name)
}

/// `load_f32` on tensors already read from `path`, for files with several tensors.
pub fn tensor_f32(
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    name: &str,
) -> StageResult<(Vec<f32>, Vec<usize>)> {
    let t = tensors.get(name).ok_or_else(|| StageError::BadInput {
        path: path.to_path_buf(),
        message: format!("no tensor `{name}`"),
    })?;
    Ok((
        t.flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?,
        t.dims().to_vec(),
    ))
}

pub fn write_csv(path: &Path, df: &mut DataFrame) -> StageResult<()> {
    let mut file = std::fs::File::create(path).map_err(StageError::io(path))?;
    CsvWriter::new(&mut file)
        .finish(df)
        .map_err(|e| StageError::Failed(format!("writing {}: {e}", path.display())))
}

pub fn read_csv(path: &Path) -> StageResult<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| StageError::BadInput {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn tensors_are_written_readable_by_all_like_every_other_result() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let t = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        save_tensors(&path, &[("t", t)]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{mode:o}");
        assert_eq!(load_f32(&path, "t").unwrap().0, vec![1.0, 2.0]);
    }
}
