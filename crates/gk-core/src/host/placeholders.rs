//! Turning the `?` placeholders plugins write into PostgreSQL's `$1, $2, …`.
//!
//! A `?` inside a string literal (`'…'`, with `''` escapes), a quoted identifier (`"…"`,
//! `` `…` ``), a dollar-quoted string (`$tag$…$tag$`) or a comment (`-- …`, `/* … */`) is text,
//! not a placeholder, and stays as it is.

/// Rewrites `?` placeholders as `$1`, `$2`, … and returns the SQL and the number found.
#[cfg(test)]
pub(crate) fn numbered(sql: &str) -> (String, usize) {
    rewrite(sql, |index| format!("${}", index + 1))
}

/// Replaces each `?` placeholder with `replacement(index)` (0-based) and returns the SQL and
/// the number of placeholders.
pub(crate) fn rewrite(sql: &str, mut replacement: impl FnMut(usize) -> String) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut count = 0;
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        let skipped = match c {
            '\'' | '"' | '`' => quoted(rest, c),
            '-' if rest.starts_with("--") => rest.find('\n').map_or(rest.len(), |i| i + 1),
            '/' if rest.starts_with("/*") => rest[2..].find("*/").map_or(rest.len(), |i| i + 4),
            '$' => dollar_quoted(rest).unwrap_or(1),
            '?' => {
                out.push_str(&replacement(count));
                count += 1;
                rest = &rest[1..];
                continue;
            }
            _ => c.len_utf8(),
        };
        out.push_str(&rest[..skipped]);
        rest = &rest[skipped..];
    }
    (out, count)
}

/// Counts the `?` placeholders of a statement for SQLite, refusing the forms SQLite numbers
/// or names on its own (`?NNN`, `:name`, `@name`, `$name`): those would bind arguments by
/// another rule than "one `?` per argument, in order".
pub(crate) fn sqlite_placeholders(sql: &str) -> Result<usize, String> {
    let mut count = 0;
    let mut rest = sql;
    let mut previous = ' ';
    while let Some(c) = rest.chars().next() {
        let skipped = match c {
            '\'' | '"' | '`' => quoted(rest, c),
            '[' => rest.find(']').map_or(rest.len(), |i| i + 1),
            '-' if rest.starts_with("--") => rest.find('\n').map_or(rest.len(), |i| i + 1),
            '/' if rest.starts_with("/*") => rest[2..].find("*/").map_or(rest.len(), |i| i + 4),
            '?' | ':' | '@' | '$' => {
                let next = rest[1..].chars().next().unwrap_or(' ');
                let named = c != '?' && (next.is_alphanumeric() || next == '_');
                let numbered = c == '?' && next.is_ascii_digit();
                let in_identifier = previous.is_alphanumeric() || previous == '_';
                if (named || numbered) && !in_identifier {
                    let end = rest[1..]
                        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                        .map_or(rest.len(), |i| i + 1);
                    return Err(format!(
                        "placeholder `{}` is not supported: write `?` for each argument",
                        &rest[..end]
                    ));
                }
                if c == '?' {
                    count += 1;
                }
                c.len_utf8()
            }
            _ => c.len_utf8(),
        };
        previous = rest[..skipped].chars().last().unwrap_or(' ');
        rest = &rest[skipped..];
    }
    Ok(count)
}

/// The length of a quoted run starting at `text[0] == quote`; a doubled quote is an escape.
fn quoted(text: &str, quote: char) -> usize {
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|(_, next)| *next == quote) {
                chars.next();
                continue;
            }
            return i + 1;
        }
    }
    text.len()
}

/// The length of a `$tag$…$tag$` string at the start of `text`, if it is one.
fn dollar_quoted(text: &str) -> Option<usize> {
    let close = text[1..].find('$')? + 1;
    let tag = &text[..=close];
    if !tag[1..tag.len() - 1]
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_')
        || tag[1..].starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let body = &text[tag.len()..];
    Some(
        body.find(tag)
            .map_or(text.len(), |end| tag.len() + end + tag.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn numbers_placeholders_outside_text() {
        for (sql, expected, count) in [
            (
                "SELECT * FROM t WHERE a = ? AND b = ?",
                "SELECT * FROM t WHERE a = $1 AND b = $2",
                2,
            ),
            (
                "SELECT '?', \"a?\", `b?` FROM t WHERE c = ?",
                "SELECT '?', \"a?\", `b?` FROM t WHERE c = $1",
                1,
            ),
            (
                "SELECT 'it''s ?' FROM t WHERE x = ?",
                "SELECT 'it''s ?' FROM t WHERE x = $1",
                1,
            ),
            (
                "SELECT 1 -- why?\nFROM t WHERE y = ?",
                "SELECT 1 -- why?\nFROM t WHERE y = $1",
                1,
            ),
            ("SELECT /* ? */ ? FROM t", "SELECT /* ? */ $1 FROM t", 1),
            (
                "SELECT $$ what? $$, $q$ ? $q$, ?",
                "SELECT $$ what? $$, $q$ ? $q$, $1",
                1,
            ),
            ("SELECT $1 FROM t", "SELECT $1 FROM t", 0),
            ("SELECT 'unterminated ?", "SELECT 'unterminated ?", 0),
            ("SELECT 'ü?', ?", "SELECT 'ü?', $1", 1),
        ] {
            assert_eq!(numbered(sql), (expected.to_owned(), count), "{sql}");
        }
    }
}
