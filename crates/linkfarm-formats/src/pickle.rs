//! The pickle scanner: reads a pickle opcode by opcode (protocols 0-5), executes nothing, and
//! resolves every import statically against an allowlist of what a tensor state dict needs.
//!
//! The allowlist is modelled on the safe unpickler of AUTOMATIC1111's stable-diffusion-webui
//! (`modules/safe.py`), which Forge inherits: exact `(module, name)` pairs only, never a module
//! prefix, so `torch.utils.collect_env.run` or `numpy.__builtins__` are as foreign as `os.system`.
//!
//! The scanner keeps a symbolic model of the unpickler's stack, marks and memo, the way
//! CPython's `_pickle.c` manipulates them, so it knows what every `STACK_GLOBAL` operand is no
//! matter how it got there (a literal, or the memo through `PUT`/`BINPUT`/`MEMOIZE`/`GET`): the
//! bypasses reported against picklescan and modelscan (memo confusion, operands put in the memo
//! by one opcode and read by another, strings built by a call) all hinge on a scanner that
//! guesses operands from neighbouring opcodes. Whatever the model cannot pin to a plain string
//! is refused as unsafe. Calls (`REDUCE`, `NEWOBJ`, `OBJ`, `INST`) must go to a global the
//! allowlist resolved, and `BUILD`/`APPEND`/`SETITEM` may not modify a global itself (setattr on a
//! class or function is how modelscan #85 smuggled names). Memory is bounded: strings are kept
//! only up to [`MAX_KEPT_STRING`] bytes, and stack and memo are capped.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use crate::{io_refusal, torchzip, Refusal};

/// A pickle larger than this is refused (SPEC §10).
pub const MAX_PICKLE: u64 = 64 * 1024 * 1024;
/// Strings longer than this are not kept (no allowed global has a name near this long).
pub const MAX_KEPT_STRING: u64 = 1024;
/// At most this many values on the stack, and this many memo entries.
pub const MAX_STACK: usize = 1 << 20;
/// The longest line of a protocol-0 opcode argument.
pub const MAX_LINE: usize = 64 * 1024;
/// A bare (pre-1.6 "legacy") torch file is five pickles followed by raw storage bytes, and
/// torch.load reads exactly five: so do A1111 and this scanner.
pub const LEGACY_PICKLES: usize = 5;

/// The globals a tensor state dict may import: A1111's list, plus the `torch.*Storage` types A1111
/// leaves out (Short, Char, Bool, Complex), numpy 2's `numpy._core` spelling of the same two
/// functions, and `builtins.set` (protocol 3 spells `__builtin__.set` so).
pub const ALLOWED: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("torch", "ComplexFloatStorage"),
    ("torch", "ComplexDoubleStorage"),
    ("torch", "float32"),
    ("torch.nn.modules.container", "ParameterDict"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("_codecs", "encode"),
    ("pytorch_lightning.callbacks", "model_checkpoint"),
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("__builtin__", "set"),
    ("builtins", "set"),
];

/// Whether `module.name` is on the allowlist.
pub fn allowed(module: &str, name: &str) -> bool {
    ALLOWED.iter().any(|&(m, n)| m == module && n == name)
}

/// How a checked pickle file is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The zip `torch.save` writes; `archive` is its top folder name.
    TorchZip {
        /// The folder every entry is in (`archive` by default).
        archive: String,
        /// The number of entries.
        entries: usize,
    },
    /// One or more pickles at the start of the file (a bare pickle or a legacy torch file).
    Bare,
}

/// What a pickle that passed the scan contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The file layout.
    pub layout: Layout,
    /// The highest protocol seen (0 when there is no `PROTO` opcode).
    pub protocol: u8,
    /// How many pickles were scanned.
    pub pickles: usize,
    /// How many opcodes.
    pub opcodes: u64,
    /// The globals imported, as `module.name`, each once, in order of first use.
    pub globals: Vec<String>,
}

/// Checks a `.ckpt`/`.pt`/`.pth`/`.bin` file of `size` bytes: a torch zip when it starts with a
/// zip local header, a bare pickle otherwise. Which one is decided by the first bytes, as
/// torch.load decides: a file that is a pickle in front and a zip at the end is scanned as the
/// pickle torch would run.
pub fn check_file<R: Read + Seek>(input: &mut R, size: u64) -> Result<Report, Refusal> {
    let mut magic = [0u8; 4];
    let n = read_up_to(input, &mut magic).map_err(|e| io_refusal(e, "its first bytes"))?;
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_refusal(e, "its start"))?;
    if n == 4 && &magic == b"PK\x03\x04" {
        let zip = torchzip::check(input, size)?;
        input
            .seek(SeekFrom::Start(zip.data_pkl_offset))
            .map_err(|e| io_refusal(e, "data.pkl"))?;
        let mut report = scan(&mut (&mut *input).take(zip.data_pkl_size), 1)?;
        report.layout = Layout::TorchZip {
            archive: zip.archive,
            entries: zip.entries,
        };
        Ok(report)
    } else if n > 0 && opcode_known(magic[0]) {
        scan(&mut (&mut *input).take(MAX_PICKLE + 1), LEGACY_PICKLES)
    } else {
        Err(Refusal::corrupt(
            "this is neither the zip that torch.save writes nor a pickle (its first bytes are \
             neither). The file is damaged or in another format; re-export it, preferably as \
             .safetensors.",
        ))
    }
}

fn read_up_to<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn opcode_known(op: u8) -> bool {
    matches!(
        op,
        b'(' | b'.'
            | b'0'
            | b'1'
            | b'2'
            | b'F'
            | b'I'
            | b'J'
            | b'K'
            | b'L'
            | b'M'
            | b'N'
            | b'P'
            | b'Q'
            | b'R'
            | b'S'
            | b'T'
            | b'U'
            | b'V'
            | b'X'
            | b'a'
            | b'b'
            | b'c'
            | b'd'
            | b'}'
            | b'e'
            | b'g'
            | b'h'
            | b'i'
            | b'j'
            | b'l'
            | b']'
            | b'o'
            | b'p'
            | b'q'
            | b'r'
            | b's'
            | b't'
            | b')'
            | b'u'
            | b'G'
            | b'B'
            | b'C'
            | 0x80..=0x98
    )
}

/// A value on the symbolic stack.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    /// A str whose value is known (pushed by a string opcode, or read back from the memo).
    Str(Box<str>),
    /// A global the allowlist resolved.
    Global(Box<str>),
    /// Anything else: numbers, containers, call results, long or escaped strings.
    Other,
}

struct Scanner<R> {
    input: BufReader<R>,
    pos: u64,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: HashMap<u64, Val>,
    report: Report,
}

/// Scans up to `max_pickles` consecutive pickles from `input` (a reader limited by the caller),
/// stopping early at a clean end of input after a pickle. Input beyond [`MAX_PICKLE`] bytes is
/// refused.
pub fn scan<R: Read>(input: &mut R, max_pickles: usize) -> Result<Report, Refusal> {
    let mut s = Scanner {
        input: BufReader::with_capacity(64 * 1024, input),
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        report: Report {
            layout: Layout::Bare,
            protocol: 0,
            pickles: 0,
            opcodes: 0,
            globals: Vec::new(),
        },
    };
    for i in 0..max_pickles {
        if i > 0 {
            match s.input.fill_buf() {
                Ok([]) => break,
                Ok(_) => {}
                Err(e) => return Err(io_refusal(e, "the pickle")),
            }
        }
        // Each pickle starts with a fresh stack and memo, as a new Unpickler.load() has.
        s.stack.clear();
        s.marks.clear();
        s.memo.clear();
        s.one()?;
        s.report.pickles += 1;
    }
    Ok(s.report)
}

fn malformed(what: impl std::fmt::Display, at: u64) -> Refusal {
    Refusal::corrupt(format!(
        "the pickle is malformed at byte {at}: {what}. The file is damaged; re-export it, \
         preferably as .safetensors."
    ))
}

fn unsafe_at(what: impl std::fmt::Display, at: u64) -> Refusal {
    Refusal::unsafe_(format!(
        "the pickle {what} (at byte {at}). Loading it could run code on the server: it was not \
         accepted. Use a .safetensors version of this model instead."
    ))
}

impl<R: Read> Scanner<R> {
    fn io(&self, e: io::Error) -> Refusal {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            if self.pos > MAX_PICKLE {
                return Refusal::corrupt(format!(
                    "the pickle is larger than {} MiB, which no state dict needs: refused",
                    MAX_PICKLE >> 20
                ));
            }
            return malformed("it ends before its STOP opcode (the file is truncated)", self.pos);
        }
        io_refusal(e, "the pickle")
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Refusal> {
        let mut b = [0u8; N];
        self.input.read_exact(&mut b).map_err(|e| self.io(e))?;
        self.pos += N as u64;
        if self.pos > MAX_PICKLE {
            return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(b)
    }

    /// Reads `n` bytes, keeping them only when `n <= MAX_KEPT_STRING`.
    fn payload(&mut self, n: u64) -> Result<Option<Vec<u8>>, Refusal> {
        if self.pos.saturating_add(n) > MAX_PICKLE {
            self.pos = self.pos.saturating_add(n);
            return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
        }
        let kept = if n <= MAX_KEPT_STRING {
            let mut v = vec![0u8; n as usize];
            self.input.read_exact(&mut v).map_err(|e| self.io(e))?;
            Some(v)
        } else {
            crate::util::skip(&mut self.input, n).map_err(|e| self.io(e))?;
            None
        };
        self.pos += n;
        Ok(kept)
    }

    fn line(&mut self) -> Result<String, Refusal> {
        let mut buf = Vec::new();
        let start = self.pos;
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) => {
                    let pos = self.pos;
                    return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                        malformed("it ends inside an argument line", pos)
                    } else {
                        io_refusal(e, "the pickle")
                    });
                }
            };
            if chunk.is_empty() {
                return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            buf.extend_from_slice(&chunk[..take]);
            self.input.consume(take);
            self.pos += take as u64;
            if buf.len() > MAX_LINE {
                return Err(malformed("an argument line longer than 64 KiB", start));
            }
            if done {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return String::from_utf8(buf)
                    .map_err(|_| malformed("an argument line that is not UTF-8", start));
            }
        }
    }

    fn push(&mut self, v: Val, at: u64) -> Result<(), Refusal> {
        if self.stack.len() >= MAX_STACK {
            return Err(unsafe_at("is too deep to check statically", at));
        }
        self.stack.push(v);
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, at: u64) -> Result<Val, Refusal> {
        if self.stack.len() <= self.fence() {
            return Err(malformed("stack underflow", at));
        }
        Ok(self.stack.pop().expect("checked above the fence"))
    }

    fn pop_mark(&mut self, at: u64) -> Result<Vec<Val>, Refusal> {
        let Some(mark) = self.marks.pop() else {
            return Err(malformed("no MARK to pop to", at));
        };
        Ok(self.stack.split_off(mark))
    }

    fn top(&self, at: u64) -> Result<&Val, Refusal> {
        if self.stack.len() <= self.fence() {
            return Err(malformed("stack underflow", at));
        }
        Ok(self.stack.last().expect("checked above the fence"))
    }

    /// The target of BUILD/APPEND/SETITEM/ADDITEMS: must exist and must not be a global.
    fn modify_top(&self, op: &str, at: u64) -> Result<(), Refusal> {
        if let Val::Global(g) = self.top(at)? {
            return Err(unsafe_at(format!("modifies the global {g} with {op}"), at));
        }
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str, at: u64) -> Result<Val, Refusal> {
        if !allowed(module, name) {
            return Err(unsafe_at(
                format!("imports {module}.{name}, which is not on the allowlist of a state dict"),
                at,
            ));
        }
        let full = format!("{module}.{name}");
        if !self.report.globals.contains(&full) && self.report.globals.len() < 64 {
            self.report.globals.push(full.clone());
        }
        Ok(Val::Global(full.into()))
    }

    fn callable(&mut self, v: Val, op: &str, at: u64) -> Result<(), Refusal> {
        match v {
            Val::Global(_) => Ok(()),
            _ => Err(unsafe_at(
                format!("calls something with {op} that is not an allowed global"),
                at,
            )),
        }
    }

    fn memo_put(&mut self, idx: u64, at: u64) -> Result<(), Refusal> {
        let v = self.top(at)?.clone();
        if self.memo.len() >= MAX_STACK && !self.memo.contains_key(&idx) {
            return Err(unsafe_at("has too many memo entries to check statically", at));
        }
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64, at: u64) -> Result<(), Refusal> {
        let Some(v) = self.memo.get(&idx).cloned() else {
            return Err(malformed(
                format!("memo entry {idx} read before it was written"),
                at,
            ));
        };
        self.push(v, at)
    }

    fn str_val(bytes: Option<Vec<u8>>) -> Val {
        match bytes.map(String::from_utf8) {
            Some(Ok(s)) => Val::Str(s.into()),
            _ => Val::Other,
        }
    }

    fn int_line(&mut self, at: u64) -> Result<u64, Refusal> {
        let l = self.line()?;
        l.trim()
            .parse::<u64>()
            .map_err(|_| malformed(format!("a memo index {l:?} that is not a number"), at))
    }

    fn one(&mut self) -> Result<(), Refusal> {
        loop {
            let at = self.pos;
            let [op] = self.bytes::<1>()?;
            self.report.opcodes += 1;
            match op {
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(unsafe_at("is too deep to check statically", at));
                    }
                    self.marks.push(self.stack.len());
                }
                b'.' => {
                    self.pop(at)?;
                    return Ok(());
                }
                b'0' => {
                    if self.stack.len() > self.fence() {
                        self.stack.pop();
                    } else {
                        self.pop_mark(at)?;
                    }
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.push(v, at)?;
                }
                b'F' | b'I' | b'L' => {
                    self.line()?;
                    self.push(Val::Other, at)?;
                }
                b'J' => {
                    self.bytes::<4>()?;
                    self.push(Val::Other, at)?;
                }
                b'K' => {
                    self.bytes::<1>()?;
                    self.push(Val::Other, at)?;
                }
                b'M' => {
                    self.bytes::<2>()?;
                    self.push(Val::Other, at)?;
                }
                b'G' => {
                    self.bytes::<8>()?;
                    self.push(Val::Other, at)?;
                }
                b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | 0x8f => self.push(Val::Other, at)?,
                b'P' => {
                    // torch's persistent_load only looks up a storage by key.
                    self.line()?;
                    self.push(Val::Other, at)?;
                }
                b'Q' => {
                    self.pop(at)?;
                    self.push(Val::Other, at)?;
                }
                b'R' => {
                    self.pop(at)?;
                    let f = self.pop(at)?;
                    self.callable(f, "REDUCE", at)?;
                    self.push(Val::Other, at)?;
                }
                b'S' => {
                    // Python 3 decodes a protocol-0 string to str. Escapes could spell any
                    // name, so only a plain quoted string counts as known.
                    let l = self.line()?;
                    let v = match l.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                        Some(s) if !s.contains('\\') => Val::Str(s.into()),
                        _ => match l.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                            Some(s) if !s.contains('\\') => Val::Str(s.into()),
                            _ => Val::Other,
                        },
                    };
                    self.push(v, at)?;
                }
                b'T' => {
                    let n = i32::from_le_bytes(self.bytes::<4>()?);
                    if n < 0 {
                        return Err(malformed("a negative BINSTRING length", at));
                    }
                    let b = self.payload(n as u64)?;
                    self.push(Self::str_val(b), at)?;
                }
                b'U' => {
                    let [n] = self.bytes::<1>()?;
                    let b = self.payload(n.into())?;
                    self.push(Self::str_val(b), at)?;
                }
                b'V' => {
                    // raw-unicode-escape: a backslash may spell any character.
                    let l = self.line()?;
                    let v = if l.contains('\\') {
                        Val::Other
                    } else {
                        Val::Str(l.into())
                    };
                    self.push(v, at)?;
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.bytes::<4>()?);
                    let b = self.payload(n.into())?;
                    self.push(Self::str_val(b), at)?;
                }
                0x8c => {
                    let [n] = self.bytes::<1>()?;
                    let b = self.payload(n.into())?;
                    self.push(Self::str_val(b), at)?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.bytes::<8>()?);
                    let b = self.payload(n)?;
                    self.push(Self::str_val(b), at)?;
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.bytes::<4>()?);
                    self.payload(n.into())?;
                    self.push(Val::Other, at)?;
                }
                b'C' => {
                    let [n] = self.bytes::<1>()?;
                    self.payload(n.into())?;
                    self.push(Val::Other, at)?;
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.bytes::<8>()?);
                    self.payload(n)?;
                    self.push(Val::Other, at)?;
                }
                0x8a => {
                    let [n] = self.bytes::<1>()?;
                    self.payload(n.into())?;
                    self.push(Val::Other, at)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.bytes::<4>()?);
                    if n < 0 {
                        return Err(malformed("a negative LONG4 length", at));
                    }
                    self.payload(n as u64)?;
                    self.push(Val::Other, at)?;
                }
                b'a' => {
                    self.pop(at)?;
                    self.modify_top("APPEND", at)?;
                }
                b'e' => {
                    self.pop_mark(at)?;
                    self.modify_top("APPENDS", at)?;
                }
                b'b' => {
                    self.pop(at)?;
                    self.modify_top("BUILD", at)?;
                }
                b's' => {
                    self.pop(at)?;
                    self.pop(at)?;
                    self.modify_top("SETITEM", at)?;
                }
                b'u' => {
                    self.pop_mark(at)?;
                    self.modify_top("SETITEMS", at)?;
                }
                0x90 => {
                    self.pop_mark(at)?;
                    self.modify_top("ADDITEMS", at)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name, at)?;
                    self.push(g, at)?;
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name, at)?;
                    self.pop_mark(at)?;
                    self.push(Val::Other, at)?;
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Val::Str(module), Val::Str(name)) = (module, name) else {
                        return Err(unsafe_at(
                            "has a STACK_GLOBAL whose module and name are not plain strings, \
                             so what it imports cannot be known without running it",
                            at,
                        ));
                    };
                    let g = self.global(&module, &name, at)?;
                    self.push(g, at)?;
                }
                b'o' => {
                    let mut items = self.pop_mark(at)?.into_iter();
                    let Some(cls) = items.next() else {
                        return Err(malformed("OBJ without a class", at));
                    };
                    self.callable(cls, "OBJ", at)?;
                    self.push(Val::Other, at)?;
                }
                0x81 => {
                    self.pop(at)?;
                    let cls = self.pop(at)?;
                    self.callable(cls, "NEWOBJ", at)?;
                    self.push(Val::Other, at)?;
                }
                0x92 => {
                    self.pop(at)?;
                    self.pop(at)?;
                    let cls = self.pop(at)?;
                    self.callable(cls, "NEWOBJ_EX", at)?;
                    self.push(Val::Other, at)?;
                }
                0x82..=0x84 => {
                    return Err(unsafe_at(
                        "uses the copyreg extension registry (EXT opcodes), whose imports \
                         cannot be known statically",
                        at,
                    ));
                }
                b'd' | b'l' | b't' | 0x91 => {
                    self.pop_mark(at)?;
                    self.push(Val::Other, at)?;
                }
                0x85 => {
                    self.pop(at)?;
                    self.push(Val::Other, at)?;
                }
                0x86 => {
                    self.pop(at)?;
                    self.pop(at)?;
                    self.push(Val::Other, at)?;
                }
                0x87 => {
                    self.pop(at)?;
                    self.pop(at)?;
                    self.pop(at)?;
                    self.push(Val::Other, at)?;
                }
                b'g' => {
                    let i = self.int_line(at)?;
                    self.memo_get(i, at)?;
                }
                b'h' => {
                    let [i] = self.bytes::<1>()?;
                    self.memo_get(i.into(), at)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.bytes::<4>()?);
                    self.memo_get(i.into(), at)?;
                }
                b'p' => {
                    let i = self.int_line(at)?;
                    self.memo_put(i, at)?;
                }
                b'q' => {
                    let [i] = self.bytes::<1>()?;
                    self.memo_put(i.into(), at)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.bytes::<4>()?);
                    self.memo_put(i.into(), at)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i, at)?;
                }
                0x80 => {
                    let [v] = self.bytes::<1>()?;
                    if v > 5 {
                        return Err(malformed(format!("unsupported pickle protocol {v}"), at));
                    }
                    self.report.protocol = self.report.protocol.max(v);
                }
                0x95 => {
                    self.bytes::<8>()?;
                }
                0x97 => self.push(Val::Other, at)?,
                0x98 => {
                    self.pop(at)?;
                    self.push(Val::Other, at)?;
                }
                other => {
                    return Err(unsafe_at(
                        format!("contains the opcode 0x{other:02x}, which no pickle protocol defines"),
                        at,
                    ));
                }
            }
        }
    }
}
