//! Statistics of float tensor values: magnitudes, norms, and the integer steps shared by
//! the tensors of a role.

use std::collections::HashMap;

use dmx_codec::{FloatLayout, ValueKind, grid};
use dmx_format::SegmentKind;

use super::OWN_STEP_BELOW;
use super::measure::f16_table;
use crate::compress::SegmentData;
use crate::plan::PlannedFile;

/// Little-endian element bytes as a zero-extended integer.
pub(crate) fn raw(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(v)
}

/// Largest finite magnitude of little-endian `layout` values (0 when none).
pub(crate) fn max_abs(layout: FloatLayout, data: &[u8]) -> f64 {
    // On the bits: for finite values the magnitude orders like its bits without the sign
    // (an integer maximum, which vectorizes).
    use dmx_codec::cpu::{Level, dispatch};
    #[inline(always)]
    fn max_bits<const W: usize>(
        data: &[u8],
        sign: u32,
        inf: u32,
        load: impl Fn([u8; W]) -> u32,
    ) -> u32 {
        // Branch-free (NaN and ±Inf count as 0), 16 running maxima: it vectorizes.
        let mag = |c: &[u8]| {
            let m = load(c.try_into().expect("chunks_exact")) & !sign;
            if m < inf { m } else { 0 }
        };
        let mut acc = [0u32; 16];
        let mut blocks = data.chunks_exact(16 * W);
        for block in &mut blocks {
            for (a, c) in acc.iter_mut().zip(block.chunks_exact(W)) {
                *a = (*a).max(mag(c));
            }
        }
        let rest = blocks
            .remainder()
            .chunks_exact(W)
            .map(mag)
            .max()
            .unwrap_or(0);
        acc.into_iter().max().unwrap_or(0).max(rest)
    }
    if layout == FloatLayout::BF16 || layout == FloatLayout::F16 {
        let inf = if layout == FloatLayout::BF16 {
            0x7f80
        } else {
            0x7c00
        };
        let m = dispatch(
            Level::detected(),
            #[inline(always)]
            || max_bits::<2>(data, 0x8000, inf, |r| u32::from(u16::from_le_bytes(r))),
        );
        return grid::to_f64(layout, u64::from(m));
    }
    if layout == FloatLayout::F32 {
        let m = dispatch(
            Level::detected(),
            #[inline(always)]
            || max_bits::<4>(data, 0x8000_0000, 0x7f80_0000, u32::from_le_bytes),
        );
        return grid::to_f64(layout, u64::from(m));
    }
    let mut m = 0f64;
    for_values(layout, data, |x| {
        if x.is_finite() {
            m = m.max(x.abs());
        }
    });
    m
}

/// The sum of squares of the finite values of little-endian `layout` data (as
/// [`ErrorAcc`](super::ErrorAcc) sums the original's norm).
pub(crate) fn sum_sq(layout: FloatLayout, data: &[u8]) -> f64 {
    let mut s = 0f64;
    for_values(layout, data, |x| {
        if x.is_finite() {
            s += x * x;
        }
    });
    s
}

/// Calls `f` with every value of little-endian `layout` data, in order.
fn for_values(layout: FloatLayout, data: &[u8], f: impl FnMut(f64)) {
    #[inline(always)]
    fn each<const W: usize>(data: &[u8], conv: impl Fn([u8; W]) -> f64, mut f: impl FnMut(f64)) {
        for c in data.chunks_exact(W) {
            f(conv(c.try_into().expect("chunks_exact")));
        }
    }
    if layout == FloatLayout::BF16 {
        each::<2>(
            data,
            |r| f64::from(f32::from_bits(u32::from(u16::from_le_bytes(r)) << 16)),
            f,
        );
    } else if layout == FloatLayout::F16 {
        let lut = f16_table();
        each::<2>(
            data,
            |r| f64::from(lut[usize::from(u16::from_le_bytes(r))]),
            f,
        );
    } else if layout == FloatLayout::F32 {
        each::<4>(data, |r| f64::from(f32::from_le_bytes(r)), f);
    } else {
        let w = layout.bytes();
        let mut f = f;
        for c in data.chunks_exact(w) {
            f(grid::to_f64(layout, raw(c)));
        }
    }
}

/// The layouts lossy modes apply to.
pub(crate) fn lossy_layout(value: ValueKind) -> Option<FloatLayout> {
    match value {
        ValueKind::Float(l)
            if l == FloatLayout::BF16 || l == FloatLayout::F16 || l == FloatLayout::F32 =>
        {
            Some(l)
        }
        _ => None,
    }
}

/// The float tensors of a planned file that lossy modes apply to: name, dtype, layout, bytes
/// (`bytes` holds the whole file).
pub(crate) fn float_tensors<'a, B: SegmentData + ?Sized>(
    plan: &'a PlannedFile,
    bytes: &'a B,
) -> impl Iterator<Item = (&'a str, &'a str, FloatLayout, &'a [u8])> {
    plan.segments.iter().filter_map(move |s| {
        let SegmentKind::Tensor(t) = &s.kind else {
            return None;
        };
        Some((
            t.name.as_str(),
            t.dtype.as_str(),
            lossy_layout(s.value)?,
            bytes.segment_data(s)?,
        ))
    })
}

/// The key of the tensors that share an integer step.
pub(crate) fn step_group(name: &str, dtype: &str, values: u64) -> Option<String> {
    (values >= OWN_STEP_BELOW).then(|| {
        format!(
            "{:?}/{dtype}/{}",
            crate::names::component(name),
            crate::names::role_key(name)
        )
    })
}

/// Integer steps per tensor name for `bits`, shared by role (see the module docs), computed
/// from the data of `files` (`read` gives a tensor's bytes).
pub(crate) fn shared_steps<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a str, FloatLayout, &'a [u8])>,
    bits: u32,
) -> HashMap<String, f64> {
    shared_max(tensors)
        .into_iter()
        .map(|(name, m)| (name, grid::step_for(m, bits)))
        .collect()
}

/// The largest magnitude per tensor name that [`shared_steps`] derives steps from: the
/// maximum over the tensor's role group, or its own.
pub(crate) fn shared_max<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a str, FloatLayout, &'a [u8])>,
) -> HashMap<String, f64> {
    let mut group_max: HashMap<String, f64> = HashMap::new();
    let mut own: Vec<(String, Option<String>, f64)> = Vec::new();
    for (name, dtype, layout, data) in tensors {
        let m = max_abs(layout, data);
        let values = (data.len() / layout.bytes()) as u64;
        let g = step_group(name, dtype, values);
        if let Some(g) = &g {
            let e = group_max.entry(g.clone()).or_insert(0.0);
            *e = e.max(m);
        }
        own.push((name.to_string(), g, m));
    }
    own.into_iter()
        .map(|(name, g, m)| {
            let m = g.and_then(|g| group_max.get(&g).copied()).unwrap_or(m);
            (name, m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked maximum is the largest finite magnitude, on random bits of every length.
    #[test]
    fn max_abs_is_the_largest_finite_magnitude() {
        let mut rng = dmx_testkit::Rng(5u64);
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            for n in [0usize, 1, 15, 16, 17, 100, 1001] {
                let data = rng.bytes(n * layout.bytes());
                let want = data
                    .chunks_exact(layout.bytes())
                    .map(|c| grid::to_f64(layout, raw(c)).abs())
                    .filter(|v| v.is_finite())
                    .fold(0f64, f64::max);
                assert_eq!(max_abs(layout, &data), want, "{layout:?} {n}");
            }
        }
    }

    #[test]
    fn steps_are_shared_by_role() {
        let a: Vec<u8> = [1.0f32; 5000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b: Vec<u8> = [3.0f32; 5000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let c: Vec<u8> = [0.5f32; 10].iter().flat_map(|x| x.to_le_bytes()).collect();
        let steps = shared_steps(
            [
                ("h.0.mlp.w", "F32", FloatLayout::F32, &a[..]),
                ("h.1.mlp.w", "F32", FloatLayout::F32, &b[..]),
                ("h.1.mlp.b", "F32", FloatLayout::F32, &c[..]),
            ]
            .into_iter(),
            16,
        );
        assert_eq!(steps["h.0.mlp.w"], steps["h.1.mlp.w"]);
        assert_eq!(steps["h.0.mlp.w"], 3.0 / 32767.0);
        assert_eq!(steps["h.1.mlp.b"], 0.5 / 32767.0);
    }
}
