//! How one segment is encoded ([`Coding`]) and the encoding of one chunk with it.

use dmx_codec::{FloatLayout, ValueKind, bfp};
use dmx_format::{ErrorStats, Lossy, LossyMode};

use super::Grid;

/// How one segment is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Coding {
    /// Byte-identical.
    Lossless,
    /// Block floating point.
    Bfp(bfp::Params),
    /// Block floating point with every value its own exponent (so no small value is flushed
    /// by a large neighbour), within the squared error of plain BFP at these parameters.
    BfpOwn(bfp::Params),
    /// On an integer grid of this width.
    Quant { grid: Grid, bits: u32 },
    /// Rounded to a 16-bit layout.
    Cast(FloatLayout),
    /// Lossless, relative to the base tensor (or standalone, per chunk, when smaller).
    Delta,
    /// On an integer grid, relative to the base tensor (or standalone, per chunk, when
    /// smaller: both decode to the same values).
    QuantDelta { grid: Grid, bits: u32 },
}

impl Coding {
    pub(crate) fn is_lossless(self) -> bool {
        matches!(self, Coding::Lossless | Coding::Delta)
    }

    /// The next, more precise step of [`Mode::Auto`](crate::lossy::Mode::Auto) for a chunk over its share of the
    /// budget: BFP with one more magnitude bit, else exact.
    pub(crate) fn escalate(self, layout: FloatLayout) -> Coding {
        match self {
            Coding::Bfp(p) if p.mantissa_bits < bfp::max_mantissa_bits(layout) => {
                Coding::Bfp(bfp::Params {
                    mantissa_bits: p.mantissa_bits + 1,
                    ..p
                })
            }
            Coding::BfpOwn(p) if p.mantissa_bits < bfp::max_mantissa_bits(layout) => {
                Coding::BfpOwn(bfp::Params {
                    mantissa_bits: p.mantissa_bits + 1,
                    ..p
                })
            }
            _ => Coding::Lossless,
        }
    }

    /// The index record of a lossy coding with its measured error.
    pub(crate) fn record(self, error: ErrorStats) -> Option<Lossy> {
        let mut float_grid = false;
        let (mode, mantissa_bits, group_size, step) = match self {
            Coding::Lossless | Coding::Delta => return None,
            Coding::Bfp(p) => (LossyMode::Bfp, p.mantissa_bits as u8, p.group_size, 0.0),
            Coding::BfpOwn(p) => (LossyMode::Bfp, p.mantissa_bits as u8, 1, 0.0),
            Coding::Quant { grid, bits } | Coding::QuantDelta { grid, bits } => {
                let mode = if bits == 16 {
                    LossyMode::Int16
                } else {
                    LossyMode::Int32
                };
                match grid {
                    Grid::Linear(step) => (mode, 0, 0, step),
                    Grid::Float(m) => {
                        float_grid = true;
                        (mode, m as u8, 0, 0.0)
                    }
                }
            }
            Coding::Cast(l) => (
                if l == FloatLayout::BF16 {
                    LossyMode::CastBf16
                } else {
                    LossyMode::CastF16
                },
                0,
                0,
                0.0,
            ),
        };
        Some(Lossy {
            mode,
            mantissa_bits,
            group_size,
            step,
            float_grid,
            error,
        })
    }

    /// Encodes one chunk; `base` is the same range of the base tensor for the delta codings.
    /// BFP groups run over the chunk's values in order, across rows, so no group is shorter
    /// than its size unless the chunk ends it (a convolution kernel `[O, I, 3, 3]` gets groups
    /// of 32, not 3).
    pub(crate) fn encode(
        self,
        value: ValueKind,
        data: &[u8],
        hints: dmx_codec::Hints,
        base: Option<&[u8]>,
    ) -> dmx_codec::Encoded {
        let smaller = |a: dmx_codec::Encoded, b: dmx_codec::Encoded| {
            if b.payload.len() < a.payload.len() {
                b
            } else {
                a
            }
        };
        if let (Coding::Delta, Some(base)) = (self, base) {
            // The chunk alone wins when it is no larger. A sample of it, coded, gives a
            // size it is unlikely to come below: the delta's variants that cannot beat it are
            // not tried, and the chunk alone is planned (and then coded) only when that size
            // does not rule it out. When the sample says the chunk alone wins, it is tried
            // as soon as the delta's size is bounded, before the delta is coded.
            let floor = dmx_codec::alone_floor(value, data, hints);
            let rival = floor.unwrap_or(usize::MAX);
            // `early`: the chunk alone, coded within the delta's largest size.
            let mut early = None;
            let delta = dmx_codec::delta::encode_unless(value, base, data, rival, |lower, high| {
                if floor.is_none_or(|f| f > lower) {
                    return false;
                }
                let e = dmx_codec::encode_within(value, data, hints, high);
                let wins = e.as_ref().is_some_and(|e| e.payload.len() <= lower);
                early = Some(e);
                wins
            });
            let Some((payload, entropy_bits)) = delta else {
                return early.flatten().expect("the chunk alone fits");
            };
            let limit = payload.len();
            let alone = match early {
                // Coded within `high`, at least the delta's size: the same test as below.
                Some(e) => e.filter(|e| e.payload.len() <= limit),
                None => floor
                    .is_none_or(|f| f <= limit)
                    .then(|| dmx_codec::encode_within(value, data, hints, limit))
                    .flatten(),
            };
            return alone.unwrap_or(dmx_codec::Encoded {
                codec: dmx_codec::Codec::Delta,
                payload,
                entropy_bits,
            });
        }
        let ValueKind::Float(layout) = value else {
            return dmx_codec::encode_with(value, data, hints);
        };
        let (codec, (payload, entropy_bits)) = match self {
            Coding::Lossless | Coding::Delta => {
                return dmx_codec::encode_with(value, data, hints);
            }
            Coding::QuantDelta { grid, bits } => {
                let (codec, (payload, entropy_bits)) = quantize(layout, data, grid, bits, 0);
                let alone = dmx_codec::Encoded {
                    codec,
                    payload,
                    entropy_bits,
                };
                match base {
                    None => (alone.codec, (alone.payload, alone.entropy_bits)),
                    Some(base) => {
                        let (payload, entropy_bits) = match grid.capped(layout) {
                            Grid::Linear(step) => {
                                dmx_codec::delta::encode_quantized(layout, base, data, step, bits)
                            }
                            Grid::Float(m) => {
                                dmx_codec::delta::encode_float_quantized(layout, base, data, m)
                            }
                        };
                        let best = smaller(
                            alone,
                            dmx_codec::Encoded {
                                codec: dmx_codec::Codec::QuantDelta,
                                payload,
                                entropy_bits,
                            },
                        );
                        (best.codec, (best.payload, best.entropy_bits))
                    }
                }
            }
            Coding::Bfp(p) => with_codec(bfp::encode_rd(layout, data, 0, p)),
            Coding::BfpOwn(p) => {
                let (enc, _) = own(layout, data, hints, p);
                (enc.codec, (enc.payload, enc.entropy_bits))
            }
            Coding::Quant { grid, bits } => match grid.capped(layout) {
                Grid::Float(m) => {
                    let (enc, _) = on_float_grid(layout, data, hints, m);
                    (enc.codec, (enc.payload, enc.entropy_bits))
                }
                Grid::Linear(_) => quantize(layout, data, grid, bits, hints.row_len),
            },
            Coding::Cast(to) => (
                dmx_codec::Codec::Cast,
                dmx_codec::cast::encode(to, data, hints),
            ),
        };
        if payload.len() >= data.len() {
            // Never larger than the input: such a chunk is stored exactly.
            return dmx_codec::Encoded {
                codec: dmx_codec::Codec::Raw,
                payload: data.to_vec(),
                entropy_bits,
            };
        }
        dmx_codec::Encoded {
            codec,
            payload,
            entropy_bits,
        }
    }
}

/// A chunk with own exponents ([`Coding::BfpOwn`]): its values rounded as BFP in groups of
/// one rounds them ([`bfp::own_restored`]), then coded exactly by the float codecs. The
/// rounded values have zero low mantissa bits, which those codecs drop, and their exponents
/// and top bits under one static code each; on optimizer moments that is smaller than the
/// BFP payload of groups of one (each exponent coded against a prediction), and several
/// times faster to write and to read. Returns the chunk and the bytes it restores.
fn own(
    layout: FloatLayout,
    data: &[u8],
    hints: dmx_codec::Hints,
    p: bfp::Params,
) -> (dmx_codec::Encoded, Vec<u8>) {
    let (restored, _) = bfp::own_restored(layout, data, 0, p);
    let enc = dmx_codec::encode_with(ValueKind::Float(layout), &restored, hints);
    (enc, restored)
}

/// Values below which a chunk on the floating grid is also coded with codec 9.
const GRID_BOTH_BELOW: usize = 1 << 16;

/// A chunk on the floating grid of `m` fraction bits (what the integer modes give optimizer
/// moments and tensors spanning many binades, [`Grid::Float`]), in a single file: its values
/// rounded to the grid ([`dmx_codec::fquant::restore`]), then coded exactly by the float
/// codecs, as [`own`] does (smaller than codec 9's grid coordinates on optimizer moments:
/// `exp_avg_sq` 12–16 %, `exp_avg` 1–2 %). Chunks of fewer than [`GRID_BOTH_BELOW`] values
/// are also coded with codec 9 and the smaller kept (its lighter tables win on small chunks);
/// on larger ones a second coding would add a quarter to the writer's time. Deltas keep
/// codec 9, whose grid coordinates their differences are taken on. Returns the chunk and the
/// bytes it restores.
fn on_float_grid(
    layout: FloatLayout,
    data: &[u8],
    hints: dmx_codec::Hints,
    m: u32,
) -> (dmx_codec::Encoded, Vec<u8>) {
    let restored = dmx_codec::fquant::restore(layout, data, m);
    let floats = dmx_codec::encode_with(ValueKind::Float(layout), &restored, hints);
    if data.len() / layout.bytes() >= GRID_BOTH_BELOW {
        return (floats, restored);
    }
    // Codec 9 where it is smaller: small chunks, whose tables weigh more than the float
    // codecs' gain.
    let (payload, entropy_bits) = dmx_codec::fquant::encode(layout, data, m);
    if payload.len() < floats.payload.len() {
        let grid = dmx_codec::Encoded {
            codec: dmx_codec::Codec::FloatQuant,
            payload,
            entropy_bits,
        };
        return (grid, restored);
    }
    (floats, restored)
}

/// A BFP payload with its codec (4, or 13 when it codes a table per previous value).
fn with_codec((payload, bits): (Vec<u8>, f64)) -> (dmx_codec::Codec, (Vec<u8>, f64)) {
    (bfp::codec(&payload), (payload, bits))
}

/// A lossy chunk as [`Coding::encode_lossy`] codes it.
pub(crate) struct LossyChunk {
    /// The stored chunk.
    pub(crate) enc: dmx_codec::Encoded,
    /// The bytes its decoder restores.
    pub(crate) restored: Vec<u8>,
    /// Values equal to the base's (bit for bit, or on the grid), when the encoder counted
    /// them.
    pub(crate) unchanged: Option<u64>,
}

impl Coding {
    /// [`Coding::encode`] of a lossy coding in one pass per chunk: also returns the bytes
    /// decompression will restore, computed from the quantized values the encoder made (the
    /// codecs' `encode_restored` / `restore`, checked against their decoders by their tests)
    /// instead of decoding the payload again, and for quantized deltas the count of unchanged
    /// values from the same pass.
    pub(crate) fn encode_lossy(
        self,
        value: ValueKind,
        data: &[u8],
        hints: dmx_codec::Hints,
        base: Option<&[u8]>,
    ) -> LossyChunk {
        let exact = |enc: dmx_codec::Encoded| LossyChunk {
            enc,
            restored: data.to_vec(),
            unchanged: None,
        };
        let ValueKind::Float(layout) = value else {
            return exact(self.encode(value, data, hints, base));
        };
        let mut unchanged = None;
        let (codec, (payload, entropy_bits), restored) = match self {
            Coding::Lossless | Coding::Delta => {
                return exact(self.encode(value, data, hints, base));
            }
            Coding::QuantDelta { grid, bits } => {
                let capped = grid.capped(layout);
                // Both forms restore the target's own grid values; the chunk alone is coded
                // only when it can be no larger than the delta (which it wins then).
                let (restored, alone_at_least) = match capped {
                    Grid::Linear(step) => {
                        dmx_codec::quant::restore_bounded(layout, data, step, bits)
                    }
                    Grid::Float(m) => dmx_codec::fquant::restore_bounded(layout, data, m),
                };
                let alone = || {
                    let (codec, (payload, entropy_bits)) = quantize(layout, data, grid, bits, 0);
                    dmx_codec::Encoded {
                        codec,
                        payload,
                        entropy_bits,
                    }
                };
                let best = match base {
                    None => alone(),
                    Some(base) => {
                        let (payload, entropy_bits, same) = match capped {
                            Grid::Linear(step) => dmx_codec::delta::encode_quantized_counted(
                                layout, base, data, step, bits,
                            ),
                            Grid::Float(m) => dmx_codec::delta::encode_float_quantized_counted(
                                layout, base, data, m,
                            ),
                        };
                        // The count is on the grid the chunk was coded on (the record's may
                        // name more fraction bits than the dtype has: counted as before).
                        if capped == grid {
                            unchanged = Some(same);
                        }
                        let delta = dmx_codec::Encoded {
                            codec: dmx_codec::Codec::QuantDelta,
                            payload,
                            entropy_bits,
                        };
                        if alone_at_least > delta.payload.len() {
                            delta
                        } else {
                            let alone = alone();
                            if delta.payload.len() < alone.payload.len() {
                                delta
                            } else {
                                alone
                            }
                        }
                    }
                };
                (best.codec, (best.payload, best.entropy_bits), restored)
            }
            Coding::Bfp(p) => {
                let (payload, bits, restored) = bfp::encode_rd_restored(layout, data, 0, p);
                (bfp::codec(&payload), (payload, bits), restored)
            }
            Coding::BfpOwn(p) => {
                let (enc, restored) = own(layout, data, hints, p);
                (enc.codec, (enc.payload, enc.entropy_bits), restored)
            }
            Coding::Quant { grid, bits } => match grid.capped(layout) {
                Grid::Linear(step) => {
                    let (payload, entropy_bits, restored) =
                        dmx_codec::quant::encode_restored(layout, data, step, bits, hints.row_len);
                    let codec = dmx_codec::quant::codec(&payload);
                    (codec, (payload, entropy_bits), restored)
                }
                Grid::Float(m) => {
                    let (enc, restored) = on_float_grid(layout, data, hints, m);
                    (enc.codec, (enc.payload, enc.entropy_bits), restored)
                }
            },
            Coding::Cast(to) => {
                let (payload, bits, restored) = dmx_codec::cast::encode_restored(to, data, hints);
                (dmx_codec::Codec::Cast, (payload, bits), restored)
            }
        };
        if payload.len() >= data.len() {
            // Never larger than the input: such a chunk is stored exactly.
            return LossyChunk {
                enc: dmx_codec::Encoded {
                    codec: dmx_codec::Codec::Raw,
                    payload: data.to_vec(),
                    entropy_bits,
                },
                restored: data.to_vec(),
                unchanged,
            };
        }
        LossyChunk {
            enc: dmx_codec::Encoded {
                codec,
                payload,
                entropy_bits,
            },
            restored,
            unchanged,
        }
    }
}

/// A chunk on `grid` alone: codec 5, 14 or 15 (linear; 15 only for a chunk of whole rows of
/// `row_len` values, 0 for none) or 9 (floating).
fn quantize(
    layout: FloatLayout,
    data: &[u8],
    grid: Grid,
    bits: u32,
    row_len: usize,
) -> (dmx_codec::Codec, (Vec<u8>, f64)) {
    match grid.capped(layout) {
        Grid::Linear(step) => {
            let (payload, bits) = dmx_codec::quant::encode_rows(layout, data, step, bits, row_len);
            (dmx_codec::quant::codec(&payload), (payload, bits))
        }
        Grid::Float(m) => (
            dmx_codec::Codec::FloatQuant,
            dmx_codec::fquant::encode(layout, data, m),
        ),
    }
}
