//! BERT's WordPiece tokenizer, as `transformers.BertTokenizer` (and the
//! `tokenizers` library's BertNormalizer + BertPreTokenizer + WordPiece)
//! tokenize: the tokenizer of latent diffusion's text-to-image model
//! (LDMBert, CompVis/ldm-text2im-large-256: bert-base-uncased's vocabulary).
//! Normalize (drop control characters, whitespace to spaces, spaces around
//! CJK ideographs, lowercase and strip accents), split on whitespace and
//! punctuation, then longest-match-first word pieces (`##` continuations;
//! a word that cannot be covered is `[UNK]`); `[CLS] ... [SEP]`, truncated
//! and padded to `model_max_length` with `[PAD]`.
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// Words longer than this (in characters) are `[UNK]` (WordPiece's default).
const MAX_WORD_CHARS: usize = 100;

pub struct WordPieceTokenizer {
    vocab: HashMap<String, i64>,
    lowercase: bool,
    strip_accents: bool,
    max_length: usize,
    cls: i64,
    sep: i64,
    pad: i64,
    unk: i64,
}

fn category(pattern: &'static str, cell: &'static OnceLock<Regex>, c: char) -> bool {
    let re = cell.get_or_init(|| Regex::new(pattern).expect("a valid category pattern"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// Unicode "Other" (control, format, unassigned, private use, surrogate),
/// except the whitespace controls.
fn is_control(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    !matches!(c, '\t' | '\n' | '\r') && category(r"^\p{C}$", &RE, c)
}

fn is_whitespace(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    matches!(c, '\t' | '\n' | '\r' | ' ') || category(r"^\p{Zs}$", &RE, c)
}

fn is_punctuation(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    c.is_ascii_punctuation() || category(r"^\p{P}$", &RE, c)
}

fn is_nonspacing_mark(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    category(r"^\p{Mn}$", &RE, c)
}

/// The CJK ideograph blocks BERT isolates (`_is_chinese_char`).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `vocab.txt`: one token per line, the line number its id.
fn read_vocab_txt(path: &Path) -> Result<HashMap<String, i64>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as i64))
        .collect())
}

impl WordPieceTokenizer {
    /// Reads a tokenizer folder: `vocab.txt` (one token per line, the line
    /// number its id) or else `tokenizer.json`'s WordPiece vocabulary, and
    /// `tokenizer_config.json` (`do_lower_case`, `strip_accents`,
    /// `model_max_length`; defaults true, as lowercasing, 512).
    pub fn from_folder(dir: &Path) -> Result<WordPieceTokenizer, String> {
        let vocab: HashMap<String, i64> = if dir.join("vocab.txt").exists() {
            read_vocab_txt(&dir.join("vocab.txt"))?
        } else {
            let json = read_json(&dir.join("tokenizer.json")).map_err(|e| {
                format!("{e} (a BERT tokenizer folder has vocab.txt or tokenizer.json)")
            })?;
            let map = json["model"]["vocab"].as_object().ok_or_else(|| {
                format!("{}: no model.vocab", dir.join("tokenizer.json").display())
            })?;
            map.iter()
                .map(|(t, id)| {
                    Ok((
                        t.clone(),
                        id.as_i64().ok_or("a vocabulary id is not an integer")?,
                    ))
                })
                .collect::<Result<_, String>>()?
        };
        let config = match dir.join("tokenizer_config.json").exists() {
            true => read_json(&dir.join("tokenizer_config.json"))?,
            false => serde_json::Value::Null,
        };
        Self::from_vocab(vocab, &config, dir)
    }

    /// The tokenizer of `vocab` with `tokenizer_config.json`'s settings
    /// (`Null`: the defaults); `source` names it in messages.
    fn from_vocab(
        vocab: HashMap<String, i64>,
        config: &serde_json::Value,
        source: &Path,
    ) -> Result<WordPieceTokenizer, String> {
        let lowercase = config["do_lower_case"].as_bool().unwrap_or(true);
        let id = |name: &str| {
            vocab
                .get(name)
                .copied()
                .ok_or_else(|| format!("{}: the vocabulary has no {name}", source.display()))
        };
        Ok(WordPieceTokenizer {
            lowercase,
            strip_accents: config["strip_accents"].as_bool().unwrap_or(lowercase),
            max_length: config["model_max_length"]
                .as_u64()
                .map_or(512, |n| n.min(1 << 20) as usize),
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
            vocab,
        })
    }

    /// A tokenizer folder ([`Self::from_folder`]) or a `vocab.txt` file
    /// itself (then lowercasing, as bert-base-uncased's).
    pub fn from_path(path: &Path) -> Result<WordPieceTokenizer, String> {
        if path.is_dir() {
            return Self::from_folder(path);
        }
        Self::from_vocab(read_vocab_txt(path)?, &serde_json::Value::Null, path)
    }

    /// Truncates and pads to `n` tokens (BERTEmbedder's `max_seq_len`).
    pub fn with_max_length(mut self, n: usize) -> WordPieceTokenizer {
        self.max_length = n;
        self
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// BertNormalizer: clean, isolate CJK, strip accents, lowercase.
    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || is_control(c) {
                continue;
            }
            if is_whitespace(c) {
                out.push(' ');
            } else if is_cjk(c) {
                out.extend([' ', c, ' ']);
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out.nfd().filter(|c| !is_nonspacing_mark(*c)).collect();
        }
        if self.lowercase {
            out = out.to_lowercase();
        }
        out
    }

    /// BertPreTokenizer: whitespace-separated words, each punctuation
    /// character a word of its own.
    fn words(text: &str) -> Vec<String> {
        let mut words = Vec::new();
        for chunk in text.split(is_whitespace).filter(|w| !w.is_empty()) {
            let mut word = String::new();
            for c in chunk.chars() {
                if is_punctuation(c) {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    words.push(c.to_string());
                } else {
                    word.push(c);
                }
            }
            if !word.is_empty() {
                words.push(word);
            }
        }
        words
    }

    /// WordPiece: longest known prefix first, then `##` continuations.
    fn pieces(&self, word: &str, out: &mut Vec<i64>) {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        let mut ids = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let found = (start + 1..=chars.len()).rev().find_map(|end| {
                let piece: String = chars[start..end].iter().collect();
                let key = if start > 0 {
                    format!("##{piece}")
                } else {
                    piece
                };
                self.vocab.get(&key).map(|id| (*id, end))
            });
            match found {
                Some((id, end)) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    out.push(self.unk);
                    return;
                }
            }
        }
        out.extend(ids);
    }

    /// The ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        for word in Self::words(&self.normalize(text)) {
            self.pieces(&word, &mut ids);
        }
        ids
    }

    /// `tokenizer(text, padding="max_length", truncation=True)`: `[CLS]`,
    /// at most max_length - 2 tokens, `[SEP]`, `[PAD]` to max_length; and
    /// how many tokens truncation dropped.
    pub fn encode_padded(&self, text: &str) -> (Vec<i64>, usize) {
        let tokens = self.encode(text);
        let keep = self.max_length.saturating_sub(2).min(tokens.len());
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.cls);
        ids.extend_from_slice(&tokens[..keep]);
        ids.push(self.sep);
        ids.resize(self.max_length.max(ids.len()), self.pad);
        (ids, tokens.len() - keep)
    }
}
