//! The email guard: which recipients a plugin may write to.
//!
//! The recipient must be one bare address (`name@domain`): display names, angle brackets,
//! quotes, comments, lists and line breaks are refused, so `"a@example.com" <x@evil.org>` and
//! `a@example.com, x@evil.org` cannot sneak past. Scope entries: `@example.com` allows every
//! address whose domain is exactly example.com (not a subdomain, not `example.com.evil.org`);
//! a full address allows that address; `*` allows any address.

use std::collections::HashSet;

use gk_sdk::{PermissionType, ResourcePolicy};
use url::Host;

/// Characters allowed in the local part of an address (RFC 5322 dot-atom).
const LOCAL_PART_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";

/// The compiled `email` scope.
#[derive(Debug, Default)]
pub(crate) struct EmailRules {
    any: bool,
    domains: HashSet<String>,
    addresses: HashSet<String>,
}

impl EmailRules {
    pub(crate) fn compile(policy: &ResourcePolicy) -> Result<Self, String> {
        let mut rules = Self::default();
        for entry in policy
            .permissions_of(PermissionType::Email)
            .flat_map(|p| &p.scope)
        {
            let entry = entry.trim();
            if entry == "*" {
                rules.any = true;
            } else if let Some(domain) = entry.strip_prefix('@') {
                rules
                    .domains
                    .insert(normalise_domain(domain).map_err(|p| format!("`{entry}`: {p}"))?);
            } else {
                let (local, domain) =
                    parse_address(entry).map_err(|p| format!("`{entry}`: {p}"))?;
                rules.addresses.insert(format!("{local}@{domain}"));
            }
        }
        Ok(rules)
    }

    /// Checks one recipient; the error says why it is refused.
    pub(crate) fn check(&self, to: &str) -> Result<(), String> {
        let (local, domain) = parse_address(to)?;
        if self.any
            || self.domains.contains(&domain)
            || self.addresses.contains(&format!("{local}@{domain}"))
        {
            Ok(())
        } else {
            Err(format!(
                "recipient `{local}@{domain}` is not in the email scope"
            ))
        }
    }
}

/// Parses a bare address into its lower-cased local part and IDNA-normalised domain.
fn parse_address(text: &str) -> Result<(String, String), String> {
    let text = text.trim();
    let (local, domain) = text
        .rsplit_once('@')
        .ok_or_else(|| format!("`{text}` is not an email address"))?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_PART_SPECIALS.contains(c));
    if !local_ok {
        return Err(format!(
            "`{text}` is not one bare address (name@domain, no display name, quotes or lists)"
        ));
    }
    Ok((local.to_ascii_lowercase(), normalise_domain(domain)?))
}

fn normalise_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty()
        || domain.contains(|c: char| c.is_whitespace() || "<>\"(),;:[]\\@".contains(c))
    {
        return Err(format!("`{domain}` is not a mail domain"));
    }
    match Host::parse(domain) {
        Ok(Host::Domain(d)) if d.contains('.') => Ok(d.trim_end_matches('.').to_owned()),
        _ => Err(format!("`{domain}` is not a mail domain")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_strictly() {
        assert_eq!(
            parse_address(" Ann.Lee+x@Example.COM ").unwrap(),
            ("ann.lee+x".to_owned(), "example.com".to_owned())
        );
        assert_eq!(parse_address("a@bücher.de").unwrap().1, "xn--bcher-kva.de");
        for bad in [
            "ann",
            "@example.com",
            "a@",
            "a..b@x.com",
            "\"a\"@x.com",
            "A <a@x.com>",
            "a@x.com, b@y.com",
            "a@x.com\r\nBcc: b@y.com",
            "a@localhost",
            "a@[1.2.3.4]",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }
}
