//! Graphs embedded in PNG files as text chunks (`tEXt`, or `iTXt` for text
//! beyond Latin-1), so that an image documents
//! how it was made and `diffgraph run image.png` re-runs it. Keys follow
//! ComfyUI (`prompt`: an API-format prompt, `workflow`: its UI graph) plus
//! [`NATIVE_KEY`] for diffgraph's own graphs. Chunks are added to a finished
//! file (before `IEND`), so any PNG writer's output can carry them.
use std::path::Path;

/// The key of a native diffgraph graph.
pub const NATIVE_KEY: &str = "diffgraph";
/// ComfyUI's key of an API-format prompt.
pub const PROMPT_KEY: &str = "prompt";
/// ComfyUI's key of the editor's (UI-format) workflow.
pub const WORKFLOW_KEY: &str = "workflow";

const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// CRC-32 (IEEE), the checksum of every PNG chunk.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One chunk: its type, its data, and where the chunk starts in the file.
type Chunk<'a> = ([u8; 4], &'a [u8], usize);

/// The chunks of a PNG, up to and including `IEND`.
fn chunks(png: &[u8]) -> Result<Vec<Chunk<'_>>, String> {
    if !png.starts_with(SIGNATURE) {
        return Err("not a PNG file".into());
    }
    let mut out = Vec::new();
    let mut at = SIGNATURE.len();
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = png[at + 4..at + 8].try_into().expect("4 bytes");
        let end = at + 12 + len;
        if end > png.len() {
            return Err("a truncated PNG chunk".into());
        }
        out.push((kind, &png[at + 8..at + 8 + len], at));
        at = end;
        if &kind == b"IEND" {
            return Ok(out);
        }
    }
    Err("a PNG without IEND".into())
}

/// The text entries (key, text) of `tEXt`, `zTXt` and `iTXt` chunks, in file
/// order. `tEXt`/`zTXt` are Latin-1 by the PNG specification (what PIL, and so
/// ComfyUI, writes for Latin-1 text); text that is valid UTF-8 is read as
/// UTF-8, since older diffgraph versions and other tools wrote UTF-8 there.
/// `iTXt` is UTF-8, optionally zlib-compressed (PIL's choice for other text).
/// A chunk that cannot be decoded is skipped: the other chunks still count.
pub fn read(png: &[u8]) -> Result<Vec<(String, String)>, String> {
    Ok(chunks(png)?
        .into_iter()
        .filter_map(|(kind, data, _)| match &kind {
            b"tEXt" => {
                let (key, text) = split_key(data)?;
                Some((key, legacy_text(text)))
            }
            b"zTXt" => {
                let (key, rest) = split_key(data)?;
                let (&method, compressed) = rest.split_first()?;
                (method == 0).then_some(())?;
                Some((key, legacy_text(&inflate(compressed)?)))
            }
            b"iTXt" => international_text(data),
            _ => None,
        })
        .collect())
}

/// A chunk's keyword (up to the first NUL) and the bytes after it.
fn split_key(data: &[u8]) -> Option<(String, &[u8])> {
    let nul = data.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8_lossy(&data[..nul]).into_owned(),
        &data[nul + 1..],
    ))
}

/// `tEXt`/`zTXt` text: UTF-8 when it is valid UTF-8, else Latin-1.
fn legacy_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

/// An `iTXt` chunk: keyword, compression flag and method, language tag,
/// translated keyword (each NUL-terminated), then UTF-8 text.
fn international_text(data: &[u8]) -> Option<(String, String)> {
    let (key, rest) = split_key(data)?;
    let (&[flag, method], rest) = rest.split_first_chunk::<2>()?;
    let rest = &rest[rest.iter().position(|b| *b == 0)? + 1..];
    let text = &rest[rest.iter().position(|b| *b == 0)? + 1..];
    let text = match (flag, method) {
        (0, _) => text.to_vec(),
        (1, 0) => inflate(text)?,
        _ => return None,
    };
    Some((key, String::from_utf8(text).ok()?))
}

/// A zlib stream, inflated; bounded so a hostile chunk cannot exhaust memory.
fn inflate(compressed: &[u8]) -> Option<Vec<u8>> {
    const LIMIT: usize = 64 << 20;
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(compressed, LIMIT).ok()
}

/// `png` with `entries` added before `IEND`: as `tEXt` (Latin-1) when every
/// character fits Latin-1, else as uncompressed `iTXt` (UTF-8), the choice
/// PIL's `PngInfo.add_text` makes, so ComfyUI reads both back unchanged.
pub fn with_text(png: &[u8], entries: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let iend = chunks(png)?.last().map(|c| c.2).expect("IEND found");
    let mut out = png[..iend].to_vec();
    for (key, text) in entries {
        if key.is_empty() || key.len() > 79 || key.contains('\0') {
            return Err(format!("`{key}` is not a PNG text key (1 to 79 bytes)"));
        }
        let mut data = key.as_bytes().to_vec();
        data.push(0);
        let latin1: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(c).ok()).collect();
        let kind: &[u8; 4] = match latin1 {
            Some(bytes) => {
                data.extend_from_slice(&bytes);
                b"tEXt"
            }
            None => {
                // Not compressed, method 0, empty language tag and translation.
                data.extend_from_slice(&[0, 0, 0, 0]);
                data.extend_from_slice(text.as_bytes());
                b"iTXt"
            }
        };
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc32(&[kind, &data]).to_be_bytes());
    }
    out.extend_from_slice(&png[iend..]);
    Ok(out)
}

/// Adds `entries` to the PNG file at `path` (written beside it, then renamed).
pub fn add_to_file(path: &Path, entries: &[(&str, &str)]) -> Result<(), String> {
    let png = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = with_text(&png, entries).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, &out).map_err(|e| e.to_string())?;
    tmp.persist(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// Whether `bytes` start like a PNG file.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(SIGNATURE)
}

/// The graph a PNG carries, as text `parse_graph` reads: its native graph;
/// else its API-format `prompt` (as it is when it uses ComfyUI's node types,
/// which `crate::comfy` translates; turned into a native graph when it uses
/// diffgraph's); else the editor's `workflow` (ComfyUI's SaveImage writes
/// both: `nodes.py`, `SaveImage.save_images`).
pub fn embedded_graph(png: &[u8]) -> Result<String, String> {
    let text = read(png)?;
    let get = |k: &str| {
        text.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if let Some(native) = get(NATIVE_KEY) {
        return Ok(native);
    }
    if let Some(prompt) = get(PROMPT_KEY) {
        let doc: serde_json::Value =
            serde_json::from_str(&prompt).map_err(|e| format!("its `prompt` is not JSON: {e}"))?;
        if crate::comfy::uses_comfy_node_types(&doc) {
            return Ok(prompt);
        }
        return crate::graph::comfy_api::to_native(&doc).map(|g| g.to_string());
    }
    if let Some(workflow) = get(WORKFLOW_KEY) {
        return Ok(workflow);
    }
    Err(format!(
        "the image carries no graph (no `{NATIVE_KEY}`, `{PROMPT_KEY}` or `{WORKFLOW_KEY}` text chunk)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_specification_example() {
        // CRC of the IEND chunk type, as in every PNG's last 4 bytes.
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
    }

    /// The smallest chunk list this module accepts: the signature and IEND.
    fn tiny_png() -> Vec<u8> {
        let mut png = SIGNATURE.to_vec();
        png.extend_from_slice(&[0, 0, 0, 0]);
        png.extend_from_slice(b"IEND");
        png.extend_from_slice(&crc32(&[b"IEND"]).to_be_bytes());
        png
    }

    #[test]
    fn text_round_trips_and_the_file_stays_a_png() {
        let png = tiny_png();
        let out = with_text(&png, &[("diffgraph", "{\"nodes\": {}}"), ("k", "v")]).unwrap();
        assert_eq!(
            read(&out).unwrap(),
            vec![
                ("diffgraph".into(), "{\"nodes\": {}}".into()),
                ("k".into(), "v".into())
            ]
        );
        assert!(out.ends_with(&png[8..]));
        assert!(with_text(b"GIF89a", &[]).is_err());
        assert!(with_text(&png, &[("", "x")]).is_err());
    }

    #[test]
    fn text_beyond_latin1_goes_to_itxt_and_latin1_stays_latin1() {
        let png = tiny_png();
        let out = with_text(&png, &[("a", "caf\u{e9}"), ("b", "\u{732b} \u{1f431}")]).unwrap();
        // "café" as one Latin-1 byte per character, as PIL writes it.
        assert!(out.windows(6).any(|w| w == b"a\0caf\xe9"));
        assert!(out.windows(4).any(|w| w == b"iTXt"));
        let text = read(&out).unwrap();
        assert_eq!(text[0], ("a".into(), "caf\u{e9}".into()));
        assert_eq!(text[1], ("b".into(), "\u{732b} \u{1f431}".into()));
    }

    #[test]
    fn compressed_text_chunks_are_read() {
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
            c
        };
        let json = "{\"x\": \"\u{e9}\"}";
        let mut itxt = b"workflow\0\x01\x00\0\0".to_vec();
        itxt.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(
            json.as_bytes(),
            6,
        ));
        let mut ztxt = b"prompt\0\x00".to_vec();
        ztxt.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(b"{}", 6));
        let mut png = SIGNATURE.to_vec();
        png.extend(chunk(b"iTXt", &itxt));
        png.extend(chunk(b"zTXt", &ztxt));
        png.extend(chunk(b"IEND", b""));
        assert_eq!(
            read(&png).unwrap(),
            vec![
                ("workflow".into(), json.into()),
                ("prompt".into(), "{}".into())
            ]
        );
    }

    #[test]
    fn a_comfyui_png_gives_its_prompt_before_its_workflow() {
        let png = |entries: &[(&str, &str)]| with_text(&tiny_png(), entries).unwrap();
        let prompt = r#"{"3": {"class_type": "KSampler", "inputs": {}}}"#;
        let both = png(&[("workflow", r#"{"nodes": []}"#), ("prompt", prompt)]);
        assert!(is_png(&both));
        assert_eq!(embedded_graph(&both).unwrap(), prompt);
        let ui = png(&[("workflow", r#"{"nodes": []}"#)]);
        assert_eq!(embedded_graph(&ui).unwrap(), r#"{"nodes": []}"#);
        let bare = tiny_png();
        assert!(embedded_graph(&bare)
            .unwrap_err()
            .contains("carries no graph"));
    }
}
