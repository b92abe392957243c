//! CLIP's byte-level BPE tokenizer, giving the ids of transformers'
//! `CLIPTokenizer` (transformers 5: models/clip/tokenization_clip.py, backed by
//! the `tokenizers` library) called as the SD pipelines call it
//! (diffusers pipelines/stable_diffusion/pipeline_stable_diffusion.py,
//! `encode_prompt`: padding to 77, truncation).
//!
//! Steps, in that order:
//! 1. normalize: Unicode NFC, every run of whitespace to one space, lowercase
//!    (character by character, as `tokenizers`' `Lowercase` does);
//! 2. cut out the special tokens written in the text (`<|startoftext|>`,
//!    `<|endoftext|>`, and the pad token, `!` for SD 2: every `!` of an SD 2
//!    prompt is id 0, not the BPE id 256 it has in SD 1);
//! 3. split the rest with CLIP's regex, dropping the whitespace between pieces;
//! 4. map each piece's UTF-8 bytes to CLIP's byte characters and apply the BPE
//!    merges in rank order, the last character carrying `</w>`;
//! 5. `<|startoftext|>` ids `<|endoftext|>`, the ids cut to `max_length - 2`
//!    (so the end token stays last), padded with the pad token.
//!
//! The vocabulary comes from a diffusers `tokenizer/` folder (vocab.json +
//! merges.txt) or from CLIP's `bpe_simple_vocab_16e6.txt.gz` (open_clip's
//! tokenizer.py builds the same vocabulary from it); a copy of the latter is
//! compiled in for single-file checkpoints, which carry no tokenizer.
use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use unicode_normalization::UnicodeNormalization;

/// CLIP's BPE merges (MIT licence; see assets/README.md).
pub const BUNDLED_BPE: &[u8] = include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz");
pub const START_OF_TEXT: &str = "<|startoftext|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// CLIP's context length.
pub const MAX_LENGTH: usize = 77;
/// How many merges CLIP uses from bpe_simple_vocab_16e6.txt (open_clip's tokenizer.py).
const CLIP_MERGES: usize = 49152 - 256 - 2;
/// CLIP's pre-tokenizer pattern (the `tokenizers` Split of tokenization_clip.py).
const SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    vocab: HashMap<String, i64>,
    /// Merge pair -> rank (lower merges first).
    ranks: HashMap<(String, String), usize>,
    /// UTF-8 byte -> CLIP's printable character for it.
    byte_chars: Vec<char>,
    /// Special tokens matched literally in the normalized text.
    specials: Vec<(String, i64)>,
    split: Regex,
    whitespace: Regex,
    pub bos: i64,
    pub eos: i64,
    pub pad: i64,
    pub max_length: usize,
}

impl ClipTokenizer {
    /// From a vocabulary and its merges, padding with `pad_token`.
    pub fn new(
        vocab: HashMap<String, i64>,
        merges: Vec<(String, String)>,
        pad_token: &str,
    ) -> Result<Self, String> {
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| format!("the CLIP vocabulary has no {t:?}"))
        };
        let (bos, eos, pad) = (id(START_OF_TEXT)?, id(END_OF_TEXT)?, id(pad_token)?);
        let mut specials = vec![
            (START_OF_TEXT.to_string(), bos),
            (END_OF_TEXT.to_string(), eos),
        ];
        if pad_token != START_OF_TEXT && pad_token != END_OF_TEXT {
            specials.push((pad_token.to_string(), pad));
        }
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        Ok(ClipTokenizer {
            vocab,
            ranks,
            byte_chars: byte_chars(),
            specials,
            split: Regex::new(SPLIT).expect("CLIP's split pattern compiles"),
            whitespace: Regex::new(r"\s+").expect("whitespace pattern compiles"),
            bos,
            eos,
            pad,
            max_length: MAX_LENGTH,
        })
    }

    /// From CLIP's `bpe_simple_vocab_16e6.txt.gz` (bytes of the gzip file).
    pub fn from_bpe_gz(gz: &[u8], pad_token: &str) -> Result<Self, String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the CLIP BPE file: {e}"))?;
        let merges: Vec<(String, String)> = text
            .split('\n')
            .skip(1)
            .take(CLIP_MERGES)
            .map(parse_merge)
            .collect::<Result<_, _>>()?;
        if merges.len() != CLIP_MERGES {
            return Err(format!(
                "the CLIP BPE file has {} merges, expected {CLIP_MERGES}",
                merges.len()
            ));
        }
        // Ids 0..256: the printable bytes' characters first, then the others
        // (the order of `bytes_to_unicode`), then the same with `</w>`.
        let table = byte_chars();
        let mut chars: Vec<char> = (0..256)
            .filter(|&b| printable(b))
            .map(|b| table[b as usize])
            .collect();
        chars.extend(
            (0..256)
                .filter(|&b| !printable(b))
                .map(|b| table[b as usize]),
        );
        let tokens = chars
            .iter()
            .map(|c| c.to_string())
            .chain(chars.iter().map(|c| format!("{c}</w>")));
        let tokens = tokens.chain(merges.iter().map(|(a, b)| format!("{a}{b}")));
        let tokens = tokens.chain([START_OF_TEXT.to_string(), END_OF_TEXT.to_string()]);
        let vocab = tokens.enumerate().map(|(i, t)| (t, i as i64)).collect();
        Self::new(vocab, merges, pad_token)
    }

    /// The compiled-in CLIP vocabulary (for single-file checkpoints).
    pub fn bundled(pad_token: &str) -> Result<Self, String> {
        Self::from_bpe_gz(BUNDLED_BPE, pad_token)
    }

    /// From a diffusers/transformers `tokenizer/` folder: vocab.json,
    /// merges.txt, and the pad token and `model_max_length` of
    /// tokenizer_config.json (or special_tokens_map.json).
    pub fn from_folder(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let vocab: HashMap<String, i64> = serde_json::from_str(&read("vocab.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("vocab.json").display()))?;
        let merges = read("merges.txt")?
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("#version"))
            .map(parse_merge)
            .collect::<Result<Vec<_>, _>>()?;
        let json = |name: &str| -> Option<serde_json::Value> {
            serde_json::from_str(&read(name).ok()?).ok()
        };
        let config = json("tokenizer_config.json");
        let token = |v: &serde_json::Value| {
            v.as_str()
                .or_else(|| v["content"].as_str())
                .map(str::to_string)
        };
        let pad = [config.clone(), json("special_tokens_map.json")]
            .iter()
            .flatten()
            .find_map(|c| token(&c["pad_token"]))
            .unwrap_or_else(|| END_OF_TEXT.to_string());
        let mut tokenizer = Self::new(vocab, merges, &pad)?;
        let max = config
            .and_then(|c| c["model_max_length"].as_u64())
            .filter(|m| (2..=MAX_LENGTH as u64).contains(m));
        tokenizer.max_length = max.map_or(MAX_LENGTH, |m| m as usize);
        Ok(tokenizer)
    }

    /// The ids of `text`, without start/end tokens, padding or truncation.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let text = self.normalize(text);
        let mut ids = Vec::new();
        let mut rest = text.as_str();
        // Each special token written in the text (leftmost, then longest) is
        // its own id; the text between is split and BPE-encoded.
        while let Some((at, len, id)) = self
            .specials
            .iter()
            .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
            .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)))
        {
            self.encode_plain(&rest[..at], &mut ids);
            ids.push(id);
            rest = &rest[at + len..];
        }
        self.encode_plain(rest, &mut ids);
        ids
    }

    /// CLIP's split, then BPE of each piece.
    fn encode_plain(&self, text: &str, ids: &mut Vec<i64>) {
        for piece in self.split.find_iter(text) {
            self.bpe(piece.as_str(), ids);
        }
    }

    /// What the SD pipelines feed the text encoder: start token, the ids cut
    /// to `max_length - 2`, end token, pad tokens up to `max_length`.
    pub fn encode_padded(&self, text: &str) -> Vec<i64> {
        let mut ids = self.encode(text);
        ids.truncate(self.max_length - 2);
        let mut out = Vec::with_capacity(self.max_length);
        out.push(self.bos);
        out.extend(ids);
        out.push(self.eos);
        out.resize(self.max_length, self.pad);
        out
    }

    /// NFC, whitespace runs to one space, lowercase per character.
    fn normalize(&self, text: &str) -> String {
        let nfc: String = text.nfc().collect();
        self.whitespace
            .replace_all(&nfc, " ")
            .chars()
            .flat_map(char::to_lowercase)
            .collect()
    }

    /// Byte-level BPE of one pre-tokenized piece, appending its ids.
    fn bpe(&self, piece: &str, ids: &mut Vec<i64>) {
        let mut word: Vec<String> = piece
            .bytes()
            .map(|b| self.byte_chars[b as usize].to_string())
            .collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        loop {
            // The pair of lowest rank; all its occurrences merge, left to right.
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, p))
                })
                .min_by_key(|&(r, _)| r)
                .map(|(_, p)| (p[0].clone(), p[1].clone()));
            let Some((a, b)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        // Every byte character and every merge is in CLIP's vocabulary; a
        // foreign vocabulary without one gets the unknown token, as in transformers.
        ids.extend(
            word.iter()
                .map(|t| self.vocab.get(t).copied().unwrap_or(self.eos)),
        );
    }
}

fn parse_merge(line: &str) -> Result<(String, String), String> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("malformed BPE merge line {line:?}")),
    }
}

/// Bytes that stand for themselves in CLIP's byte -> character table.
fn printable(b: u32) -> bool {
    (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
}

/// GPT-2/CLIP's reversible byte -> printable character table
/// (open_clip tokenizer.py `bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("byte is a char")
            } else {
                next += 1;
                char::from_u32(next - 1).expect("small code point is a char")
            }
        })
        .collect()
}
