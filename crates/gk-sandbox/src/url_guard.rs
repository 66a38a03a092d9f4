//! The URL guard: which hosts a plugin may send HTTP requests to.
//!
//! URLs are parsed with the WHATWG parser of the `url` crate, so the host compared is the one a
//! client would connect to: lower-cased, IDNA-encoded, with userinfo, port, path, query and
//! fragment ignored, and numeric IPv4 forms (`2130706433`, `0x7f.1`) turned into dotted quads.
//!
//! Scope entries: `*.example.com` matches every subdomain of example.com but **not**
//! example.com itself (list both to allow both); any other entry must equal the host. `*` alone
//! allows every host name, but never a literal IP address or `localhost`: those need an entry
//! of their own. An empty scope allows nothing.

use std::collections::HashSet;

use gk_sdk::{PermissionType, ResourcePolicy};
use url::{Host, Url};

/// The compiled `http` scope.
#[derive(Debug, Default)]
pub(crate) struct HttpRules {
    any_name: bool,
    exact: HashSet<String>,
    /// `.example.com` for an entry `*.example.com`.
    suffixes: Vec<String>,
}

impl HttpRules {
    pub(crate) fn compile(policy: &ResourcePolicy) -> Result<Self, String> {
        let mut rules = Self::default();
        for entry in policy
            .permissions_of(PermissionType::Http)
            .flat_map(|p| &p.scope)
        {
            let entry = entry.trim();
            if entry == "*" {
                rules.any_name = true;
            } else if let Some(domain) = entry.strip_prefix("*.") {
                match normalise_entry(domain).map_err(|p| format!("`{entry}`: {p}"))? {
                    Host::Domain(domain) => rules.suffixes.push(format!(".{domain}")),
                    _ => {
                        return Err(format!(
                            "`{entry}`: a wildcard applies to domain names, not IP addresses"
                        ));
                    }
                }
            } else {
                rules.exact.insert(host_key(
                    &normalise_entry(entry).map_err(|p| format!("`{entry}`: {p}"))?,
                ));
            }
        }
        Ok(rules)
    }

    /// Checks `url`: whether its host is named exactly in the scope (`true`) or reached through
    /// `*` or `*.domain`; the error says why it is refused.
    pub(crate) fn check(&self, url: &str) -> Result<bool, String> {
        let parsed =
            Url::parse(url).map_err(|e| format!("`{url}` is not a valid absolute URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "scheme `{}` is not allowed: only http and https",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let key = host_key(&host.to_owned());
        if self.exact.contains(&key) {
            return Ok(true);
        }
        match &host {
            Host::Ipv4(_) | Host::Ipv6(_) => Err(format!(
                "`{key}` is an IP address: it needs a scope entry of its own"
            )),
            Host::Domain(_) if is_localhost(&key) => Err(format!(
                "`{key}` is local: it needs a scope entry of its own"
            )),
            Host::Domain(_)
                if self.any_name || self.suffixes.iter().any(|s| key.ends_with(s.as_str())) =>
            {
                Ok(false)
            }
            Host::Domain(_) => Err(format!("host `{key}` is not in the http scope")),
        }
    }
}

/// Parses a scope entry as a host the way URLs are parsed.
fn normalise_entry(entry: &str) -> Result<Host<String>, String> {
    if entry.contains(['/', '@', '?', '#']) || (entry.contains(':') && !entry.starts_with('[')) {
        return Err("scope entries are host names: leave out scheme, port and path".to_owned());
    }
    let url =
        Url::parse(&format!("http://{entry}/")).map_err(|e| format!("not a host name: {e}"))?;
    url.host()
        .map(|h| h.to_owned())
        .ok_or_else(|| "not a host name".to_owned())
}

/// The comparable form of a host: domains without a trailing dot, IPs in canonical form.
fn host_key(host: &Host<String>) -> String {
    match host {
        Host::Domain(domain) => domain.trim_end_matches('.').to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => format!("[{ip}]"),
    }
}

fn is_localhost(domain: &str) -> bool {
    domain == "localhost" || domain.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::{Access, Permission};

    fn rules(scope: &[&str]) -> Result<HttpRules, String> {
        let mut policy = ResourcePolicy::default_for("p");
        policy.permissions = vec![
            Permission::new(PermissionType::Http, Access::Read).with_scope(scope.iter().copied()),
        ];
        HttpRules::compile(&policy)
    }

    #[test]
    fn scope_entries_are_validated() {
        assert!(
            rules(&["https://api.example.com"])
                .unwrap_err()
                .contains("leave out scheme")
        );
        assert!(
            rules(&["api.example.com:443"])
                .unwrap_err()
                .contains("leave out scheme")
        );
        assert!(
            rules(&["*.127.0.0.1"])
                .unwrap_err()
                .contains("not IP addresses")
        );
        assert!(rules(&["[::1]", "10.0.0.1", "BÜCHER.de"]).is_ok());
    }

    #[test]
    fn idn_entries_match_punycode_hosts() {
        let r = rules(&["bücher.de"]).unwrap();
        assert_eq!(r.check("https://xn--bcher-kva.de/x"), Ok(true));
        assert_eq!(r.check("https://BÜCHER.de/x"), Ok(true));
    }

    #[test]
    fn only_a_host_named_exactly_counts_as_named() {
        let r = rules(&["*", "*.example.com", "intranet.corp", "10.1.2.3"]).unwrap();
        assert_eq!(r.check("http://intranet.corp/x"), Ok(true));
        assert_eq!(r.check("http://10.1.2.3:8080/x"), Ok(true));
        assert_eq!(r.check("http://api.example.com/x"), Ok(false));
        assert_eq!(r.check("http://127.0.0.1.nip.io/x"), Ok(false));
    }
}
