//! ComfyUI's prompt weighting and long prompts (comfy/sd1_clip.py:
//! `token_weights`, `SDTokenizer.tokenize_with_weights`,
//! `ClipTokenWeightEncoder.encode_token_weights`).
//!
//! - Weights: `(text)` multiplies the weight of what it encloses by 1.1,
//!   `(text:1.3)` sets it (the number after the last `:`), nested freely;
//!   `\(` and `\)` are literal parentheses. Square brackets are plain text in
//!   ComfyUI (A1111's `[text]` = 1/1.1 is not ComfyUI's), and stay so here.
//! - Each weighted segment is tokenized on its own (without start/end
//!   tokens); `embedding:name` (at the start of a segment or after a space
//!   or newline) inserts a textual-inversion embedding's vectors.
//! - Chunks of `max_length` (77): start token, up to 75 tokens, end token,
//!   padding. A segment that no longer fits starts the next chunk, unless it
//!   has 8 or more tokens, which are split at the chunk boundary. A prompt
//!   of any length gives one or more chunks; nothing is cut.
//! - Encoding: every chunk (and, when some weight is not 1, the empty
//!   prompt's tokens) in one batch; each token with weight w != 1 becomes
//!   e + w·(z − e), e the empty prompt's hidden state at that position; the
//!   chunks are concatenated along the tokens: [1, 77·chunks, width].
//!
//! The encoder side is the [`TokenEncoder`] trait, so every CLIP-like text
//! encoder (SDXL's two included) shares the weighting and chunking.
use crate::tokenizer::ClipTokenizer;
use tch::{Kind, TchError, Tensor};

/// ComfyUI's `max_word_length`: segments this long are split across chunks.
const MAX_WORD_LENGTH: usize = 8;
const EMBEDDING: &str = "embedding:";

/// `escape_important`: `\)` and `\(` hidden from the parser.
fn escape(text: &str) -> String {
    text.replace("\\)", "\0\u{1}").replace("\\(", "\0\u{2}")
}

fn unescape(text: &str) -> String {
    text.replace("\0\u{1}", ")").replace("\0\u{2}", "(")
}

/// `parse_parentheses`: top-level pieces, parenthesised ones with their
/// parentheses (an unclosed one runs to the end).
fn parse_parentheses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut level: i64 = 0;
    for c in text.chars() {
        match c {
            '(' => {
                if level == 0 {
                    if !current.is_empty() {
                        out.push(std::mem::take(&mut current));
                    }
                    current.push('(');
                } else {
                    current.push(c);
                }
                level += 1;
            }
            ')' => {
                level -= 1;
                if level == 0 {
                    current.push(')');
                    out.push(std::mem::take(&mut current));
                } else {
                    current.push(c);
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Python's `float()` on what follows the last `:` (surrounding whitespace
/// allowed; `_` digit separators are not taken).
fn python_float(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

/// `token_weights`: (text, weight) segments of a prompt, in order.
fn token_weights(text: &str, current: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for piece in parse_parentheses(text) {
        let chars: Vec<char> = piece.chars().collect();
        if chars.len() >= 2 && chars[0] == '(' && chars[chars.len() - 1] == ')' {
            let mut inner: String = chars[1..chars.len() - 1].iter().collect();
            let mut weight = current * 1.1;
            if let Some(at) = inner.rfind(':').filter(|&at| at > 0) {
                if let Some(w) = python_float(&inner[at + 1..]) {
                    weight = w;
                    inner.truncate(at);
                }
            }
            out.extend(token_weights(&inner, weight));
        } else {
            out.push((piece, current));
        }
    }
    out
}

/// A prompt's weighted segments, escapes resolved.
pub fn parse(text: &str) -> Vec<(String, f64)> {
    token_weights(&escape(text), 1.0)
        .into_iter()
        .map(|(t, w)| (unescape(&t), w))
        .collect()
}

/// One position of a chunk: a token id, or a row of a textual-inversion
/// embedding (index into [`Chunks::vectors`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Slot {
    Token(i64),
    Vector(usize),
}

/// A prompt as chunks of `max_length` positions with their weights.
pub struct Chunks {
    pub slots: Vec<Vec<(Slot, f64)>>,
    /// Embedding rows, [width] each.
    pub vectors: Vec<Tensor>,
    /// `embedding:` names that were not found (ComfyUI warns and goes on).
    pub missing: Vec<String>,
}

impl Chunks {
    /// The token ids per chunk, embedding rows as the pad token.
    pub fn ids(&self, pad: i64) -> Vec<Vec<i64>> {
        self.slots
            .iter()
            .map(|c| {
                c.iter()
                    .map(|(s, _)| match s {
                        Slot::Token(t) => *t,
                        Slot::Vector(_) => pad,
                    })
                    .collect()
            })
            .collect()
    }

    pub fn has_weights(&self) -> bool {
        self.slots.iter().flatten().any(|(_, w)| *w != 1.0)
    }
}

/// Splits a segment at `embedding:` names: text pieces and embedding names.
fn split_embeddings(segment: &str) -> Vec<(bool, String)> {
    // re.split(' embedding:|\nembedding:'), then each later piece is an embedding word.
    let mut pieces = Vec::new();
    let mut rest = segment;
    let mut first = true;
    loop {
        let next = [" ", "\n"]
            .iter()
            .filter_map(|sep| rest.find(&format!("{sep}{EMBEDDING}")))
            .min();
        let (piece, tail) = match next {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let piece = if first {
            piece.to_string()
        } else {
            format!("{EMBEDDING}{piece}")
        };
        if !piece.is_empty() {
            pieces.push(piece);
        }
        match tail {
            Some(t) => {
                rest = &t[EMBEDDING.len()..];
                first = false;
            }
            None => break,
        }
    }
    pieces
        .into_iter()
        .map(|p| (p.starts_with(EMBEDDING), p))
        .collect()
}

/// `tokenize_with_weights`: the prompt's tokens in chunks. `embedding`
/// finds a textual-inversion embedding by name ([n, width] or [width]).
pub fn tokenize(
    tokenizer: &ClipTokenizer,
    text: &str,
    embedding: &dyn Fn(&str) -> Option<Tensor>,
) -> Chunks {
    let mut vectors = Vec::new();
    let mut missing = Vec::new();
    let mut groups: Vec<Vec<(Slot, f64)>> = Vec::new();
    for (segment, weight) in parse(text) {
        for (is_embedding, word) in split_embeddings(&segment) {
            let mut word = word;
            if is_embedding {
                let name = word[EMBEDDING.len()..].trim_matches('\n').to_string();
                let mut parts = name.split_whitespace();
                let first = parts.next().unwrap_or("").to_string();
                let leftover = parts.collect::<Vec<_>>().join(" ");
                let (found, leftover) = match embedding(&first) {
                    Some(e) => (Some(e), leftover),
                    None => {
                        let stripped = first.trim_matches(',');
                        match (stripped.len() < first.len())
                            .then(|| embedding(stripped))
                            .flatten()
                        {
                            Some(e) => {
                                (Some(e), format!("{} {leftover}", &first[stripped.len()..]))
                            }
                            None => (None, leftover),
                        }
                    }
                };
                match found {
                    Some(e) => {
                        let e = if e.dim() == 1 { e.unsqueeze(0) } else { e };
                        let rows = e.size()[0];
                        groups.push(
                            (0..rows)
                                .map(|r| {
                                    vectors.push(e.get(r));
                                    (Slot::Vector(vectors.len() - 1), weight)
                                })
                                .collect(),
                        );
                    }
                    None => missing.push(first),
                }
                if leftover.is_empty() {
                    continue;
                }
                word = leftover;
            }
            groups.push(
                tokenizer
                    .encode(&word)
                    .into_iter()
                    .map(|t| (Slot::Token(t), weight))
                    .collect(),
            );
        }
    }
    Chunks {
        slots: chunk(tokenizer, groups),
        vectors,
        missing,
    }
}

/// The batching of `tokenize_with_weights` (start and end tokens, padding).
fn chunk(tokenizer: &ClipTokenizer, groups: Vec<Vec<(Slot, f64)>>) -> Vec<Vec<(Slot, f64)>> {
    let max = tokenizer.max_length;
    let (start, end, pad) = (
        (Slot::Token(tokenizer.bos), 1.0),
        (Slot::Token(tokenizer.eos), 1.0),
        (Slot::Token(tokenizer.pad), 1.0),
    );
    let mut done = Vec::new();
    let mut batch = vec![start];
    for mut group in groups {
        let large = group.len() >= MAX_WORD_LENGTH;
        while !group.is_empty() {
            if group.len() + batch.len() > max - 1 {
                let remaining = max - batch.len() - 1;
                if large {
                    batch.extend(group.drain(..remaining));
                    batch.push(end);
                } else {
                    batch.push(end);
                    batch.extend(std::iter::repeat_n(pad, remaining));
                }
                done.push(std::mem::replace(&mut batch, vec![start]));
            } else {
                batch.append(&mut group);
            }
        }
    }
    batch.push(end);
    if batch.len() < max {
        batch.extend(std::iter::repeat_n(pad, max - batch.len()));
    }
    done.push(batch);
    done
}

/// A text encoder the weighting and chunking drive.
pub trait TokenEncoder {
    /// Where the encoder's weights are.
    fn device(&self) -> tch::Device;
    /// Token embeddings of ids [n, L] -> [n, L, width].
    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor, TchError>;
    /// The conditioning hidden states of token embeddings [n, L, width].
    fn encode_embeddings(&self, embeddings: &Tensor) -> Result<Tensor, TchError>;
}

/// The token embeddings of `ids` (the first rows: the chunks' ids, then
/// any extra rows) with the embedding vectors put in place of their slots,
/// as ComfyUI's `SDClipModel.process_tokens`.
pub fn embed(
    encoder: &dyn TokenEncoder,
    chunks: &Chunks,
    ids: &[Vec<i64>],
) -> Result<Tensor, TchError> {
    let device = encoder.device();
    let embeds = encoder.embed_tokens(&crate::clip::ids_tensor(ids, device)?)?;
    for (c, chunk) in chunks.slots.iter().take(ids.len()).enumerate() {
        for (p, (slot, _)) in chunk.iter().enumerate() {
            if let Slot::Vector(v) = slot {
                let row = chunks.vectors[*v].to_kind(embeds.kind()).to_device(device);
                embeds.get(c as i64).get(p as i64).f_copy_(&row)?;
            }
        }
    }
    Ok(embeds)
}

/// `encode_token_weights`: [1, max_length · chunks, hidden] (float32).
pub fn encode(
    encoder: &dyn TokenEncoder,
    tokenizer: &ClipTokenizer,
    chunks: &Chunks,
) -> Result<Tensor, TchError> {
    let mut ids = chunks.ids(tokenizer.pad);
    let sections = ids.len();
    let weighted = chunks.has_weights();
    if weighted {
        let length = ids[0].len();
        let mut empty = vec![tokenizer.bos, tokenizer.eos];
        empty.resize(length.max(2), tokenizer.pad);
        ids.push(empty);
    }
    let device = encoder.device();
    let embeds = embed(encoder, chunks, &ids)?;
    let out = encoder.encode_embeddings(&embeds)?.to_kind(Kind::Float);
    let mut z = out.narrow(0, 0, sections as i64);
    if weighted {
        let empty = out.get(sections as i64);
        let w: Vec<f32> = chunks
            .slots
            .iter()
            .flatten()
            .map(|(_, w)| *w as f32)
            .collect();
        let w = Tensor::from_slice(&w)
            .view([sections as i64, -1, 1])
            .to_device(device);
        // Only where w != 1: (z − e)·1 + e would round.
        let mixed = (&z - &empty).f_mul(&w)?.f_add(&empty)?;
        z = mixed.f_where_self(&w.ne(1.0), &z)?;
    }
    let width = z.size()[2];
    z.f_reshape([1, -1, width])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<(String, f64)> {
        parse(text)
    }

    #[test]
    fn weights_nest_set_and_escape_as_comfyui() {
        let s = |t: &str, w: f64| (t.to_string(), w);
        assert_eq!(p("a (b) c"), [s("a ", 1.0), s("b", 1.1), s(" c", 1.0)]);
        assert_eq!(p("((b))"), [s("b", 1.1 * 1.1)]);
        assert_eq!(p("(b:1.5)"), [s("b", 1.5)]);
        assert_eq!(p("((b:0.5) c)"), [s("b", 0.5), s(" c", 1.1)]);
        assert_eq!(p("(a:b:2)"), [s("a:b", 2.0)]);
        assert_eq!(p("(a:x)"), [s("a:x", 1.1)]);
        assert_eq!(p(r"\(a\) (b)"), [s("(a) ", 1.0), s("b", 1.1)]);
        assert_eq!(p("[a]"), [s("[a]", 1.0)]);
        assert_eq!(p("(open"), [s("(open", 1.0)], "unclosed: literal");
    }

    #[test]
    fn embedding_words_split_at_spaces_and_newlines() {
        assert_eq!(
            split_embeddings("a embedding:x b\nembedding:y"),
            [
                (false, "a".to_string()),
                (true, "embedding:x b".to_string()),
                (true, "embedding:y".to_string())
            ]
        );
        assert_eq!(
            split_embeddings("aembedding:x"),
            [(false, "aembedding:x".to_string())]
        );
    }
}
