//! Workflows embedded in PNGs: ComfyUI's SaveImage writes the API-format
//! workflow as a tEXt chunk `prompt` and the editor's as `workflow`
//! (ComfyUI `nodes.py`, `SaveImage.save_images`: `PngInfo.add_text`).
//! A tEXt chunk is `keyword NUL text`, Latin-1 (PNG spec 11.3.4.3).

/// The PNG file signature.
const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(SIGNATURE)
}

/// The text of the tEXt chunk `keyword`, if the PNG has one.
pub fn text_chunk(bytes: &[u8], keyword: &str) -> Option<String> {
    let mut rest = bytes.strip_prefix(SIGNATURE)?;
    while rest.len() >= 12 {
        let len = u32::from_be_bytes(rest[0..4].try_into().ok()?) as usize;
        let kind = &rest[4..8];
        let data = rest.get(8..8 + len)?;
        if kind == b"tEXt" {
            if let Some(nul) = data.iter().position(|&b| b == 0) {
                if &data[..nul] == keyword.as_bytes() {
                    // Latin-1: each byte is the code point of the same value.
                    return Some(data[nul + 1..].iter().map(|&b| b as char).collect());
                }
            }
        }
        if kind == b"IEND" {
            break;
        }
        rest = rest.get(12 + len..)?;
    }
    None
}

/// The workflow text a ComfyUI PNG carries: `prompt` (API format, what
/// runs), else `workflow` (the editor's format). Err says what is missing.
pub fn workflow_text(bytes: &[u8]) -> Result<String, String> {
    text_chunk(bytes, "prompt")
        .or_else(|| text_chunk(bytes, "workflow"))
        .ok_or_else(|| {
            "the image carries no graph (no tEXt chunk `diffgraph`, `prompt` or `workflow`)"
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG-shaped byte string with the given chunks (CRCs are not checked).
    pub fn png_with(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        for (kind, data) in chunks {
            out.extend((data.len() as u32).to_be_bytes());
            out.extend(*kind);
            out.extend(*data);
            out.extend([0; 4]);
        }
        out
    }

    #[test]
    fn finds_the_prompt_chunk() {
        let png = png_with(&[
            (b"IHDR", &[0; 13]),
            (b"tEXt", b"workflow\0{\"nodes\": []}"),
            (b"tEXt", b"prompt\0{\"3\": {}}"),
            (b"IEND", b""),
        ]);
        assert!(is_png(&png));
        assert_eq!(workflow_text(&png).unwrap(), "{\"3\": {}}");
        assert_eq!(text_chunk(&png, "workflow").unwrap(), "{\"nodes\": []}");
        let bare = png_with(&[(b"IHDR", &[0; 13]), (b"IEND", b"")]);
        assert!(workflow_text(&bare).is_err());
    }
}
