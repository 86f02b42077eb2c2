//! A pickle interpreter (protocols 0–5) that never executes anything: every opcode builds an
//! inert [`Value`]; globals are resolved only through the allow-list in [`crate::globals`];
//! persistent ids become storage references. Every resource is bounded by [`Limits`].

use std::collections::HashMap;

use crate::globals::{self, Storages};
use crate::value::{Id, Value, Values};
use crate::{Limits, PtError, Warnings};

/// The result of running one pickle.
pub struct Unpickled {
    /// The object the pickle's STOP returned.
    pub root: Id,
    /// Bytes of the input the pickle used (the STOP opcode included).
    pub len: usize,
}

/// The interpreter state. One `Machine` may run several pickles in a row (the legacy
/// format has five) into the same node arena and storage table.
pub struct Machine<'a> {
    pub(crate) values: Values,
    pub(crate) storages: Storages,
    pub(crate) warnings: &'a mut Warnings,
    limits: &'a Limits,
    ops: u64,
    allocated: u64,
}

/// One pickle being read.
struct Run<'d> {
    data: &'d [u8],
    pos: usize,
    /// File offset of `data[0]`, for messages.
    base: u64,
    /// Offset of the current opcode in `data`.
    op_at: usize,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl<'a> Machine<'a> {
    /// A machine with an empty arena.
    pub fn new(limits: &'a Limits, warnings: &'a mut Warnings) -> Self {
        Machine {
            values: Values::default(),
            storages: Storages::default(),
            warnings,
            limits,
            ops: 0,
            allocated: 0,
        }
    }

    /// The limits this machine runs under.
    pub(crate) fn limits(&self) -> &Limits {
        self.limits
    }

    /// Adds a node, within `limits.max_nodes`.
    pub(crate) fn push_value(&mut self, v: Value) -> Result<Id, PtError> {
        if self.values.len() >= self.limits.max_nodes {
            return Err(PtError::Limit(format!(
                "more than {} pickle values",
                self.limits.max_nodes
            )));
        }
        Ok(self.values.push(v))
    }

    /// Counts `n` bytes against `limits.max_alloc`.
    pub(crate) fn charge(&mut self, n: u64) -> Result<(), PtError> {
        self.allocated = self.allocated.saturating_add(n);
        if self.allocated > self.limits.max_alloc {
            return Err(PtError::Limit(format!(
                "pickle values would take more than {} bytes",
                self.limits.max_alloc
            )));
        }
        Ok(())
    }

    /// Runs the pickle at the start of `data` (file offset `base`) up to its STOP opcode.
    pub fn run(&mut self, data: &[u8], base: u64) -> Result<Unpickled, PtError> {
        let mut r = Run {
            data,
            pos: 0,
            base,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        };
        loop {
            r.op_at = r.pos;
            self.ops += 1;
            if self.ops > self.limits.max_ops {
                return Err(PtError::Limit(format!(
                    "more than {} pickle opcodes",
                    self.limits.max_ops
                )));
            }
            let op = r.take(1)?[0];
            if op == b'.' {
                let root = r.pop()?;
                return Ok(Unpickled { root, len: r.pos });
            }
            self.step(&mut r, op)?;
            if r.stack.len() > self.limits.max_stack || r.marks.len() > self.limits.max_stack {
                return Err(PtError::Limit(format!(
                    "pickle stack deeper than {}",
                    self.limits.max_stack
                )));
            }
        }
    }

    fn push(&mut self, r: &mut Run, v: Value) -> Result<(), PtError> {
        let id = self.push_value(v)?;
        r.stack.push(id);
        Ok(())
    }

    fn push_bytes(&mut self, r: &mut Run, len: u64, text: bool) -> Result<(), PtError> {
        if len > self.limits.max_string {
            return Err(PtError::Limit(format!(
                "a {len}-byte string (limit {})",
                self.limits.max_string
            )));
        }
        self.charge(len)?;
        let raw = r.take(len)?;
        let v = if text {
            Value::Str(String::from_utf8_lossy(raw).into_owned())
        } else {
            Value::Bytes(raw.to_vec())
        };
        self.push(r, v)
    }

    fn memo_put(&mut self, r: &mut Run, idx: u32) -> Result<(), PtError> {
        let top = *r
            .stack
            .last()
            .ok_or_else(|| r.fail("PUT on an empty stack"))?;
        if r.memo.len() >= self.limits.max_memo && !r.memo.contains_key(&idx) {
            return Err(PtError::Limit(format!(
                "more than {} memo entries",
                self.limits.max_memo
            )));
        }
        r.memo.insert(idx, top);
        Ok(())
    }

    fn memo_get(&mut self, r: &mut Run, idx: u32) -> Result<(), PtError> {
        let id = *r
            .memo
            .get(&idx)
            .ok_or_else(|| r.fail(format!("memo entry {idx} was never set")))?;
        r.stack.push(id);
        Ok(())
    }

    /// Executes one opcode other than STOP.
    fn step(&mut self, r: &mut Run, op: u8) -> Result<(), PtError> {
        match op {
            // protocol framing and no-ops
            0x80 => {
                let proto = r.take(1)?[0];
                if proto > 5 {
                    return Err(r.fail(format!("unsupported pickle protocol {proto}")));
                }
            }
            0x95 => {
                r.take(8)?;
            }
            0x98 => {} // READONLY_BUFFER
            // stack manipulation
            b'(' => r.marks.push(r.stack.len()),
            b'0' => {
                r.pop()?;
            }
            b'1' => {
                r.pop_mark()?;
            }
            b'2' => {
                let top = *r
                    .stack
                    .last()
                    .ok_or_else(|| r.fail("DUP on an empty stack"))?;
                r.stack.push(top);
            }
            // memo
            b'p' => {
                let idx = r.line_u32()?;
                self.memo_put(r, idx)?;
            }
            b'q' => {
                let idx = r.take(1)?[0].into();
                self.memo_put(r, idx)?;
            }
            b'r' => {
                let idx = r.u32()?;
                self.memo_put(r, idx)?;
            }
            0x94 => {
                let idx = u32::try_from(r.memo.len()).map_err(|_| r.fail("memo overflow"))?;
                self.memo_put(r, idx)?;
            }
            b'g' => {
                let idx = r.line_u32()?;
                self.memo_get(r, idx)?;
            }
            b'h' => {
                let idx = r.take(1)?[0].into();
                self.memo_get(r, idx)?;
            }
            b'j' => {
                let idx = r.u32()?;
                self.memo_get(r, idx)?;
            }
            _ => self.step_value(r, op)?,
        }
        Ok(())
    }

    /// Opcodes that push constants.
    fn step_value(&mut self, r: &mut Run, op: u8) -> Result<(), PtError> {
        let v = match op {
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(i32::from_le_bytes(r.array()?).into()),
            b'K' => Value::Int(r.take(1)?[0].into()),
            b'M' => Value::Int(u16::from_le_bytes(r.array()?).into()),
            b'G' => Value::Float(f64::from_be_bytes(r.array()?)),
            0x8a => {
                let n = r.take(1)?[0].into();
                self.long(r, n)?
            }
            0x8b => {
                let n = r.u32()?.into();
                self.long(r, n)?
            }
            b'I' => {
                let line = r.line()?;
                match line {
                    b"00" => Value::Bool(false),
                    b"01" => Value::Bool(true),
                    _ => parse_int(line).ok_or_else(|| r.fail("bad INT"))?,
                }
            }
            b'L' => {
                let line = r.line()?;
                parse_int(line.strip_suffix(b"L").unwrap_or(line))
                    .ok_or_else(|| r.fail("bad LONG"))?
            }
            b'F' => {
                let line = r.line()?;
                let f = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                Value::Float(f.ok_or_else(|| r.fail("bad FLOAT"))?)
            }
            b'S' => {
                let line = r.line()?.to_vec();
                self.charge(line.len() as u64)?;
                let q = line.first().copied();
                let inner = match (q, line.last()) {
                    (Some(a @ (b'\'' | b'"')), Some(&b)) if line.len() >= 2 && a == b => {
                        &line[1..line.len() - 1]
                    }
                    _ => return Err(r.fail("STRING without quotes")),
                };
                Value::Str(String::from_utf8_lossy(inner).into_owned())
            }
            b'V' => {
                let line = r.line()?.to_vec();
                self.charge(line.len() as u64)?;
                Value::Str(String::from_utf8_lossy(&line).into_owned())
            }
            b'T' | b'B' | b'X' => {
                let n = r.u32()?.into();
                return self.push_bytes(r, n, op == b'X');
            }
            b'U' | b'C' | 0x8c => {
                let n = r.take(1)?[0].into();
                return self.push_bytes(r, n, op == 0x8c);
            }
            0x8d | 0x8e | 0x96 => {
                let n = u64::from_le_bytes(r.array()?);
                return self.push_bytes(r, n, op == 0x8d);
            }
            b')' => Value::Tuple(Vec::new()),
            b']' => Value::List(Vec::new()),
            b'}' => Value::Dict {
                items: Vec::new(),
                attrs: None,
            },
            0x8f => Value::Set(Vec::new()),
            0x97 => {
                self.warnings
                    .add("pickle uses an out-of-band buffer (kept opaque)");
                Value::Opaque("out-of-band buffer")
            }
            _ => return self.step_build(r, op),
        };
        self.push(r, v)
    }

    fn long(&mut self, r: &mut Run, n: u64) -> Result<Value, PtError> {
        if n > self.limits.max_string {
            return Err(PtError::Limit(format!("a {n}-byte int")));
        }
        self.charge(n)?;
        let raw = r.take(n)?;
        if raw.len() <= 8 {
            let fill = if raw.last().is_some_and(|b| b & 0x80 != 0) {
                0xFF
            } else {
                0
            };
            let mut b = [fill; 8];
            b[..raw.len()].copy_from_slice(raw);
            return Ok(Value::Int(i64::from_le_bytes(b)));
        }
        Ok(Value::BigInt(raw.to_vec()))
    }

    /// Opcodes that build containers (the rest go to [`Self::step_object`]).
    fn step_build(&mut self, r: &mut Run, op: u8) -> Result<(), PtError> {
        match op {
            b't' => {
                let items = r.pop_mark()?;
                self.push(r, Value::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = r.pop_n(n)?;
                self.push(r, Value::Tuple(items))?;
            }
            b'l' => {
                let items = r.pop_mark()?;
                self.push(r, Value::List(items))?;
            }
            b'd' => {
                let items = r.pop_mark()?;
                let pairs =
                    pairs(&items).ok_or_else(|| r.fail("DICT with an odd number of items"))?;
                self.push(
                    r,
                    Value::Dict {
                        items: pairs,
                        attrs: None,
                    },
                )?;
            }
            0x91 => {
                let items = r.pop_mark()?;
                self.push(r, Value::Set(items))?;
            }
            b'a' => {
                let item = r.pop()?;
                let target = r.top()?;
                self.extend(r, target, vec![item])?;
            }
            b'e' | 0x90 => {
                let items = r.pop_mark()?;
                let target = r.top()?;
                self.extend(r, target, items)?;
            }
            b's' => {
                let v = r.pop()?;
                let k = r.pop()?;
                let target = r.top()?;
                self.set_items(r, target, vec![k, v])?;
            }
            b'u' => {
                let items = r.pop_mark()?;
                let target = r.top()?;
                self.set_items(r, target, items)?;
            }
            _ => return self.step_object(r, op),
        }
        Ok(())
    }

    /// The opcodes that name globals, call them, set object state or load persistent ids.
    fn step_object(&mut self, r: &mut Run, op: u8) -> Result<(), PtError> {
        match op {
            b'c' => {
                let module = r.line()?.to_vec();
                let name = r.line()?.to_vec();
                let g = globals::resolve(&module, &name, self.warnings);
                self.push(r, Value::Global(g))?;
            }
            0x93 => {
                let name = r.pop()?;
                let module = r.pop()?;
                let (Some(m), Some(n)) = (self.values.text(module), self.values.text(name)) else {
                    return Err(r.fail("STACK_GLOBAL needs two strings"));
                };
                let g = globals::resolve(m.as_bytes(), n.as_bytes(), self.warnings);
                self.push(r, Value::Global(g))?;
            }
            0x82..=0x84 => {
                let n = [1, 2, 4][usize::from(op - 0x82)];
                r.take(n)?;
                let g = globals::unknown("copyreg extension", self.warnings);
                self.push(r, Value::Global(g))?;
            }
            b'R' | 0x81 => {
                let args = r.pop()?;
                let func = r.pop()?;
                let id = globals::call(self, func, args, 0)?;
                r.stack.push(id);
            }
            0x92 => {
                let _kwargs = r.pop()?;
                let args = r.pop()?;
                let func = r.pop()?;
                let id = globals::call(self, func, args, 0)?;
                r.stack.push(id);
            }
            b'i' => {
                let module = r.line()?.to_vec();
                let name = r.line()?.to_vec();
                let items = r.pop_mark()?;
                let g = globals::resolve(&module, &name, self.warnings);
                let func = self.push_value(Value::Global(g))?;
                let args = self.push_value(Value::Tuple(items))?;
                let id = globals::call(self, func, args, 0)?;
                r.stack.push(id);
            }
            b'o' => {
                let mut items = r.pop_mark()?;
                if items.is_empty() {
                    return Err(r.fail("OBJ without a class"));
                }
                let func = items.remove(0);
                let args = self.push_value(Value::Tuple(items))?;
                let id = globals::call(self, func, args, 0)?;
                r.stack.push(id);
            }
            b'b' => {
                let state = r.pop()?;
                let target = r.top()?;
                match self.values.get_mut(target) {
                    Value::Dict { attrs, .. } => *attrs = Some(state),
                    Value::Object { state: s, .. } => *s = Some(state),
                    Value::Tensor(_) => {}
                    _ => self
                        .warnings
                        .add("BUILD on a value that takes no state (ignored)"),
                }
            }
            b'Q' => {
                let pid = r.pop()?;
                let id = globals::persistent(self, pid)?;
                r.stack.push(id);
            }
            b'P' => {
                r.line()?;
                self.warnings.add("text persistent id (kept opaque)");
                self.push(r, Value::Opaque("text persistent id"))?;
            }
            _ => return Err(r.fail(format!("unknown opcode 0x{op:02x}"))),
        }
        Ok(())
    }

    fn extend(&mut self, r: &mut Run, target: Id, items: Vec<Id>) -> Result<(), PtError> {
        match self.values.get_mut(target) {
            Value::List(v) | Value::Set(v) | Value::Object { items: v, .. } => v.extend(items),
            _ => return Err(r.fail("APPEND to something that is not a list")),
        }
        Ok(())
    }

    fn set_items(&mut self, r: &mut Run, target: Id, items: Vec<Id>) -> Result<(), PtError> {
        let pairs = pairs(&items).ok_or_else(|| r.fail("SETITEMS with an odd number of items"))?;
        match self.values.get_mut(target) {
            Value::Dict { items: v, .. } => v.extend(pairs),
            Value::Object { pairs: v, .. } => v.extend(pairs),
            _ => return Err(r.fail("SETITEM on something that is not a dict")),
        }
        Ok(())
    }
}

fn pairs(items: &[Id]) -> Option<Vec<(Id, Id)>> {
    items
        .len()
        .is_multiple_of(2)
        .then(|| items.chunks(2).map(|c| (c[0], c[1])).collect())
}

fn parse_int(line: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(line).ok()?.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Some(Value::Int(v));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(Value::Opaque("big int"))
}

impl Run<'_> {
    fn fail(&self, message: impl Into<String>) -> PtError {
        PtError::Pickle {
            offset: self.base + self.op_at as u64,
            message: message.into(),
        }
    }

    fn take(&mut self, n: impl TryInto<usize>) -> Result<&[u8], PtError> {
        let n: usize = n.try_into().map_err(|_| self.fail("length out of range"))?;
        match self.pos.checked_add(n).filter(|&e| e <= self.data.len()) {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.fail("truncated pickle")),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PtError> {
        let s = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, PtError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A newline-terminated argument (without the newline).
    fn line(&mut self) -> Result<&[u8], PtError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.fail("unterminated line"))?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn line_u32(&mut self) -> Result<u32, PtError> {
        let line = self.line()?;
        let v = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        v.ok_or_else(|| self.fail("bad memo index"))
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, PtError> {
        if self.stack.len() <= self.floor() {
            return Err(self.fail("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.fail("stack underflow"))
    }

    fn top(&self) -> Result<Id, PtError> {
        if self.stack.len() <= self.floor() {
            return Err(self.fail("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.fail("stack underflow"))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Id>, PtError> {
        if self.stack.len() < self.floor() + n {
            return Err(self.fail("stack underflow"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, PtError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.fail("no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }
}
