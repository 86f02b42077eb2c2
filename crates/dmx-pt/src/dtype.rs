//! Element types of torch storages and their names.

/// The element type of a storage or tensor. Names follow safetensors (`F32`, `BF16`, ...);
/// types safetensors lacks get names in the same style ([`Dtype::is_safetensors`] tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer (also untyped storages and quantized `quint*`).
    U8,
    /// 16-bit unsigned integer.
    U16,
    /// 32-bit unsigned integer.
    U32,
    /// 64-bit unsigned integer.
    U64,
    /// Boolean, one byte each.
    Bool,
    /// float8 e4m3fn.
    F8E4M3,
    /// float8 e5m2.
    F8E5M2,
    /// float8 e8m0fnu.
    F8E8M0,
    /// complex64 (two F32).
    C64,
    /// complex128 (two F64; not a safetensors dtype).
    C128,
    /// complex32 (two F16; not a safetensors dtype).
    C32,
    /// Quantized signed 8-bit (not a safetensors dtype).
    QI8,
    /// Quantized signed 32-bit (not a safetensors dtype).
    QI32,
}

impl Dtype {
    /// The name: the safetensors dtype name where safetensors has one.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::U16 => "U16",
            Dtype::U32 => "U32",
            Dtype::U64 => "U64",
            Dtype::Bool => "BOOL",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::C64 => "C64",
            Dtype::C128 => "C128",
            Dtype::C32 => "C32",
            Dtype::QI8 => "QI8",
            Dtype::QI32 => "QI32",
        }
    }

    /// Whether [`Dtype::name`] is a safetensors dtype name.
    pub fn is_safetensors(self) -> bool {
        !matches!(self, Dtype::C128 | Dtype::C32 | Dtype::QI8 | Dtype::QI32)
    }

    /// Whether the elements are floating point (complex included).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::F64
                | Dtype::F32
                | Dtype::F16
                | Dtype::BF16
                | Dtype::F8E4M3
                | Dtype::F8E5M2
                | Dtype::F8E8M0
                | Dtype::C64
                | Dtype::C128
                | Dtype::C32
        )
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::U8 | Dtype::I8 | Dtype::Bool | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::F8E8M0 | Dtype::QI8 => 1,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::F32 | Dtype::I32 | Dtype::U32 | Dtype::C32 | Dtype::QI32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 | Dtype::C64 => 8,
            Dtype::C128 => 16,
        }
    }

    /// The dtype of a `torch.<name>` global such as `torch.float32`, if it is one this crate
    /// knows. Sub-byte and `bits*` dtypes are not modelled (their tensors become opaque).
    pub fn from_torch_name(name: &str) -> Option<Dtype> {
        Some(match name {
            "float64" | "double" => Dtype::F64,
            "float32" | "float" => Dtype::F32,
            "float16" | "half" => Dtype::F16,
            "bfloat16" => Dtype::BF16,
            "int64" | "long" => Dtype::I64,
            "int32" | "int" => Dtype::I32,
            "int16" | "short" => Dtype::I16,
            "int8" => Dtype::I8,
            "uint8" | "quint8" | "quint4x2" | "quint2x4" => Dtype::U8,
            "uint16" => Dtype::U16,
            "uint32" => Dtype::U32,
            "uint64" => Dtype::U64,
            "bool" => Dtype::Bool,
            "float8_e4m3fn" => Dtype::F8E4M3,
            "float8_e5m2" => Dtype::F8E5M2,
            "float8_e8m0fnu" => Dtype::F8E8M0,
            "complex64" | "cfloat" => Dtype::C64,
            "complex128" | "cdouble" => Dtype::C128,
            "complex32" | "chalf" => Dtype::C32,
            "qint8" => Dtype::QI8,
            "qint32" => Dtype::QI32,
            _ => return None,
        })
    }

    /// The dtype of a legacy storage class such as `FloatStorage`; `UntypedStorage` is bytes.
    pub fn from_storage_name(name: &str) -> Option<Dtype> {
        Some(match name {
            "DoubleStorage" => Dtype::F64,
            "FloatStorage" => Dtype::F32,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" | "UntypedStorage" | "QUInt8Storage" => Dtype::U8,
            "QUInt4x2Storage" | "QUInt2x4Storage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            "ComplexFloatStorage" => Dtype::C64,
            "ComplexDoubleStorage" => Dtype::C128,
            "QInt8Storage" => Dtype::QI8,
            "QInt32Storage" => Dtype::QI32,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
