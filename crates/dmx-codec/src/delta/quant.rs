//! The quantized delta variants: residuals on the shared integer grid of [`crate::grid`]
//! (variant 8) or on the floating grid of [`crate::fgrid`] (variant 9).

use super::{FQUANT, QUANT, decode};
use crate::entropy::varint::{get_varint, put_varint};
use crate::fgrid::FloatGrid;
use crate::float::load;
use crate::grid;
use crate::ints::{self, Hist, Plan, unzigzag, zigzag};
use crate::{CodecError, FloatLayout};

/// Contexts of quantized residuals: bit length of `|q_b|` (0..=32).
const QUANT_CLASSES: usize = 33;

/// Quantized delta: base and target on the grid of `step` and `bits` (2..=32; 16 or 32 in
/// practice). `q_b = grid::quantize(base)`, or 0 where the base value is not representable;
/// a target value with `grid::quantize(target) = Some(q_t)` stores `q_t − q_b`, any other is
/// stored exactly. Returns the payload and its entropy bound in bits.
///
/// # Panics
/// If `base` and `target` differ in length, their length is not a multiple of the value
/// width, or `bits` is outside 2..=32.
pub fn encode_quantized(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    step: f64,
    bits: u32,
) -> (Vec<u8>, f64) {
    let (payload, bits, _) = encode_quantized_counted(layout, base, target, step, bits);
    (payload, bits)
}

/// [`encode_quantized`], also returning how many target values are *unchanged*: equal to the
/// base value bit for bit, or on the grid at the base value's grid integer (the base value on
/// the grid too), counted in the same pass.
///
/// # Panics
/// As [`encode_quantized`].
pub fn encode_quantized_counted(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    step: f64,
    bits: u32,
) -> (Vec<u8>, f64, u64) {
    assert_eq!(
        base.len(),
        target.len(),
        "delta of chunks of different sizes"
    );
    assert!((2..=32).contains(&bits), "grid width must be 2..=32 bits");
    let b = layout.bytes();
    assert!(target.len().is_multiple_of(b), "partial value in chunk");
    let g = StepGrid::new(layout, step, bits);
    let split = match b {
        1 => residuals::<1, _>(g, base, target),
        2 => residuals::<2, _>(g, base, target),
        4 => residuals::<4, _>(g, base, target),
        _ => residuals::<8, _>(g, base, target),
    };
    let head = [QUANT, b as u8, layout.exp_bits as u8, bits as u8];
    let unchanged = split.unchanged;
    let (payload, entropy_bits) = finish(head, &step.to_bits().to_le_bytes(), split);
    (payload, entropy_bits, unchanged)
}

/// Quantized delta on the floating grid of [`crate::fgrid`] with `m` kept fraction bits
/// (variant 9): `q_b = fgrid::coordinate(base)`, or 0 where the base value is off the grid; a
/// target value with coordinate `q_t` stores `q_t − q_b`, any other is stored exactly. Decodes
/// to the same values as [`crate::fquant`] of the target alone. Returns the payload and its
/// entropy bound in bits.
///
/// # Panics
/// If `layout` is not supported ([`crate::fgrid::supports`]), `m` exceeds its fraction bits,
/// `base` and `target` differ in length, or their length is not whole values.
pub fn encode_float_quantized(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    m: u32,
) -> (Vec<u8>, f64) {
    let (payload, bits, _) = encode_float_quantized_counted(layout, base, target, m);
    (payload, bits)
}

/// [`encode_float_quantized`], also returning the count of unchanged target values (as
/// [`encode_quantized_counted`], on the floating grid).
///
/// # Panics
/// As [`encode_float_quantized`].
pub fn encode_float_quantized_counted(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    m: u32,
) -> (Vec<u8>, f64, u64) {
    assert_eq!(
        base.len(),
        target.len(),
        "delta of chunks of different sizes"
    );
    let g = FloatGrid::new(layout, m).expect("float-grid delta: unsupported dtype or width");
    let b = layout.bytes();
    assert!(target.len().is_multiple_of(b), "partial value in chunk");
    let split = match b {
        2 => residuals::<2, _>(g, base, target),
        _ => residuals::<4, _>(g, base, target),
    };
    let unchanged = split.unchanged;
    let (payload, entropy_bits) = finish(
        [FQUANT, b as u8, layout.exp_bits as u8, m as u8],
        &[],
        split,
    );
    (payload, entropy_bits, unchanged)
}

/// The payload: `head`, the context count, `extra`, then the escapes, residuals and escaped
/// bytes of `q`, with one table or one per [`quant_class`], whichever is smaller.
fn finish(head: [u8; 4], extra: &[u8], q: QuantSplit) -> (Vec<u8>, f64) {
    let QuantSplit {
        residuals,
        res_ctx,
        escapes,
        gaps,
        ..
    } = q;
    let hist = Hist::new(&residuals, Some(&res_ctx), QUANT_CLASSES);
    // One table wins ties; it is planned only when it can.
    let classed = Plan::from_hist(&hist);
    let (plan, ctx, nctx) = match Plan::from_hist_within(&hist.merged(), classed.size) {
        Some(plain) => (plain, None, 1),
        None => (classed, Some(res_ctx.as_slice()), QUANT_CLASSES),
    };
    let mut out = Vec::with_capacity(plan.size + escapes.len() + 32);
    out.extend_from_slice(&head);
    out.push(nctx as u8);
    out.extend_from_slice(extra);
    put_varint(&mut out, gaps.len() as u64);
    let mut entropy_bits = plan.entropy_bits + 8.0 * escapes.len() as f64;
    if !gaps.is_empty() {
        entropy_bits += ints::encode_ctx(&gaps, None, 1, &mut out);
    }
    ints::encode_with_plan(&residuals, ctx, &plan, &mut out);
    out.extend_from_slice(&escapes);
    (out, entropy_bits)
}

/// A quantized delta before coding.
struct QuantSplit {
    /// Zigzagged `q_t - q_b` of the values on the grid.
    residuals: Vec<u64>,
    /// Their contexts ([`quant_class`] of `q_b`).
    res_ctx: Vec<u8>,
    /// Raw bytes of the escaped target values.
    escapes: Vec<u8>,
    /// Escape positions: the first index, then the differences minus one.
    gaps: Vec<u64>,
    /// Target values equal to the base's bits, or on the grid at the base's coordinate.
    unchanged: u64,
}

fn residuals<const B: usize, G: DeltaGrid>(g: G, base: &[u8], target: &[u8]) -> QuantSplit {
    let count = target.len() / B;
    let mut q = QuantSplit {
        residuals: Vec::with_capacity(count),
        res_ctx: Vec::with_capacity(count),
        escapes: Vec::new(),
        gaps: Vec::new(),
        unchanged: 0,
    };
    let mut next = 0usize;
    for (i, (bv, tv)) in base.chunks_exact(B).zip(target.chunks_exact(B)).enumerate() {
        let (bu, tu) = (load::<B>(bv), load::<B>(tv));
        let cb = g.coordinate(bu);
        let ct = g.coordinate(tu);
        q.unchanged += u64::from(bu == tu || (cb.is_some() && ct == cb));
        let qb = cb.unwrap_or(0);
        match ct {
            Some(qt) => {
                q.residuals.push(zigzag(qt - qb));
                q.res_ctx.push(quant_class(qb));
            }
            None => {
                q.gaps.push((i - next) as u64);
                next = i + 1;
                q.escapes.extend_from_slice(tv);
            }
        }
    }
    q
}

/// Decodes any delta payload (the same as [`decode`]); a quantized value decodes to
/// `grid::dequantize(layout, q_b + r, step)` in exact integer arithmetic.
pub fn decode_quantized(payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode(payload, base, out)
}

fn quant_class(qb: i64) -> u8 {
    (64 - qb.unsigned_abs().leading_zeros()).min(32) as u8
}

/// A grid of quantized deltas: the coordinates of values and the values of coordinates.
trait DeltaGrid: Copy {
    /// The coordinate of value bits `raw`, `None` when the value is off the grid.
    fn coordinate(&self, raw: u64) -> Option<i64>;
    /// The bits of coordinate `q`, `None` when it is off the grid.
    fn value(&self, q: i64) -> Option<u64>;
}

/// The aligned grid of [`crate::grid`] (variant 8).
#[derive(Clone, Copy)]
struct StepGrid {
    layout: FloatLayout,
    step: f64,
    bits: u32,
    qmax: u64,
}

impl StepGrid {
    fn new(layout: FloatLayout, step: f64, bits: u32) -> Self {
        Self {
            layout,
            step,
            bits,
            qmax: grid::qmax(bits) as u64,
        }
    }
}

impl DeltaGrid for StepGrid {
    #[inline(always)]
    fn coordinate(&self, raw: u64) -> Option<i64> {
        grid::quantize(grid::to_f64(self.layout, raw), self.step, self.bits)
    }

    #[inline(always)]
    fn value(&self, q: i64) -> Option<u64> {
        (q.unsigned_abs() <= self.qmax).then(|| grid::dequantize(self.layout, q, self.step))
    }
}

/// The floating grid of [`crate::fgrid`] (variant 9).
impl DeltaGrid for FloatGrid {
    #[inline(always)]
    fn coordinate(&self, raw: u64) -> Option<i64> {
        FloatGrid::coordinate(*self, raw)
    }

    #[inline(always)]
    fn value(&self, q: i64) -> Option<u64> {
        FloatGrid::value(*self, q)
    }
}

/// Checks the context count and the element width of a quantized delta.
fn check_params(nctx: usize, b: usize, len: usize) -> Result<(), CodecError> {
    if !(nctx == 1 || nctx == QUANT_CLASSES) {
        return Err(CodecError::Corrupt(
            "quantized delta has invalid parameters",
        ));
    }
    if !len.is_multiple_of(b) {
        return Err(CodecError::Corrupt(
            "quantized delta size is not whole values",
        ));
    }
    Ok(())
}

/// Decodes variant 8 (after the variant byte).
pub(super) fn decode_quant(rest: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = rest
        .get(..12)
        .ok_or(CodecError::Corrupt("quantized delta header truncated"))?;
    let b = usize::from(head[0]);
    let exp_bits = u32::from(head[1]);
    let bits = u32::from(head[2]);
    let nctx = usize::from(head[3]);
    let step = f64::from_bits(u64::from_le_bytes(
        head[4..12]
            .try_into()
            .map_err(|_| CodecError::Corrupt("quantized delta header"))?,
    ));
    if !matches!(b, 1 | 2 | 4 | 8) || exp_bits == 0 || exp_bits + 1 >= 8 * b as u32 {
        return Err(CodecError::Corrupt("quantized delta has an invalid layout"));
    }
    if !(2..=32).contains(&bits) {
        return Err(CodecError::Corrupt(
            "quantized delta has invalid parameters",
        ));
    }
    check_params(nctx, b, out.len())?;
    let layout = FloatLayout {
        bytes: b as u8,
        exp_bits,
    };
    let g = StepGrid::new(layout, step, bits);
    match b {
        1 => decode_body::<1, _>(rest, 12, nctx, base, out, g),
        2 => decode_body::<2, _>(rest, 12, nctx, base, out, g),
        4 => decode_body::<4, _>(rest, 12, nctx, base, out, g),
        _ => decode_body::<8, _>(rest, 12, nctx, base, out, g),
    }
}

/// Decodes variant 9 (after the variant byte).
pub(super) fn decode_float_quant(
    rest: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    let head = rest
        .get(..4)
        .ok_or(CodecError::Corrupt("quantized delta header truncated"))?;
    let layout = match (head[0], head[1]) {
        (2, 8) => FloatLayout::BF16,
        (2, 5) => FloatLayout::F16,
        (4, 8) => FloatLayout::F32,
        _ => return Err(CodecError::Corrupt("quantized delta has an invalid layout")),
    };
    let nctx = usize::from(head[3]);
    let g = FloatGrid::new(layout, u32::from(head[2])).ok_or(CodecError::Corrupt(
        "quantized delta has invalid parameters",
    ))?;
    check_params(nctx, layout.bytes(), out.len())?;
    match layout.bytes() {
        2 => decode_body::<2, _>(rest, 4, nctx, base, out, g),
        _ => decode_body::<4, _>(rest, 4, nctx, base, out, g),
    }
}

/// Decodes the escapes, residuals and escaped bytes at `rest[pos..]` on grid `g`.
fn decode_body<const B: usize, G: DeltaGrid>(
    rest: &[u8],
    mut pos: usize,
    nctx: usize,
    base: &[u8],
    out: &mut [u8],
    g: G,
) -> Result<(), CodecError> {
    let count = out.len() / B;
    let n_esc = get_varint(rest, &mut pos)?;
    if n_esc > count as u64 {
        return Err(CodecError::Corrupt("quantized delta has too many escapes"));
    }
    let n_esc = n_esc as usize;
    let mut is_esc = vec![false; if n_esc > 0 { count } else { 0 }];
    if n_esc > 0 {
        let mut gaps = vec![0u64; n_esc];
        pos += ints::decode_ctx(rest.get(pos..).unwrap_or(&[]), None, 1, &mut gaps)?;
        let mut next = 0u64;
        for g in gaps {
            let i =
                next.checked_add(g)
                    .filter(|&i| i < count as u64)
                    .ok_or(CodecError::Corrupt(
                        "quantized delta escape index out of range",
                    ))?;
            is_esc[i as usize] = true;
            next = i + 1;
        }
    }
    // Element index of every residual (identity when nothing is escaped).
    let map: Option<Vec<usize>> = (n_esc > 0).then(|| (0..count).filter(|&i| !is_esc[i]).collect());
    let data = rest.get(pos..).unwrap_or(&[]);
    pos += decode_residuals::<B, G>(data, nctx, base, out, map.as_deref(), g)?;
    let raw = rest
        .get(pos..)
        .filter(|r| r.len() == n_esc * B)
        .ok_or(CodecError::Corrupt("quantized delta escape bytes mismatch"))?;
    let mut e_iter = raw.chunks_exact(B);
    for (ov, &esc) in out.chunks_exact_mut(B).zip(&is_esc) {
        if esc && let Some(e) = e_iter.next() {
            ov.copy_from_slice(e);
        }
    }
    Ok(())
}

/// Decodes the residual block `data` into the non-escaped values of `out` (element `map[j]`
/// for residual `j`, or `j` without a map); returns the bytes consumed.
fn decode_residuals<const B: usize, G: DeltaGrid>(
    data: &[u8],
    nctx: usize,
    base: &[u8],
    out: &mut [u8],
    map: Option<&[usize]>,
    g: G,
) -> Result<usize, CodecError> {
    let n = map.map_or(out.len() / B, <[usize]>::len);
    let mut sink = QuantOut::<B, G> {
        base,
        map,
        out,
        n,
        g,
        classes: nctx > 1,
        group: [0; 4],
        bad: false,
    };
    let used = ints::decode_into(data, nctx, &mut sink)?;
    if sink.bad {
        return Err(CodecError::Corrupt("quantized delta value off the grid"));
    }
    Ok(used)
}

/// Decoded residuals applied to the base grid integers as they come.
struct QuantOut<'a, const B: usize, G> {
    base: &'a [u8],
    /// Element index per residual; `None` for the identity.
    map: Option<&'a [usize]>,
    out: &'a mut [u8],
    n: usize,
    g: G,
    /// One context per [`quant_class`] (else one context).
    classes: bool,
    /// Base grid integers of the group of four from the last [`ints::Values::ctx4`].
    group: [i64; 4],
    /// Set when a residual leaves the grid (corrupt payload).
    bad: bool,
}

impl<const B: usize, G: DeltaGrid> QuantOut<'_, B, G> {
    #[inline(always)]
    fn index(&self, j: usize) -> usize {
        match self.map {
            None => j,
            Some(m) => m[j],
        }
    }

    /// The base grid integer of element `i`.
    #[inline(always)]
    fn qb(&self, i: usize) -> i64 {
        self.g
            .coordinate(load::<B>(&self.base[i * B..(i + 1) * B]))
            .unwrap_or(0)
    }

    #[inline(always)]
    fn ctx_of(&self, qb: i64) -> usize {
        if self.classes {
            usize::from(quant_class(qb))
        } else {
            0
        }
    }

    /// Stores grid point `qb + r` as element `i`.
    #[inline(always)]
    fn store(&mut self, i: usize, qb: i64, z: u64) {
        let v = qb.checked_add(unzigzag(z)).and_then(|q| self.g.value(q));
        self.bad |= v.is_none();
        let v = v.unwrap_or(0);
        self.out[i * B..(i + 1) * B].copy_from_slice(&v.to_le_bytes()[..B]);
    }
}

impl<const B: usize, G: DeltaGrid> ints::Values for QuantOut<'_, B, G> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.n
    }

    #[inline(always)]
    fn ctx(&self, j: usize) -> usize {
        self.ctx_of(self.qb(self.index(j)))
    }

    #[inline(always)]
    fn set(&mut self, j: usize, z: u64) {
        let i = self.index(j);
        self.store(i, self.qb(i), z);
    }

    #[inline(always)]
    fn ctx4(&mut self, j: usize) -> [usize; 4] {
        let q = |k: usize| self.qb(self.index(j + k));
        self.group = [q(0), q(1), q(2), q(3)];
        let g = self.group;
        [
            self.ctx_of(g[0]),
            self.ctx_of(g[1]),
            self.ctx_of(g[2]),
            self.ctx_of(g[3]),
        ]
    }

    #[inline(always)]
    fn set4(&mut self, j: usize, z: [u64; 4]) {
        for (k, &z) in z.iter().enumerate() {
            let i = self.index(j + k);
            self.store(i, self.group[k], z);
        }
    }
}
