//! The inert value tree a pickle builds: an arena of nodes referenced by index, so shared
//! and even cyclic references (through the memo) cost nothing to represent.

use crate::dtype::Dtype;

/// Index of a node in [`Values`].
pub type Id = u32;

/// A global resolved against the allow-list (see [`crate::globals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict` or `collections.Counter`: calling it builds a dict.
    OrderedDict,
    /// `builtins.set` / `builtins.frozenset`.
    Set,
    /// `builtins.bytearray`.
    ByteArray,
    /// `_codecs.encode` (how protocol 2 pickles `bytes`).
    Encode,
    /// `torch.Size`: calling it gives the tuple it wraps.
    Size,
    /// `_rebuild_tensor`, `_rebuild_tensor_v2`, `_rebuild_qtensor`: (storage, offset, size,
    /// stride, ...).
    RebuildTensor,
    /// `_rebuild_tensor_v3`: like v2 with the dtype as seventh argument.
    RebuildTensorV3,
    /// `_rebuild_parameter(_with_state)`, `torch.nn.Parameter`,
    /// `_rebuild_device_tensor_from_cpu_tensor`: the first argument is the tensor.
    Passthrough,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`: `func(*args)`.
    FromType,
    /// A `torch.<dtype>` global.
    Dtype(Option<Dtype>),
    /// A storage class (`torch.FloatStorage`, `torch.UntypedStorage`, ...).
    StorageType {
        /// Element type; `None` for a class whose element type is not modelled.
        dtype: Option<Dtype>,
        /// `UntypedStorage`: the element count is in bytes and views give the dtype.
        untyped: bool,
    },
    /// Another allow-listed global (torch.device, qschemes, tensor classes, ...): calling
    /// it gives an inert object, without a warning.
    Allowed(String),
    /// Anything else: never resolved or run; calling it gives an inert object and a warning.
    Unknown(String),
}

/// A tensor view found in the pickle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Index into the storages the persistent ids named.
    pub storage: usize,
    /// Element type of the view.
    pub dtype: Dtype,
    /// Offset in elements of `dtype` from the start of the storage's bytes.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// A node of the value tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A larger int: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Id>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A dict (also OrderedDict, Counter); `attrs` is a BUILD state set on it.
    Dict {
        /// Key/value pairs in insertion order.
        items: Vec<(Id, Id)>,
        /// Instance attributes from BUILD (a state dict's `_metadata`).
        attrs: Option<Id>,
    },
    /// A set or frozenset.
    Set(Vec<Id>),
    /// A global.
    Global(Global),
    /// A storage named by a persistent id: index into the storages, plus an element offset
    /// for legacy storage views.
    Storage(usize, u64),
    /// A tensor view.
    Tensor(Tensor),
    /// The inert result of calling something: what was called, its arguments, a BUILD state
    /// and items appended or set on it.
    Object {
        /// The callable (usually a [`Value::Global`]).
        class: Id,
        /// The argument tuple.
        args: Id,
        /// BUILD state, if any.
        state: Option<Id>,
        /// Items from APPEND(S).
        items: Vec<Id>,
        /// Key/value pairs from SETITEM(S).
        pairs: Vec<(Id, Id)>,
    },
    /// Something with no inert meaning here (out-of-band buffer, text persistent id, ...).
    Opaque(&'static str),
}

/// The node arena.
#[derive(Debug, Default)]
pub struct Values {
    nodes: Vec<Value>,
}

impl Values {
    /// Adds a node and returns its id (the caller bounds the count).
    pub fn push(&mut self, v: Value) -> Id {
        self.nodes.push(v);
        (self.nodes.len() - 1) as Id
    }

    /// The node `id`.
    pub fn get(&self, id: Id) -> &Value {
        &self.nodes[id as usize]
    }

    /// The node `id`, mutably.
    pub fn get_mut(&mut self, id: Id) -> &mut Value {
        &mut self.nodes[id as usize]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The int value of `id`, if it is an int.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(v) => Some(*v),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The text of `id` if it is a str, or bytes that are UTF-8.
    pub fn text(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The elements of a tuple or list.
    pub fn seq(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}
