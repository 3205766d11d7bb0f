//! Text from a peer, made safe for a log line or an error message.

/// Text from a peer (or anything a peer may have shaped), made safe for one log line: control
/// characters escaped, at most `max` characters kept (`…` marks a cut), so that it cannot start
/// a forged log line or recolour a terminal.
///
/// ```
/// use dspex_telemetry_core::log_safe;
/// assert_eq!(log_safe("a\nforged line\x1b[31m", 100), r"a\nforged line\u{1b}[31m");
/// assert_eq!(log_safe("abcdef", 3), "abc…");
/// ```
pub fn log_safe(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c == '"' || c == '\'' || c == '\\' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::log_safe;

    #[test]
    fn control_characters_are_escaped_and_text_is_cut() {
        assert_eq!(
            log_safe("a\nforged line\x1b[31m\r\t\"q\" \\ é", 100),
            "a\\nforged line\\u{1b}[31m\\r\\t\"q\" \\ é"
        );
        assert_eq!(log_safe("abcdef", 3), "abc…");
        assert_eq!(log_safe("abc", 3), "abc");
        assert_eq!(log_safe("", 0), "");
    }
}
