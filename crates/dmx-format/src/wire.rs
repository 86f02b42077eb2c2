//! Little-endian primitive encoding with bounds-checked reads.

use crate::FormatError;

/// Appends primitives to a buffer.
pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.u32(v.len() as u32);
        self.bytes(v.as_bytes());
    }
}

/// Reads primitives from a slice; every read checks the remaining length.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(FormatError::Truncated("index"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Result<f64, FormatError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    pub fn str(&mut self, max: u32) -> Result<String, FormatError> {
        let len = self.u32()?;
        if len > max {
            return Err(FormatError::LimitExceeded {
                what: "string length",
                value: u64::from(len),
                limit: u64::from(max),
            });
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::Invalid("string is not UTF-8"))
    }

    /// Reads a count and checks it against a limit and against the bytes left, given the
    /// smallest encoded size of one item, so no allocation exceeds the input's size.
    pub fn count(
        &mut self,
        what: &'static str,
        limit: u64,
        min_item: usize,
    ) -> Result<usize, FormatError> {
        let n = self.u64()?;
        if n > limit {
            return Err(FormatError::LimitExceeded {
                what,
                value: n,
                limit,
            });
        }
        if n.saturating_mul(min_item as u64) > self.remaining() as u64 {
            return Err(FormatError::Truncated(what));
        }
        Ok(n as usize)
    }
}
