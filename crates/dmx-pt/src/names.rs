//! Name paths: where each tensor sits in the object tree (`state.3.exp_avg`,
//! `model.layer.0.weight`). Dict keys and sequence indices are joined with `.`.

use std::collections::{HashMap, HashSet};

use crate::value::{Id, Tensor, Value, Values};
use crate::{Limits, Warnings};

/// Longest name path kept; deeper parts of a longer path are not named.
const MAX_NAME: usize = 4096;

/// How a dict key appears in a name path (as Python's `str()` would print it, for the key
/// types state dicts use).
fn key_text(values: &Values, id: Id) -> String {
    match values.get(id) {
        Value::Str(s) => {
            let mut end = s.len().min(MAX_NAME + 1);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        }
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Value::None => "None".to_owned(),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        Value::Float(f) => f.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(&b[..b.len().min(MAX_NAME + 1)]).into_owned(),
        _ => "?".to_owned(),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Every tensor reachable from `root` with its name path, in pickle order. Each container
/// is entered once (the first path to it names what it holds), so the walk is linear in the
/// number of values even for shared or cyclic references; nesting deeper than
/// `limits.max_depth` is not followed (with a warning). Equal names get `#2`, `#3`, ...
pub fn tensor_paths(
    values: &Values,
    root: Id,
    limits: &Limits,
    warnings: &mut Warnings,
) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut used: HashMap<String, u32> = HashMap::new();
    let mut todo: Vec<(Id, String, usize)> = vec![(root, String::new(), 0)];
    let mut budget = limits.max_alloc;
    while let Some((id, name, depth)) = todo.pop() {
        let value = values.get(id);
        if let Value::Tensor(t) = value {
            let n = used.entry(name.clone()).or_insert(0);
            *n += 1;
            let name = if *n == 1 {
                name
            } else {
                warnings.add("two tensors have the same name path (later ones get #2, #3, ...)");
                format!("{name}#{n}")
            };
            out.push((name, t.clone()));
            continue;
        }
        if !matches!(
            value,
            Value::List(_)
                | Value::Tuple(_)
                | Value::Set(_)
                | Value::Dict { .. }
                | Value::Object { .. }
        ) {
            continue;
        }
        if !seen.insert(id) {
            continue;
        }
        if depth >= limits.max_depth {
            warnings.add("object tree nested too deeply; deeper tensors are not named");
            continue;
        }
        let mut children: Vec<(Id, String)> = Vec::new();
        let keyed = |children: &mut Vec<(Id, String)>, pairs: &[(Id, Id)]| {
            children.extend(
                pairs
                    .iter()
                    .map(|&(k, v)| (v, join(&name, &key_text(values, k)))),
            );
        };
        let indexed = |children: &mut Vec<(Id, String)>, items: &[Id]| {
            children.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v, join(&name, &i.to_string()))),
            );
        };
        let state = |children: &mut Vec<(Id, String)>, s: Option<Id>| match s.map(|s| values.get(s))
        {
            Some(Value::Dict { items, .. }) => keyed(children, items),
            Some(_) => children.extend(s.map(|s| (s, name.clone()))),
            None => {}
        };
        match value {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => indexed(&mut children, v),
            Value::Dict { items, attrs } => {
                keyed(&mut children, items);
                state(&mut children, *attrs);
            }
            Value::Object {
                args,
                state: s,
                items,
                pairs,
                ..
            } => {
                keyed(&mut children, pairs);
                indexed(&mut children, items);
                state(&mut children, *s);
                if let Some(a) = values.seq(*args) {
                    indexed(&mut children, a);
                }
            }
            _ => {}
        }
        for (child, child_name) in children.into_iter().rev() {
            budget = budget.saturating_sub(child_name.len() as u64 + 16);
            if budget == 0 {
                warnings.add("too many name paths; the rest of the tree is not named");
                return out;
            }
            if child_name.len() > MAX_NAME {
                warnings.add("a name path longer than 4096 bytes was not followed");
                continue;
            }
            todo.push((child, child_name, depth + 1));
        }
    }
    out
}
