//! A restricted unpickler: builds plain values from a pickle stream and
//! never calls anything.
//!
//! It reads the opcodes of protocols 2-5 that `torch.save` emits (Python's
//! `Lib/pickletools.py` documents each one) and refuses any other.
//! `GLOBAL`/`STACK_GLOBAL` resolve only the names of [`Global`]. `REDUCE`
//! applies an allowed global symbolically (an `OrderedDict` becomes a
//! [`Value::Dict`], `_rebuild_tensor_v2` a [`Value::Tensor`] description);
//! `BINPERSID` turns torch's persistent id `('storage', <storage type>, key,
//! location, numel)` into a [`Value::Storage`]. Tensor data is read
//! afterwards by [`crate::pt`].
//!
//! Any other global (`os.system`, `builtins.eval`, a model class, ...):
//! - [`unpickle`] fails the read at that opcode with the name in the message;
//! - [`unpickle_skipping`] pushes an inert [`Value::Foreign`] stand-in
//!   carrying the name instead; calling it (`REDUCE`, `NEWOBJ`), setting its
//!   state (`BUILD`) only yields another stand-in. This is how a Lightning
//!   checkpoint is read (its `callbacks` keyed by
//!   `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`, numpy
//!   scalars, optimizer and scheduler states beside the `state_dict`): what
//!   is not the state dict is skipped, never built, and a stand-in inside
//!   the state dict refuses the file ([`crate::pt`]).
//!
//! Memo entries are copies, not shared references: a state dict's memo holds
//! immutable things (strings, globals, storages, finished tensors).

mod value;

use value::{persistent_load, reduce};
pub use value::{refusal, Global, StorageRef, TensorRef, Value};

/// Unpickles `data` with the allow-list; the value `STOP` returns. Any
/// global outside the allow-list fails the read.
pub fn unpickle(data: &[u8]) -> Result<Value, String> {
    run(data, false)
}

/// As [`unpickle`], but a global outside the allow-list becomes a
/// [`Value::Foreign`] stand-in (never called) instead of failing the read.
pub fn unpickle_skipping(data: &[u8]) -> Result<Value, String> {
    run(data, true)
}

fn run(data: &[u8], stand_ins: bool) -> Result<Value, String> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: std::collections::HashMap::new(),
        stand_ins,
    }
    .run()
    .map_err(|e| format!("pickle: {e}"))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
    /// Unknown globals become stand-ins ([`unpickle_skipping`]).
    stand_ins: bool,
}

impl Machine<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated stream at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn len(&mut self, width: usize) -> Result<usize, String> {
        let b = self.bytes(width)?;
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(v)).map_err(|_| "length out of range".to_string())
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("unterminated GLOBAL name")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".to_string())
    }
    /// The items since the last MARK, removing the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("MARK missing")?;
        if m > self.stack.len() {
            return Err("MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn string(&mut self, width: usize) -> Result<Value, String> {
        let n = self.len(width)?;
        let b = self.bytes(n)?.to_vec();
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| "string is not UTF-8".into())
    }
    /// An allowed global, or (skipping) a stand-in for any other.
    fn global(&self, module: &str, name: &str) -> Result<Value, String> {
        match Global::resolve(module, name) {
            Ok(g) => Ok(Value::Global(g)),
            Err(_) if self.stand_ins => Ok(Value::Foreign(format!("{module}.{name}"))),
            Err(e) => Err(e),
        }
    }
    fn memo_get(&self, i: u32) -> Result<Value, String> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo {i} is not set"))
    }
    fn memo_put(&mut self, i: u32) -> Result<(), String> {
        let v = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("unknown pickle protocol {p}"));
                    }
                }
                0x95 => {
                    self.bytes(8)?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let b = self.bytes(2)?;
                    let v = u16::from_le_bytes([b[0], b[1]]) as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement, only
                    // as wide as an i64.
                    let n = if op == 0x8a {
                        self.len(1)?
                    } else {
                        self.len(4)?
                    };
                    if n > 8 {
                        return Err("LONG1/LONG4 wider than 64 bits".into());
                    }
                    let b = self.bytes(n)?.to_vec();
                    let mut v = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    v[..n].copy_from_slice(&b);
                    self.stack.push(Value::Int(i64::from_le_bytes(v)));
                }
                b'G' => {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(self.bytes(8)?);
                    self.stack.push(Value::Float(f64::from_be_bytes(v)));
                }
                b'X' => {
                    let v = self.string(4)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let v = self.string(1)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let v = self.string(8)?;
                    self.stack.push(v);
                }
                b'B' | b'C' | 0x8e => {
                    let width = match op {
                        b'B' => 4,
                        b'C' => 1,
                        _ => 8,
                    };
                    let n = self.len(width)?;
                    let b = self.bytes(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.stack.push(Value::Dict(pairs));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        // a stand-in (a dict or list subclass): items dropped
                        Value::Foreign(_) => {}
                        t => return Err(format!("APPEND to a {}", t.kind_name())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        // a stand-in (a dict or list subclass): items dropped
                        Value::Foreign(_) => {}
                        t => return Err(format!("APPENDS to a {}", t.kind_name())),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        // a stand-in (a dict or list subclass): items dropped
                        Value::Foreign(_) => {}
                        t => return Err(format!("SETITEM on a {}", t.kind_name())),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(new),
                        // a stand-in (a dict or list subclass): items dropped
                        Value::Foreign(_) => {}
                        t => return Err(format!("SETITEMS on a {}", t.kind_name())),
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name)?;
                    self.stack.push(g);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = self.global(&m, &n)?;
                            self.stack.push(g);
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = match f {
                        Value::Foreign(name) => Value::Foreign(name),
                        f => reduce(f, args)?,
                    };
                    self.stack.push(v);
                }
                0x81 | 0x92 => {
                    // NEWOBJ `cls.__new__(cls, *args)`, NEWOBJ_EX with kwargs:
                    // only a stand-in class (nothing allowed is a class
                    // instantiated this way).
                    if op == 0x92 {
                        self.pop()?;
                    }
                    self.pop()?;
                    match self.pop()? {
                        Value::Foreign(name) => self.stack.push(Value::Foreign(name)),
                        v => return Err(format!("NEWOBJ of a {}", v.kind_name())),
                    }
                }
                b'T' | b'U' => {
                    // BINSTRING / SHORT_BINSTRING (Python 2 str): bytes.
                    let n = self.len(if op == b'T' { 4 } else { 1 })?;
                    let b = self.bytes(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x96 => {
                    let n = self.len(8)?;
                    let b = self.bytes(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x8f => self.stack.push(Value::List(Vec::new())), // EMPTY_SET
                0x90 => {
                    // ADDITEMS
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        // a stand-in (a dict or list subclass): items dropped
                        Value::Foreign(_) => {}
                        t => return Err(format!("ADDITEMS to a {}", t.kind_name())),
                    }
                }
                0x91 => {
                    // FROZENSET
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'b' => {
                    // BUILD: the state of an OrderedDict (a state dict's
                    // `_metadata` attribute) or a tensor's empty state;
                    // kept nowhere, as torch's own loader only uses it
                    // for module versioning.
                    let _state = self.pop()?;
                    match self.top()? {
                        // A stand-in's state is set on nothing.
                        Value::Dict(_) | Value::Tensor(_) | Value::Foreign(_) => {}
                        t => return Err(format!("BUILD on a {}", t.kind_name())),
                    }
                }
                _ => {
                    return Err(format!(
                        "opcode 0x{op:02x} at byte {at} is not one a state dict uses; refused"
                    ))
                }
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}
