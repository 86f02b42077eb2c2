//! The body shared by the grid codecs 5 (`quant`) and 9 (`fquant`): the escapes (values off
//! the grid, stored exactly) located by the gaps between their positions, then the integers of
//! the other values.
//!
//! ```text
//! u8 version | u8 value bytes | u8 exponent bits | the codec's parameters
//! varint count | varint escapes
//! escapes > 0: ints::encode_unsigned block of the gaps before each escape
//!              (position − end of the previous escape), then the escaped values' bytes
//! codec 15 only: the classes of the rows or columns ([`Form::Rows`])
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

/// How the integers of a body are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// One Huffman table (codecs 5 and 9).
    Plain,
    /// A table per class of the previous integer (codec 14).
    Prev,
    /// A table per class of the value's row or column (codec 15).
    Rows,
}

/// Most classes of rows or columns in a body of codec 15 (a reader's limit too).
const MAX_CLASSES: usize = 16;
/// Row and column classes are tried on bodies of at least this many integers.
const ROWS_MIN: usize = 4096;
/// The row or column classes are used when they make the integers (with the classes) smaller
/// than the plain block by more than this share.
const ROWS_GAIN: f64 = 0.002;
/// The classes' gain is estimated from one integer in this many.
const ROWS_SAMPLE: usize = 8;

/// Where the writer may use contexts for the integers of a body.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Contexts {
    /// Previous-value contexts (codec 14).
    pub(crate) prev: bool,
    /// Values per row of the chunk when it holds whole rows (0: no rows): row and column
    /// classes (codec 15).
    pub(crate) row_len: usize,
}

/// Codec 15's axis byte: classes per row.
pub(crate) const AXIS_ROWS: u8 = 0;
/// Codec 15's axis byte: classes per column.
pub(crate) const AXIS_COLUMNS: u8 = 1;

/// The context of each integer of a body of `count` values in rows of `w` whose escapes are
/// at `escapes` (increasing positions): the class of its row (`axis` [`AXIS_ROWS`]) or column.
fn unit_contexts(classes: &[u8], axis: u8, w: usize, count: usize, escapes: &[u64]) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(count);
    if axis == AXIS_ROWS {
        for &c in classes {
            ctx.extend(std::iter::repeat_n(c, w));
        }
    } else {
        for _ in 0..count / w {
            ctx.extend_from_slice(classes);
        }
    }
    if !escapes.is_empty() {
        let mut esc = escapes.iter().peekable();
        let mut p = 0u64;
        ctx.retain(|_| {
            let escaped = esc.peek() == Some(&&p);
            if escaped {
                esc.next();
            }
            p += 1;
            !escaped
        });
    }
    ctx
}

/// The class of a row or column whose integers' zigzagged sum is `sum` over `n` of them: the
/// mean in half octaves (`floor(2 · log2(mean + 1))`).
fn class_of(sum: u64, n: u64) -> i32 {
    let mean = if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    // `mean + 1 = m · 2^e` with `m` in [1, 2): the class is `2e`, plus one where `m >= √2`,
    // read off the bits instead of a logarithm per unit (a row or column of a convolution's
    // chunk holds a few values, and the logarithm cost more than their coding). Within 1e-9
    // of √2 or of 2, where `log2`'s last-bit rounding could move the floor, the logarithm
    // decides, as it always did.
    let x = mean + 1.0;
    let bits = x.to_bits();
    let e = (bits >> 52) as i32 - 1023;
    let m = f64::from_bits(bits & ((1 << 52) - 1) | 1023 << 52);
    if (m - std::f64::consts::SQRT_2).abs() > 1e-9 && m < 2.0 - 1e-9 {
        2 * e + i32::from(m > std::f64::consts::SQRT_2)
    } else {
        class_by_log(x)
    }
}

/// `floor(2 · log2(x))`: [`class_of`]'s definition.
fn class_by_log(x: f64) -> i32 {
    (x.log2() * 2.0).floor() as i32
}

/// Classes `0 ..` of units from their half-octave classes `raw`: the highest [`MAX_CLASSES`]
/// kept, lower ones joining the lowest kept; with the number of classes. `None` when all are
/// the same.
fn rebase(raw: &[i32]) -> Option<(Vec<u8>, usize)> {
    let hi = *raw.iter().max()?;
    let lo = raw
        .iter()
        .copied()
        .min()?
        .max(hi - (MAX_CLASSES as i32 - 1));
    (hi > lo).then(|| {
        let classes = raw.iter().map(|&c| (c.max(lo) - lo) as u8).collect();
        (classes, (hi - lo) as usize + 1)
    })
}

/// The classes of a unit (rows or columns) and their count, `(&[], 1)` where there are
/// none.
fn classes_of(u: &Option<(Vec<u8>, usize)>) -> (&[u8], usize) {
    u.as_ref().map_or((&[][..], 1), |(c, n)| (c.as_slice(), *n))
}

/// The classes of the rows and of the columns of the integers of `split` (`count` values in
/// rows of `w`; escapes at `escapes`), each with its class count (`None` where all units
/// share one class).
fn unit_classes(
    split: &Split,
    count: usize,
    w: usize,
    escapes: &[u64],
) -> [Option<(Vec<u8>, usize)>; 2] {
    let rows = count / w;
    let mut row_sum = vec![0u64; rows];
    let mut row_n = vec![w as u64; rows];
    let mut col_sum = vec![0u64; w];
    let mut col_n = vec![rows as u64; w];
    // A zigzagged grid integer is below 2^33, so the sums of a chunk (below 2^30 values)
    // cannot wrap; in a larger body they would only change the (informative) classes.
    if escapes.is_empty() {
        for (r, row) in split.qs.chunks_exact(w).enumerate() {
            for (c, &z) in col_sum.iter_mut().zip(row) {
                *c = c.wrapping_add(z);
            }
            row_sum[r] = row.iter().fold(0u64, |a, &z| a.wrapping_add(z));
        }
    } else {
        for &e in escapes {
            row_n[e as usize / w] -= 1;
            col_n[e as usize % w] -= 1;
        }
        let mut esc = escapes.iter().peekable();
        let mut zs = split.qs.iter();
        for p in 0..count {
            if esc.peek() == Some(&&(p as u64)) {
                esc.next();
                continue;
            }
            let z = *zs.next().expect("one integer per position not escaped");
            row_sum[p / w] = row_sum[p / w].wrapping_add(z);
            col_sum[p % w] = col_sum[p % w].wrapping_add(z);
        }
    }
    let raw = |sum: &[u64], n: &[u64]| -> Vec<i32> {
        sum.iter().zip(n).map(|(&s, &n)| class_of(s, n)).collect()
    };
    [
        rebase(&raw(&row_sum, &row_n)),
        rebase(&raw(&col_sum, &col_n)),
    ]
}

/// The row and column of positions visited in increasing order, in rows of `w`, kept
/// without a division per position.
struct RowCol {
    w: usize,
    row: usize,
    row_start: usize,
}

impl RowCol {
    fn new(w: usize) -> Self {
        Self {
            w,
            row: 0,
            row_start: 0,
        }
    }

    /// The row and column of position `i` (at least the previous one's).
    #[inline(always)]
    fn seek(&mut self, i: usize) -> (usize, usize) {
        debug_assert!(i >= self.row_start);
        while i - self.row_start >= self.w {
            self.row += 1;
            self.row_start += self.w;
        }
        (self.row, i - self.row_start)
    }
}

/// Row or column classes for the integers of a body, with the gain a sample promises.
struct Classes {
    /// [`AXIS_ROWS`] or [`AXIS_COLUMNS`].
    axis: u8,
    /// Values per row.
    w: usize,
    /// The class of each row or column.
    classes: Vec<u8>,
    /// Number of classes.
    nctx: usize,
    /// The context (class) of each integer.
    ctx: Vec<u8>,
    /// Bits the classes promise to save ([`ints::class_gains`]).
    gain: f64,
}

impl Classes {
    /// The classes of the rows or of the columns of `split` (`count` values in rows of
    /// `w`), whichever a sampled estimate ([`ints::class_gains`]) says saves more; `None`
    /// where every row and every column has the same class.
    fn estimate(split: &Split, count: usize, w: usize) -> Option<Self> {
        let mut escapes = Vec::with_capacity(split.gaps.len());
        let mut next = 0u64;
        for &g in &split.gaps {
            escapes.push(next + g);
            next += g + 1;
        }
        let [rows, cols] = unit_classes(split, count, w, &escapes);
        // The sample takes integer `i` at position `i` (escapes are rare), in increasing
        // order: its row and column follow without a division, and one sample serves both.
        let ((rc, rn), (cc, cn)) = (classes_of(&rows), classes_of(&cols));
        let mut at = RowCol::new(w);
        let [row_gain, col_gain] = ints::class_gains(
            &split.qs,
            |i| {
                let (r, c) = at.seek(i);
                [
                    rc.get(r).copied().unwrap_or(0),
                    cc.get(c).copied().unwrap_or(0),
                ]
            },
            [rn, cn],
            ROWS_SAMPLE,
        );
        let rows = rows.map(|(classes, nctx)| (AXIS_ROWS, classes, nctx, row_gain));
        let cols = cols.map(|(classes, nctx)| (AXIS_COLUMNS, classes, nctx, col_gain));
        let (axis, classes, nctx, gain) = [rows, cols]
            .into_iter()
            .flatten()
            .max_by(|a, b| a.3.total_cmp(&b.3))?;
        let ctx = unit_contexts(&classes, axis, w, count, &escapes);
        Some(Self {
            axis,
            w,
            classes,
            nctx,
            ctx,
            gain,
        })
    }

    /// The bytes before the integers' block: axis, width, class count and the classes' block.
    fn head(&self) -> Vec<u8> {
        let mut head = vec![self.axis];
        put_varint(&mut head, self.w as u64);
        head.push(self.nctx as u8);
        let wide: Vec<u64> = self.classes.iter().map(|&c| u64::from(c)).collect();
        head.extend_from_slice(&ints::encode_unsigned(&wide));
        head
    }
}

/// The largest size `s` with `s < x` (`x > 0`): what a plan must reach to be below `x`.
fn below(x: f64) -> usize {
    (x.ceil() as usize).saturating_sub(1)
}

/// [`put`], or where `contexts` allows and it pays, the body with previous-value contexts
/// (more than [`PREV_GAIN`] smaller) or with row or column classes (more than [`ROWS_GAIN`]
/// smaller); returns the entropy bound and the form used. Each form is first estimated from
/// a sample; only the more promising one is planned (the other too if it fails).
pub(crate) fn put_choosing(split: &Split, out: &mut Vec<u8>, contexts: Contexts) -> (f64, Form) {
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
    let bits = plain.size as f64 * 8.0;
    let prev_gain = (contexts.prev && qs.len() >= PREV_MIN)
        .then(|| ints::context_gain(qs, prev_class, PREV_CONTEXTS, PREV_SAMPLE))
        .filter(|&g| g > bits * PREV_GAIN);
    let count = qs.len() + split.gaps.len();
    let w = contexts.row_len;
    let classes = (w > 0 && qs.len() >= ROWS_MIN && count.is_multiple_of(w) && count / w >= 2)
        .then(|| Classes::estimate(split, count, w))
        .flatten()
        .filter(|c| c.gain > bits * ROWS_GAIN);
    let rows_first = match (&classes, prev_gain) {
        (Some(c), Some(g)) => c.gain > g,
        (c, _) => c.is_some(),
    };
    let try_prev = || {
        prev_gain.and_then(|_| {
            let ctx = prev_contexts(qs);
            let limit = below(plain.size as f64 * (1.0 - PREV_GAIN));
            let hist = ints::Hist::new(qs, Some(&ctx), PREV_CONTEXTS);
            ints::Plan::from_hist_within(&hist, limit).map(|plan| (ctx, plan))
        })
    };
    let try_rows = || {
        classes.as_ref().and_then(|c| {
            let head = c.head();
            let limit = below(plain.size as f64 * (1.0 - ROWS_GAIN)).checked_sub(head.len())?;
            let hist = ints::Hist::new(qs, Some(&c.ctx), c.nctx);
            ints::Plan::from_hist_within(&hist, limit).map(|plan| (c, head, plan))
        })
    };
    let entropy = put_head(split, out);
    let mut prev = None;
    if !rows_first {
        prev = try_prev();
    }
    if prev.is_none() {
        if let Some((c, head, plan)) = try_rows() {
            out.extend_from_slice(&head);
            ints::encode_with_plan(qs, Some(&c.ctx), &plan, out);
            let side = head.len() as f64 * 8.0;
            return (entropy + side + plan.entropy_bits, Form::Rows);
        }
        if rows_first {
            prev = try_prev();
        }
    }
    match prev {
        Some((ctx, plan)) => {
            ints::encode_with_plan(qs, Some(&ctx), &plan, out);
            (entropy + plan.entropy_bits, Form::Prev)
        }
        None => {
            ints::encode_with_plan(qs, None, &plain, out);
            (entropy + plain.entropy_bits, Form::Plain)
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
    put_choosing(split, out, Contexts::default()).0
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
    get_with(payload, pos, b, out_len, msg, Form::Plain)
}

/// [`get`] of a body whose integers are coded in `form` (codecs 14 and 15).
pub(crate) fn get_with<'a>(
    payload: &'a [u8],
    mut pos: usize,
    b: usize,
    out_len: usize,
    msg: &Messages,
    form: Form,
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
    pos += match form {
        Form::Plain => ints::decode_signed(&payload[pos..], &mut qs)?,
        Form::Prev => ints::decode_prev_ctx(&payload[pos..], PREV_CONTEXTS, prev_class, &mut qs)?,
        Form::Rows => {
            let (nctx, ctx) = get_classes(payload, &mut pos, count, &positions)?;
            ints::decode_ctx(&payload[pos..], Some(&ctx), nctx, &mut qs)?
        }
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

/// Reads codec 15's classes at `payload[*pos..]` for a body of `count` values whose escapes
/// are at `escapes` (increasing positions); returns the class count and the context of each
/// integer (its row's or column's class).
fn get_classes(
    payload: &[u8],
    pos: &mut usize,
    count: usize,
    escapes: &[u64],
) -> Result<(usize, Vec<u8>), CodecError> {
    const TRUNCATED: CodecError = CodecError::Corrupt("quant classes truncated");
    let axis = *payload.get(*pos).ok_or(TRUNCATED)?;
    *pos += 1;
    if axis > AXIS_COLUMNS {
        return Err(CodecError::Corrupt("quant classes have an unknown axis"));
    }
    let w = get_varint(payload, pos)?;
    if w == 0 || w > count as u64 || !count.is_multiple_of(w as usize) {
        return Err(CodecError::Corrupt(
            "quant row length does not divide the value count",
        ));
    }
    let w = w as usize;
    let nctx = usize::from(*payload.get(*pos).ok_or(TRUNCATED)?);
    *pos += 1;
    if !(1..=MAX_CLASSES).contains(&nctx) {
        return Err(CodecError::Corrupt("quant class count out of range"));
    }
    let units = if axis == AXIS_ROWS { count / w } else { w };
    let mut classes = vec![0u64; units];
    *pos += ints::decode_unsigned(&payload[*pos..], &mut classes)?;
    if classes.iter().any(|&c| c >= nctx as u64) {
        return Err(CodecError::Corrupt("quant class out of range"));
    }
    let classes: Vec<u8> = classes.iter().map(|&c| c as u8).collect();
    Ok((nctx, unit_contexts(&classes, axis, w, count, escapes)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_read_off_the_bits_are_the_logarithm_s() {
        // Means from 0 to 2^33 (zigzagged grid integers), at and around every class boundary
        // (powers of √2), and random sums over 1 to 1000 integers.
        let check = |sum: u64, n: u64| {
            let mean = if n == 0 { 0.0 } else { sum as f64 / n as f64 };
            assert_eq!(class_of(sum, n), class_by_log(mean + 1.0), "{sum} / {n}");
        };
        check(0, 0);
        for n in [1u64, 2, 3, 4, 7, 64, 1000] {
            for k in 0..67u32 {
                let b = (std::f64::consts::SQRT_2.powi(k as i32) - 1.0) * n as f64;
                for d in -3i64..=3 {
                    check((b as i64 + d).max(0) as u64, n);
                }
            }
        }
        let mut rng = crate::pseudo_u64(usize::MAX, 17);
        let mut next = || rng.next().expect("unbounded");
        for _ in 0..200_000 {
            let n = 1 + next() % 1000;
            let sum = next() % (n << (next() % 34));
            check(sum, n);
        }
    }

    #[test]
    fn row_col_is_division_and_remainder() {
        for w in [1usize, 3, 8, 50, 384] {
            let mut at = RowCol::new(w);
            let mut i = 0usize;
            for step in (0..5000).map(|k| (k * 7 + 3) % 16) {
                assert_eq!(at.seek(i), (i / w, i % w), "w {w} i {i}");
                // A step of 0 to 15, as the sample's positions move.
                i += step;
            }
        }
    }
}
