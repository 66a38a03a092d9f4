//! Package seals: every `gk_packages` row a node writes carries an HMAC over what decides what
//! the other nodes install (plugin name, file name, SHA-256 of the bytes, installed or removed),
//! keyed by a secret every node of the cluster has and the database does not. A row written
//! by anything else — a database account of another application, a restored backup of another
//! cluster, an attacker with SQL access — is refused by every node instead of installed as code.
//!
//! What a seal does not stop: a row this cluster sealed earlier, replayed (an older version of
//! a plugin, or its removal). Signature checking (`require_signatures`) stays the control over
//! who may author a plugin at all.

use ring::hmac;

use crate::StoredPackage;

/// What the key is derived for (so the same secret keys nothing else the same way).
const PURPOSE: &[u8] = b"goatkit cluster package seal v1";

/// Seals and checks stored packages with the cluster's key.
#[derive(Clone)]
pub struct PackageSeal {
    key: hmac::Key,
}

impl std::fmt::Debug for PackageSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageSeal").finish_non_exhaustive()
    }
}

impl PackageSeal {
    /// The seal keyed from `secret`, the same on every node (gk-server passes its
    /// `token_secret`); the key is derived for this one purpose.
    pub fn from_secret(secret: &[u8]) -> Self {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), PURPOSE);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The fields sealed, each length-prefixed so no two rows share a message.
    fn message(name: &str, file_name: &str, sha256: &str, installed: bool) -> Vec<u8> {
        let mut message = Vec::with_capacity(name.len() + file_name.len() + sha256.len() + 32);
        for field in [name, file_name, sha256] {
            message.extend_from_slice(&(field.len() as u64).to_be_bytes());
            message.extend_from_slice(field.as_bytes());
        }
        message.push(u8::from(installed));
        message
    }

    /// The seal of a row holding these fields, in hex.
    pub(crate) fn seal(
        &self,
        name: &str,
        file_name: &str,
        sha256: &str,
        installed: bool,
    ) -> String {
        let message = Self::message(name, file_name, sha256, installed);
        hex::encode(hmac::sign(&self.key, &message))
    }

    /// Whether `package`'s seal is this cluster's for its fields (in constant time).
    pub(crate) fn verify(&self, package: &StoredPackage) -> bool {
        let Ok(tag) = hex::decode(&package.seal) else {
            return false;
        };
        let message = Self::message(
            &package.name,
            &package.file_name,
            &package.sha256,
            package.installed,
        );
        hmac::verify(&self.key, &message, &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(seal: &PackageSeal, installed: bool) -> StoredPackage {
        StoredPackage {
            name: "stats".into(),
            file_name: "stats.wasm".into(),
            sha256: "ab".repeat(32),
            content: Vec::new(),
            signature: None,
            installed,
            changed: chrono::Utc::now(),
            changed_by: "ada".into(),
            seal: seal.seal("stats", "stats.wasm", &"ab".repeat(32), installed),
        }
    }

    #[test]
    fn a_seal_holds_for_its_fields_and_key_only() {
        let seal = PackageSeal::from_secret(b"the cluster's secret");
        let sealed = package(&seal, true);
        assert!(seal.verify(&sealed));
        assert!(seal.verify(&package(&seal, false)));
        // Any sealed field changed, or another key, or no seal: refused.
        let changed = [
            StoredPackage {
                sha256: "cd".repeat(32),
                ..sealed.clone()
            },
            StoredPackage {
                file_name: "../stats.wasm".into(),
                ..sealed.clone()
            },
            StoredPackage {
                name: "other".into(),
                ..sealed.clone()
            },
            StoredPackage {
                installed: false,
                ..sealed.clone()
            },
            StoredPackage {
                seal: String::new(),
                ..sealed.clone()
            },
            StoredPackage {
                seal: "zz".into(),
                ..sealed.clone()
            },
        ];
        for row in &changed {
            assert!(!seal.verify(row), "{row:?}");
        }
        assert!(!PackageSeal::from_secret(b"another secret").verify(&sealed));
        // Length prefixes: moving bytes between fields changes the seal.
        assert_ne!(
            seal.seal("ab", "c.wasm", "x", true),
            seal.seal("a", "bc.wasm", "x", true)
        );
    }
}
