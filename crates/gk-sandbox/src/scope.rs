//! Scope patterns: anchored, case-insensitive globs over names.
//!
//! `ticket*` matches `tickets` and `ticket_history`, never `xticket`; `*` alone matches every
//! name. For table names, `.` separates schema and table and a `*` never crosses it: `ticket*`
//! does not match `ticket_archive.users`.

use globset::{Glob, GlobBuilder, GlobMatcher};

/// One compiled scope list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// `*` was listed.
    any: bool,
    /// Entries without wildcards, lower-cased.
    exact: Vec<String>,
    /// Entries with wildcards.
    globs: Vec<GlobMatcher>,
}

/// How a name matched a [`Scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeMatch {
    /// Not at all.
    No,
    /// By `*` alone.
    Any,
    /// By a pattern with wildcards.
    Pattern,
    /// By an entry naming it exactly.
    Exact,
}

impl Scope {
    /// Compiles `entries`; `separator` is the character a `*` must not cross (`.` for tables).
    pub(crate) fn compile<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        separator: Option<char>,
    ) -> Result<Self, String> {
        let mut scope = Self::default();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err("an empty scope entry".to_owned());
            }
            if entry == "*" {
                scope.any = true;
            } else if entry.contains(['*', '?', '[', '{']) {
                let text = match separator {
                    Some(sep) => entry.replace(sep, "/"),
                    None => entry.to_owned(),
                };
                let glob: Glob = GlobBuilder::new(&text)
                    .case_insensitive(true)
                    .literal_separator(separator.is_some())
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| format!("`{entry}` is not a valid pattern: {e}"))?;
                scope.globs.push(glob.compile_matcher());
            } else {
                scope.exact.push(entry.to_lowercase());
            }
        }
        Ok(scope)
    }

    /// Whether the scope lists nothing.
    pub(crate) fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.globs.is_empty()
    }

    /// How `name` (parts joined by the separator) matches.
    pub(crate) fn matches(&self, parts: &[&str]) -> ScopeMatch {
        let dotted = parts.join(".").to_lowercase();
        if self.exact.contains(&dotted) {
            return ScopeMatch::Exact;
        }
        let slashed = parts.join("/");
        if self.globs.iter().any(|g| g.is_match(&slashed)) {
            return ScopeMatch::Pattern;
        }
        if self.any {
            return ScopeMatch::Any;
        }
        ScopeMatch::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_globs() {
        let scope = Scope::compile(["ticket*", "queue", "public.stats_*"], Some('.')).unwrap();
        for (name, expected) in [
            (&["tickets"][..], ScopeMatch::Pattern),
            (&["ticket_history"], ScopeMatch::Pattern),
            (&["TICKETS"], ScopeMatch::Pattern),
            (&["xticket"], ScopeMatch::No),
            (&["ticket_archive", "users"], ScopeMatch::No),
            (&["queue"], ScopeMatch::Exact),
            (&["Queue"], ScopeMatch::Exact),
            (&["queues"], ScopeMatch::No),
            (&["public", "stats_daily"], ScopeMatch::Pattern),
            (&["stats_daily"], ScopeMatch::No),
        ] {
            assert_eq!(scope.matches(name), expected, "{name:?}");
        }
        assert_eq!(
            Scope::compile(["*"], Some('.'))
                .unwrap()
                .matches(&["a", "b"]),
            ScopeMatch::Any
        );
        assert!(
            Scope::compile(["a[b"], None)
                .unwrap_err()
                .contains("`a[b` is not a valid pattern")
        );
    }
}
