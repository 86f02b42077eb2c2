//! Byte slices over Python buffers (numpy arrays, `bytearray`, `memoryview`, torch tensors
//! seen through `.numpy()`), so tensors are read and written in place, without a copy.
//!
//! This is the crate's only `unsafe` code: a Python buffer is memory that Rust does not own.
//! The slices live no longer than the [`PyBuffer`] they come from, which holds the exporter's
//! buffer (and so its memory) until it is released.
#![allow(unsafe_code)]

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use crate::errors::usage;

/// A C-contiguous byte buffer obtained from a Python object, held for the duration of a call.
pub struct Bytes {
    buf: PyBuffer<u8>,
}

impl Bytes {
    /// The buffer of `obj` (`what` names it in errors); it must be C-contiguous bytes, and
    /// writable when `writable`.
    pub fn get(obj: &Bound<'_, PyAny>, what: &str, writable: bool) -> PyResult<Self> {
        let buf = PyBuffer::<u8>::get(obj)?;
        let py = obj.py();
        if !buf.is_c_contiguous() {
            return Err(crate::errors::to_py(
                py,
                &usage(format!("{what}: the buffer is not contiguous")),
            ));
        }
        if writable && buf.readonly() {
            return Err(crate::errors::to_py(
                py,
                &usage(format!("{what}: the buffer is read-only")),
            ));
        }
        Ok(Bytes { buf })
    }

    /// The bytes, read-only.
    pub fn as_slice(&self) -> &[u8] {
        let len = self.buf.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: `self.buf` holds a C-contiguous buffer of `len` bytes (checked in `get`,
        // and `len_bytes` is its exact size) at `buf_ptr`, which is non-null for a non-empty
        // buffer; the exporter keeps that memory alive and in place until the buffer is
        // released, which happens when `self` is dropped, after the returned borrow ends.
        // Python code could still write to the memory from another thread while Rust reads
        // it (as with any buffer consumer, e.g. `bytes(memoryview)`): the bytes read may
        // then be a mix of old and new values, but they are plain `u8` with no invalid
        // representation, so this cannot cause undefined behaviour in the reading code.
        unsafe { std::slice::from_raw_parts(self.buf.buf_ptr() as *const u8, len) }
    }

    /// The bytes, writable (the buffer was obtained with `writable`).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(
            !self.buf.readonly(),
            "Bytes::as_mut_slice on a read-only buffer"
        );
        let len = self.buf.len_bytes();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, plus: the buffer is writable (checked in `get` and by the
        // assert above), and `&mut self` makes this the only slice over it made by this
        // crate while the borrow lasts. The callers in this crate allocate these buffers
        // themselves (fresh `torch.empty` / `numpy.empty`) and hand them out only after the
        // call returns, so no Python code touches them meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.buf.buf_ptr() as *mut u8, len) }
    }
}
