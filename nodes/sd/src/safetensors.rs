//! Reading `.safetensors` one tensor at a time, so that loading a
//! checkpoint never holds more than the checkpoint plus one tensor.
//!
//! Why not tch's `Tensor::read_safetensors`: it reads the whole file into
//! memory, then copies every tensor out of it, so the transient peak is twice
//! the file before any dtype conversion. Memory mapping would avoid even the
//! one-tensor buffer, but mapping is `unsafe` (the file may change under the
//! mapping) and plugins are `#![deny(unsafe_code)]`; plain positioned reads
//! into one reused buffer cost one tensor of memory and are as fast (the
//! page cache serves both).
//!
//! The format (huggingface/safetensors, `docs/`): an 8-byte little-endian
//! header length N, N bytes of JSON `{name: {dtype, shape, data_offsets:
//! [begin, end]}, "__metadata__": {...}}`, then the data; offsets are
//! relative to the end of the header; values are little-endian, row-major.
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use tch::{Kind, Tensor};

/// The largest header accepted (the reference implementation's limit).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F64" => Kind::Double,
        "F32" => Kind::Float,
        "F16" => Kind::Half,
        "BF16" => Kind::BFloat16,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "I16" => Kind::Int16,
        "I8" => Kind::Int8,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

/// Every tensor of a `.safetensors` file, as stored (dtype and shape), each
/// read on its own through one reused buffer. Errors name the file and the
/// tensor.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let mut file = File::open(path).map_err(|e| err(&e))?;
    let file_len = file.metadata().map_err(|e| err(&e))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| err(&e))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(err(&format!(
            "header length {header_len} does not fit a {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| err(&e))?;
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| err(&format!("bad header: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + header_len;
    let mut parsed = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let e: Entry = serde_json::from_value(value)
            .map_err(|x| err(&format!("tensor {name}: bad header entry: {x}")))?;
        let kind = kind_of(&e.dtype)
            .ok_or_else(|| err(&format!("tensor {name}: unsupported dtype {}", e.dtype)))?;
        let [begin, end] = e.data_offsets;
        let numel: i64 = e.shape.iter().product();
        let expected = numel as u64 * kind.elt_size_in_bytes() as u64;
        if e.shape.iter().any(|&d| d < 0)
            || end < begin
            || end - begin != expected
            || data_start + end > file_len
        {
            return Err(err(&format!(
                "tensor {name}: offsets {begin}..{end} do not hold a {} {:?} tensor inside the \
                 {file_len}-byte file",
                e.dtype, e.shape
            )));
        }
        parsed.push((name, kind, e.shape, begin, end));
    }
    // In file order, so the reads are sequential.
    parsed.sort_by_key(|p| p.3);
    let mut buf = Vec::new();
    let mut out = BTreeMap::new();
    for (name, kind, shape, begin, end) in parsed {
        // Between tensors: a Ctrl-C ends a long load here.
        diffgraph_sdk::interrupt::check();
        buf.resize((end - begin) as usize, 0);
        file.seek(SeekFrom::Start(data_start + begin))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| err(&format!("tensor {name}: {e}")))?;
        let t = Tensor::f_from_data_size(&buf, &shape, kind)
            .map_err(|e| err(&format!("tensor {name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `tensors` with tch's own writer and reads them back: same
    /// names, dtypes, shapes and bytes.
    #[test]
    fn reads_what_tch_writes() {
        let dir = std::env::temp_dir().join(format!("sd-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::arange(24, (Kind::Float, tch::Device::Cpu)).reshape([2, 3, 4]);
        let b = a.to_kind(Kind::Half).narrow(2, 1, 2).contiguous();
        let c = Tensor::from_slice(&[1i64, -2, 3]);
        let d = a.to_kind(Kind::BFloat16).reshape([24]);
        let list = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
        Tensor::write_safetensors(&list, &path).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.len(), 4);
        for (name, t) in list {
            let r = &back[name];
            assert_eq!((r.kind(), r.size()), (t.kind(), t.size()), "{name}");
            assert!(r.equal(t), "{name}");
        }
        // A truncated file is an error naming the problem, not a crash.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.contains("do not hold"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
