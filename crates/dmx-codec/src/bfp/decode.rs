//! The BFP decoder: four lanes advanced in lockstep.

use super::{
    CLASS_HI, CLASS_LO, Geo, History, LANES, MAX_CTX_TABLES, MAX_TABLES, PREV_FINE, Params, Shape,
    VERSION, VERSION_CTX, check, coarse, mag_bits, prev_fine, step_scale,
};
use crate::CodecError;
use crate::FloatLayout;
use crate::bits::BitReader;
use crate::entropy::rans;
use crate::entropy::unzigzag_i32;
use crate::entropy::varint::get_varint;

/// Decodes a payload of [`encode`](fn@super::encode) (codec 4 or 13, see
/// [`codec`](super::codec)) into `out` (its length is the chunk's raw length: the values in
/// the original dtype). Never panics and never allocates more than `O(out.len())` plus small
/// tables on any input; corrupt input gives [`CodecError::Corrupt`].
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_codec(super::codec(payload), payload, out)
}

/// [`decode`] of a chunk stored with codec id `codec` ([`Codec::Bfp`] or
/// [`Codec::BfpContext`]): a payload of the other one is corrupt.
///
/// [`Codec::Bfp`]: crate::Codec::Bfp
/// [`Codec::BfpContext`]: crate::Codec::BfpContext
pub fn decode_codec(codec: crate::Codec, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = payload
        .get(..4)
        .ok_or(CodecError::Corrupt("BFP payload header truncated"))?;
    let context = match (codec, head[0]) {
        (crate::Codec::Bfp, VERSION) => false,
        (crate::Codec::BfpContext, VERSION_CTX) => true,
        _ => return Err(CodecError::Corrupt("unknown BFP payload version")),
    };
    let layout = match (head[1], head[2]) {
        (2, 8) => FloatLayout::BF16,
        (2, 5) => FloatLayout::F16,
        (4, 8) => FloatLayout::F32,
        _ => return Err(CodecError::Corrupt("BFP payload has an unknown dtype")),
    };
    let mut pos = 4;
    let gs = get_varint(payload, &mut pos)?;
    let row = get_varint(payload, &mut pos)?;
    let count = get_varint(payload, &mut pos)?;
    let p = Params {
        mantissa_bits: u32::from(head[3]),
        group_size: gs.min(u64::from(u32::MAX)) as u32,
    };
    if check(layout, p).is_err() {
        return Err(CodecError::Corrupt("BFP payload has invalid parameters"));
    }
    let b = layout.bytes();
    if usize::try_from(count).ok().and_then(|c| c.checked_mul(b)) != Some(out.len()) {
        return Err(CodecError::Corrupt(
            "BFP payload value count disagrees with chunk size",
        ));
    }
    let count = count as usize;
    let row_ok = if count == 0 {
        row == 0
    } else {
        (1..=count as u64).contains(&row)
    };
    if !row_ok {
        return Err(CodecError::Corrupt("BFP payload has an invalid row length"));
    }
    let shape = Shape::new(count, row as usize, gs as usize);
    let win = payload
        .get(pos..pos + 2)
        .ok_or(CodecError::Corrupt("BFP payload header truncated"))?;
    let lo = i32::from(win[0] as i8);
    let k = usize::from(win[1]);
    pos += 2;
    if lo < CLASS_LO || !(1..=MAX_TABLES).contains(&k) || lo + k as i32 - 1 > CLASS_HI {
        return Err(CodecError::Corrupt(
            "BFP payload has an invalid context window",
        ));
    }
    let np = if context {
        let np = usize::from(
            *payload
                .get(pos)
                .ok_or(CodecError::Corrupt("BFP payload header truncated"))?,
        );
        pos += 1;
        if !(2..=PREV_FINE).contains(&np) || k * np > MAX_CTX_TABLES {
            return Err(CodecError::Corrupt(
                "BFP payload has an invalid number of previous-value tables",
            ));
        }
        np
    } else {
        1
    };
    let g = Geo::new(layout, p.mantissa_bits);
    let mut r = BitReader::new(&payload[pos..]);
    let etab = rans::dec_table(&rans::read(&mut r, g.exp_alpha())?);
    let mut vtabs = Vec::with_capacity(k * np);
    for _ in 0..k * np {
        vtabs.push(rans::vdec_table(
            &rans::read(&mut r, g.alpha())?,
            g.neg0 as usize,
        ));
    }
    if r.overrun() {
        return Err(CodecError::Corrupt("BFP payload tables truncated"));
    }
    pos += r.bytes_used();
    let (words, heads) = read_lanes(payload, pos, count)?;
    let dec = Dec {
        g,
        shape,
        etab: &etab,
        vtabs: &vtabs,
        lo,
        k: k as i32,
        np,
        pmap: std::array::from_fn(|b| coarse(prev_fine(b as u32), np) as u8),
    };
    if b == 2 {
        dec.run::<2>(&words, heads, out)
    } else {
        dec.run::<4>(&words, heads, out)
    }
}

/// The per-lane state of a decoder: each lane's final encoder state and the range of its
/// 16-bit words in the shared word buffer.
type LaneHeads = [(u32, usize, usize); LANES];

/// Reads the lane sizes at `pos` and splits the rest of the payload into the lanes (each
/// lane is the final encoder state, then 16-bit words), checking that they tile the payload
/// and that it is no larger than any encoding of `count` values. Returns the words of all
/// lanes, with one padding word at the end, and each lane's state and word range.
fn read_lanes(
    payload: &[u8],
    mut pos: usize,
    count: usize,
) -> Result<(Vec<u16>, LaneHeads), CodecError> {
    let mut sizes = [0usize; LANES];
    for s in &mut sizes {
        *s = usize::try_from(get_varint(payload, &mut pos)?)
            .map_err(|_| CodecError::Corrupt("BFP lane size overflows"))?;
    }
    let mut lanes = [(0usize, 0usize); LANES];
    let mut at = 0usize;
    let body = &payload[pos..];
    for (lane, &s) in lanes.iter_mut().zip(&sizes) {
        let end = at
            .checked_add(s)
            .filter(|&e| e <= body.len())
            .ok_or(CodecError::Corrupt("BFP lane exceeds the payload"))?;
        *lane = (at, end);
        at = end;
    }
    if at != body.len() {
        return Err(CodecError::Corrupt("BFP payload has trailing bytes"));
    }
    // A valid encoder pushes at most three words per value and one per group (so the
    // word buffer below stays O(out.len())).
    if body.len() > 8 * count + 8 * LANES {
        return Err(CodecError::Corrupt("BFP payload larger than any encoding"));
    }
    // Each lane: the final encoder state, then 16-bit words; one padding word at the end.
    let mut words = Vec::with_capacity(body.len() / 2 + 1);
    let mut heads: LaneHeads = [(0, 0, 0); LANES];
    for (h, &(start, end)) in heads.iter_mut().zip(&lanes) {
        let lane = &body[start..end];
        if lane.len() < 4 || !lane.len().is_multiple_of(2) {
            return Err(CodecError::Corrupt("BFP lane has an invalid size"));
        }
        let x = u32::from_le_bytes([lane[0], lane[1], lane[2], lane[3]]);
        let first = words.len();
        words.extend(
            lane[4..]
                .chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]])),
        );
        *h = (x, first, words.len());
    }
    words.push(0);
    Ok((words, heads))
}

/// Decoder state shared by the lanes.
struct Dec<'a> {
    g: Geo,
    shape: Shape,
    etab: &'a [u64; rans::TOTAL],
    vtabs: &'a [Box<[u64; rans::TOTAL]>],
    lo: i32,
    k: i32,
    /// Tables per context class: one per previous-value class (1 for codec 4).
    np: usize,
    /// The previous-value table after each code byte.
    pmap: [u8; 256],
}

/// One lane being decoded.
#[derive(Clone, Copy)]
struct LaneState<'a> {
    rans: rans::Decoder<'a>,
    /// Next group and the lane's end group.
    next: usize,
    stop: usize,
    hist: History,
}

/// A coded group being decoded.
#[derive(Clone, Copy)]
struct Active<'a> {
    e: u32,
    /// `2^(E − bias − M + 1 − adj)`, the step in the `f32` image ([`step_scale`]).
    scale: f32,
    /// The tables of the group's class, one per previous-value class.
    tabs: &'a [Box<[u64; rans::TOTAL]>],
    /// The table of the next value.
    t: &'a [u64; rans::TOTAL],
    start: usize,
    len: usize,
}

#[inline(always)]
fn store<const B: usize>(out: &mut [u8], v: u32) {
    out.copy_from_slice(&v.to_le_bytes()[..B]);
}

impl<'a> Dec<'a> {
    /// Decodes the exponent of the lane's next group; raw groups are copied at once (`None`).
    fn group<const B: usize>(
        &self,
        s: &mut LaneState<'_>,
        out: &mut [u8],
    ) -> Result<Option<Active<'a>>, CodecError> {
        let (start, len) = self.shape.group(s.next);
        let esym = s.rans.get(self.etab);
        if esym == 0 {
            for v in out[start * B..(start + len) * B].chunks_exact_mut(B) {
                let lo = s.rans.bits(16);
                let hi = if B == 4 { s.rans.bits(16) } else { 0 };
                store::<B>(v, lo | hi << 16);
            }
            s.next += 1;
            return Ok(None);
        }
        let g = &self.g;
        let e = s.hist.pred(g) + unzigzag_i32(esym - 1);
        if e < 1 || e > g.emax as i32 {
            return Err(CodecError::Corrupt("BFP group exponent out of range"));
        }
        let e = e as u32;
        s.hist.start(g, e);
        let t = (s.hist.class(g, e).clamp(self.lo, self.lo + self.k - 1) - self.lo) as usize;
        // The step, times 2^-adj: the f32 image of the value (see `Geo::s32`).
        let scale = step_scale(g, e);
        let tabs = &self.vtabs[t * self.np..(t + 1) * self.np];
        Ok(Some(Active {
            e,
            scale,
            tabs,
            t: &tabs[0],
            start,
            len,
        }))
    }

    /// Decodes one value of a coded group.
    #[inline(always)]
    fn value(&self, d: &mut rans::Decoder<'_>, a: &mut Active<'a>, sum: &mut u64) -> u32 {
        let g = &self.g;
        let c = u32::from(d.code(a.t));
        if self.np > 1 {
            a.t = &a.tabs[usize::from(self.pmap[(c & 0xFF) as usize])];
        }
        let (z, neg0) = ((c >> 8) & 1, (c >> 9) & 1);
        let mut q = (c & 0xFF) << g.low;
        let mut sign = (c >> 15 & c >> 10) | neg0;
        if g.low > 0 {
            if neg0 == 0 {
                q |= d.bits(g.low);
            }
            if z == 1 && q != 0 {
                sign = d.bits(1);
            }
        }
        *sum += u64::from(q);
        sign << g.sign_shift | mag_bits(g, q, a.scale)
    }

    /// Values of a group from its codes ([`rans::decode4`], lane `lane` of the interleaved
    /// codes); returns the sum of the magnitudes.
    fn convert<const B: usize>(
        &self,
        codes: &[u16],
        lane: usize,
        a: &Active<'_>,
        out: &mut [u8],
    ) -> u64 {
        let g = &self.g;
        let mut sum = 0u64;
        let codes = codes.chunks_exact(4).map(|c| c[lane & 3]);
        for (c, o) in codes.zip(out.chunks_exact_mut(B)) {
            let c = u32::from(c);
            let q = c & 0xFF;
            let sign = (c >> 15 & c >> 10) | ((c >> 9) & 1);
            sum += u64::from(q);
            store::<B>(o, sign << g.sign_shift | mag_bits(g, q, a.scale));
        }
        sum
    }

    fn run<const B: usize>(
        &self,
        words: &'a [u16],
        heads: [(u32, usize, usize); LANES],
        out: &mut [u8],
    ) -> Result<(), CodecError> {
        let ranges = self.shape.lanes();
        let mut codes = vec![0u16; LANES * self.shape.gs];
        let mut st: [LaneState<'a>; LANES] = std::array::from_fn(|k| LaneState {
            rans: rans::Decoder::new(heads[k].0, words, heads[k].1, heads[k].2),
            next: ranges[k].0,
            stop: ranges[k].1,
            hist: History::new(),
        });
        loop {
            let mut act: [Option<Active<'a>>; LANES] = [None; LANES];
            let mut any = false;
            for (s, a) in st.iter_mut().zip(&mut act) {
                if s.next < s.stop {
                    any = true;
                    *a = self.group::<B>(s, out)?;
                }
            }
            if !any {
                break;
            }
            let mut sums = [0u64; LANES];
            match act {
                [Some(a0), Some(a1), Some(a2), Some(a3)]
                    if a0.len == a1.len
                        && a0.len == a2.len
                        && a0.len == a3.len
                        && self.g.low == 0 =>
                {
                    // Symbols first (four independent rANS chains), then values.
                    let n = a0.len;
                    let mut decs = st.map(|s| s.rans);
                    if self.np == 1 {
                        rans::decode4(&mut decs, [a0.t, a1.t, a2.t, a3.t], &mut codes[..4 * n]);
                    } else {
                        rans::decode4_ctx(
                            &mut decs,
                            [a0.tabs, a1.tabs, a2.tabs, a3.tabs],
                            &self.pmap,
                            &mut codes[..4 * n],
                        );
                    }
                    for (s, d) in st.iter_mut().zip(decs) {
                        s.rans = d;
                    }
                    for (k, a) in [a0, a1, a2, a3].iter().enumerate() {
                        let o = &mut out[a.start * B..(a.start + n) * B];
                        sums[k] = self.convert::<B>(&codes[..4 * n], k, a, o);
                    }
                }
                _ => {
                    for ((s, a), sum) in st.iter_mut().zip(&act).zip(&mut sums) {
                        if let Some(a) = a {
                            let mut a = *a;
                            let o = &mut out[a.start * B..(a.start + a.len) * B];
                            for v in o.chunks_exact_mut(B) {
                                store::<B>(v, self.value(&mut s.rans, &mut a, sum));
                            }
                        }
                    }
                }
            }
            for ((s, a), &sum) in st.iter_mut().zip(&act).zip(&sums) {
                if let Some(a) = a {
                    s.hist.push(a.e, sum, a.len);
                    s.next += 1;
                }
            }
        }
        if st.iter().any(|s| !s.rans.ok()) {
            return Err(CodecError::Corrupt("BFP lane does not decode exactly"));
        }
        Ok(())
    }
}
