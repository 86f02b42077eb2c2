//! Terminal-safe text: names read from an archive (tensor names, file paths, dtypes, chain
//! entry names) are untrusted and may hold escape sequences that clear the screen, move the
//! cursor, or forge lines such as "verify: all checks passed". Every human line the CLI
//! prints goes through [`escape`] (the `println!` family of [`crate::out`] calls it), so no
//! control character reaches the terminal raw. JSON output is not escaped here: serde writes
//! it exactly, with its own escapes.

use std::fmt::Write as _;

/// True for the characters that must not reach a terminal raw: the C0 controls, DEL and the
/// C1 controls (Unicode category Cc), the bidirectional formatting characters (U+061C,
/// U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) that reorder what is displayed, and the line
/// and paragraph separators U+2028 and U+2029.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with every unsafe character ([`is_unsafe`]) written as a visible escape: `\n`,
/// `\r`, `\t`, `\xHH` for the other codes below U+0100 (ESC is `\x1b`) and `\u{HHHH}` above.
/// Newlines are escaped too unless `keep_newlines` (for text that is already laid out in
/// lines, whose names were escaped one by one).
pub fn escape_with(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !is_unsafe(c) || (keep_newlines && c == '\n') {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
        }
    }
    out
}

/// One line (or one name) made terminal-safe: every control character, newlines included,
/// is escaped (see [`escape_with`]).
pub fn escape(text: &str) -> String {
    escape_with(text, false)
}

/// Escapes, in place, every name a `dmx diff` report shows (file paths, tensor names, dtypes,
/// metadata keys and values), before it is rendered as text. The JSON output uses the report
/// as it is.
pub fn diff_report(r: &mut dmx::diff::DiffReport) {
    let e = |s: &mut String| *s = escape(s);
    e(&mut r.a);
    e(&mut r.b);
    for t in &mut r.tensors {
        e(&mut t.name);
        e(&mut t.dtype);
    }
    r.added.iter_mut().for_each(e);
    r.removed.iter_mut().for_each(e);
    for c in &mut r.changed_shape_or_dtype {
        e(&mut c.name);
        e(&mut c.a_dtype);
        e(&mut c.b_dtype);
    }
    for m in &mut r.metadata_changed {
        e(&mut m.key);
        m.a.iter_mut().for_each(e);
        m.b.iter_mut().for_each(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape("plain name.weight"), "plain name.weight");
        assert_eq!(escape("ünïcödé 名前"), "ünïcödé 名前");
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("x\r\ny\tz"), "x\\r\\ny\\tz");
        assert_eq!(escape("\0\x7f\u{85}\u{9b}"), "\\x00\\x7f\\x85\\x9b");
        assert_eq!(escape("a\u{202e}b\u{2066}c"), "a\\u{202e}b\\u{2066}c");
        assert_eq!(escape("\u{2028}"), "\\u{2028}");
        assert_eq!(escape_with("a\nb\x1b\n", true), "a\nb\\x1b\n");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            assert!(is_unsafe(c), "{c:?}");
            assert!(!escape(&c.to_string()).chars().any(is_unsafe));
        }
        for c in ['\u{202a}', '\u{202d}', '\u{2069}', '\u{200f}', '\u{61c}'] {
            assert!(is_unsafe(c), "{c:?}");
        }
        assert!(!is_unsafe('\\') && !is_unsafe(' ') && !is_unsafe('é'));
    }
}
