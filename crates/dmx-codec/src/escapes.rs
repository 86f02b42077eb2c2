//! The body shared by the grid codecs 5 (`quant`) and 9 (`fquant`): the escapes (values off
//! the grid, stored exactly) located by the gaps between their positions, then the integers of
//! the other values.
//!
//! ```text
//! u8 version | u8 value bytes | u8 exponent bits | the codec's parameters
//! varint count | varint escapes
//! escapes > 0: ints::encode_unsigned block of the gaps before each escape
//!              (position − end of the previous escape), then the escaped values' bytes
//! ints::encode_signed block of the integers of the other values, in order
//! ```

use crate::entropy::varint::{get_varint, put_varint};
use crate::float::load;
use crate::{CodecError, FloatLayout, ints};

/// A chunk split into grid integers and escapes.
pub(crate) struct Split {
    /// Zigzagged integers of the values on the grid, in order.
    pub(crate) qs: Vec<u64>,
    /// The gap before each escape: its position minus the end of the previous escape.
    pub(crate) gaps: Vec<u64>,
    /// The escapes' bytes, in order.
    pub(crate) escaped: Vec<u8>,
    /// The token histogram of `qs` at [`Split::WIDTH`] when a writer counted it as the values
    /// came (`ints::Hist::count`); else [`put`] counts it.
    pub(crate) counts: Option<Vec<u64>>,
}

impl Split {
    /// A histogram row holding every token: the plan of the integers does not depend on the
    /// row width (`ints::Hist::new` takes the narrowest).
    pub(crate) const WIDTH: usize = 3776;

    /// An empty split of up to `count` values, counting the integers' histogram as they are
    /// pushed.
    pub(crate) fn counted(count: usize) -> Self {
        debug_assert_eq!(Self::WIDTH, ints::Hist::width_for(u64::MAX));
        Self {
            qs: Vec::with_capacity(count),
            gaps: Vec::new(),
            escaped: Vec::new(),
            counts: Some(vec![0u64; Self::WIDTH]),
        }
    }
}

/// Splits the `B`-byte values of `data`: `coord` gives a value's grid integer, or `None` for
/// an escape.
#[inline(always)]
pub(crate) fn scan<const B: usize>(data: &[u8], coord: impl Fn(u64) -> Option<i64>) -> Split {
    let mut s = Split {
        qs: Vec::with_capacity(data.len() / B),
        gaps: Vec::new(),
        escaped: Vec::new(),
        counts: None,
    };
    let mut next = 0usize;
    for (i, v) in data.chunks_exact(B).enumerate() {
        match coord(load::<B>(v)) {
            Some(q) => s.qs.push(ints::zigzag(q)),
            None => {
                s.gaps.push((i - next) as u64);
                next = i + 1;
                s.escaped.extend_from_slice(v);
            }
        }
    }
    s
}

/// Contexts of the integers in a body with previous-value contexts (codec 14): the context of
/// an integer is [`prev_class`] of the zigzagged integer before it.
pub(crate) const PREV_CONTEXTS: usize = 18;

/// The context after zigzagged integer `z`: its bit length, at most 17 (the first integer of
/// a body follows a 0).
#[inline(always)]
pub(crate) fn prev_class(z: u64) -> usize {
    ((64 - z.leading_zeros()) as usize).min(PREV_CONTEXTS - 1)
}

/// [`put_choosing`] first estimates the contexts' gain from one integer in this many.
const PREV_SAMPLE: usize = 8;
/// Bodies of fewer integers are not worth the contexts' tables.
pub(crate) const PREV_MIN: usize = 4096;

/// The previous-value context of each of the zigzagged integers `qs`.
pub(crate) fn prev_contexts(qs: &[u64]) -> Vec<u8> {
    std::iter::once(0)
        .chain(qs.iter().map(|&z| prev_class(z) as u8))
        .take(qs.len())
        .collect()
}
/// The previous-value contexts are used when they make the integers' block smaller by more
/// than this share (their decoder is serial, a few times slower).
const PREV_GAIN: f64 = 0.005;

/// [`put`], or, where `contexts` allows and it is more than [`PREV_GAIN`] smaller, the body
/// with previous-value contexts; returns the entropy bound and whether it used them.
pub(crate) fn put_choosing(split: &Split, out: &mut Vec<u8>, contexts: bool) -> (f64, bool) {
    let qs = &split.qs;
    // The block of `ints::encode_signed`, from the zigzagged values directly, with the
    // histogram a writer already counted.
    let plain = match &split.counts {
        None => ints::Plan::new(qs, None, 1),
        Some(counts) => ints::Plan::from_hist(&ints::Hist::from_counts(
            counts.clone(),
            Split::WIDTH,
            1,
            qs.len(),
        )),
    };
    let need = plain.size as f64 * 8.0 * PREV_GAIN;
    let with = (contexts
        && qs.len() >= PREV_MIN
        && ints::context_gain(qs, prev_class, PREV_CONTEXTS, PREV_SAMPLE) > need)
        .then(|| {
            let ctx = prev_contexts(qs);
            let plan = ints::Plan::new(qs, Some(&ctx), PREV_CONTEXTS);
            (ctx, plan)
        })
        .filter(|(_, plan)| (plan.size as f64) < plain.size as f64 * (1.0 - PREV_GAIN));
    let entropy = put_head(split, out);
    match with {
        Some((ctx, plan)) => {
            ints::encode_with_plan(qs, Some(&ctx), &plan, out);
            (entropy + plan.entropy_bits, true)
        }
        None => {
            ints::encode_with_plan(qs, None, &plain, out);
            (entropy + plain.entropy_bits, false)
        }
    }
}

/// Appends the count and the escapes of `split` to `out`; returns their entropy bound in bits.
fn put_head(split: &Split, out: &mut Vec<u8>) -> f64 {
    put_varint(out, (split.qs.len() + split.gaps.len()) as u64);
    put_varint(out, split.gaps.len() as u64);
    let mut entropy = 0.0;
    if !split.gaps.is_empty() {
        let block = ints::encode_unsigned(&split.gaps);
        let signed: Vec<i64> = split.gaps.iter().map(|&g| g as i64).collect();
        entropy += ints::entropy_bits_signed(&signed).min(block.len() as f64 * 8.0);
        entropy += split.escaped.len() as f64 * 8.0;
        out.extend_from_slice(&block);
        out.extend_from_slice(&split.escaped);
    }
    entropy
}

/// Appends the count and the body of `split` to `out`; returns its order-0 entropy bound in
/// bits (integer coder bound plus the raw escape bits and their positions).
pub(crate) fn put(split: &Split, out: &mut Vec<u8>) -> f64 {
    put_choosing(split, out, false).0
}

/// The error messages of one codec's reader.
pub(crate) struct Messages {
    /// The payload is shorter than the fixed header.
    pub(crate) header: &'static str,
    /// The version byte is not the codec's.
    pub(crate) version: &'static str,
    /// The dtype is not one the codec supports.
    pub(crate) dtype: &'static str,
    /// The count disagrees with the chunk size.
    pub(crate) count: &'static str,
    /// More escapes than values.
    pub(crate) too_many: &'static str,
    /// An escape position overflows or is not below the count.
    pub(crate) position: &'static str,
    /// The escaped bytes are cut short.
    pub(crate) truncated: &'static str,
    /// Bytes follow the integers block.
    pub(crate) trailing: &'static str,
}

/// A decoded body: escape positions, their bytes, and the integers of the other values.
pub(crate) struct Body<'a> {
    /// Escape positions, increasing, each below the count.
    pub(crate) positions: Vec<u64>,
    /// `B` bytes per escape.
    pub(crate) escaped: &'a [u8],
    /// The grid integers of the other values, in order.
    pub(crate) qs: Vec<i64>,
}

/// The fixed header of `len` bytes: `version`, then a dtype (`B`, `eb`) that `supports`;
/// returns the header and the dtype.
pub(crate) fn head<'a>(
    payload: &'a [u8],
    len: usize,
    version: u8,
    supports: fn(FloatLayout) -> bool,
    msg: &Messages,
) -> Result<(&'a [u8], FloatLayout), CodecError> {
    let head = payload.get(..len).ok_or(CodecError::Corrupt(msg.header))?;
    if head[0] != version {
        return Err(CodecError::Corrupt(msg.version));
    }
    let layout = match (head[1], head[2]) {
        (2, 8) => FloatLayout::BF16,
        (2, 5) => FloatLayout::F16,
        (4, 8) => FloatLayout::F32,
        (8, 11) => FloatLayout::F64,
        _ => return Err(CodecError::Corrupt(msg.dtype)),
    };
    if !supports(layout) {
        return Err(CodecError::Corrupt(msg.dtype));
    }
    Ok((head, layout))
}

/// Reads the count and the body at `payload[pos..]` for values of `b` bytes filling
/// `out_len` bytes; the payload must end after it. Allocates `O(out_len / b)`.
pub(crate) fn get<'a>(
    payload: &'a [u8],
    pos: usize,
    b: usize,
    out_len: usize,
    msg: &Messages,
) -> Result<Body<'a>, CodecError> {
    get_with(payload, pos, b, out_len, msg, false)
}

/// [`get`] of a body whose integers have previous-value contexts when `contexts` (codec 14).
pub(crate) fn get_with<'a>(
    payload: &'a [u8],
    mut pos: usize,
    b: usize,
    out_len: usize,
    msg: &Messages,
    contexts: bool,
) -> Result<Body<'a>, CodecError> {
    let count = get_varint(payload, &mut pos)?;
    if usize::try_from(count).ok().and_then(|c| c.checked_mul(b)) != Some(out_len) {
        return Err(CodecError::Corrupt(msg.count));
    }
    let count = count as usize;
    let nesc = get_varint(payload, &mut pos)?;
    if nesc > count as u64 {
        return Err(CodecError::Corrupt(msg.too_many));
    }
    let nesc = nesc as usize;
    let mut positions = vec![0u64; nesc];
    let mut escaped: &[u8] = &[];
    if nesc > 0 {
        pos += ints::decode_unsigned(&payload[pos..], &mut positions)?;
        // Gaps to positions.
        let mut next = 0u64;
        for p in &mut positions {
            let at = next
                .checked_add(*p)
                .filter(|&at| at < count as u64)
                .ok_or(CodecError::Corrupt(msg.position))?;
            *p = at;
            next = at + 1;
        }
        escaped = payload
            .get(pos..pos + nesc * b)
            .ok_or(CodecError::Corrupt(msg.truncated))?;
        pos += nesc * b;
    }
    let mut qs = vec![0i64; count - nesc];
    pos += if contexts {
        ints::decode_prev_ctx(&payload[pos..], PREV_CONTEXTS, prev_class, &mut qs)?
    } else {
        ints::decode_signed(&payload[pos..], &mut qs)?
    };
    if pos != payload.len() {
        return Err(CodecError::Corrupt(msg.trailing));
    }
    Ok(Body {
        positions,
        escaped,
        qs,
    })
}

/// Writes the values of `body` as `B`-byte little-endian values: the escapes at their
/// positions, `value(q)` of the integers in order elsewhere.
#[inline(always)]
pub(crate) fn fill<const B: usize>(body: &Body<'_>, out: &mut [u8], value: impl Fn(i64) -> u64) {
    let mut qi = body.qs.iter();
    let mut run = |out: &mut [u8]| {
        for (v, &q) in out.chunks_exact_mut(B).zip(&mut qi) {
            v.copy_from_slice(&value(q).to_le_bytes()[..B]);
        }
    };
    let mut at = 0usize;
    for (&p, raw) in body.positions.iter().zip(body.escaped.chunks_exact(B)) {
        let p = p as usize;
        run(&mut out[at * B..p * B]);
        out[p * B..(p + 1) * B].copy_from_slice(raw);
        at = p + 1;
    }
    run(&mut out[at * B..]);
}
