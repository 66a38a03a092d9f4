//! Plugin signatures with ed25519 (ring): `<file>.sig` holds, in hex, the signature of the
//! SHA-256 digest of the file. Trusted public keys come from configuration (a directory of
//! `*.pub` files, or inline hex). Surrounding white space in hex is tolerated; anything else
//! wrong is an error that says what.

use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Why a signature check or a signing operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The file has no `.sig` beside it.
    #[error("{file} is not signed: {sig} is missing")]
    Missing {
        /// The signed file.
        file: String,
        /// The signature file expected.
        sig: String,
    },
    /// Something is not hex of the right length.
    #[error("{what} is not valid: {problem}")]
    Malformed {
        /// Which value (a signature file, a key).
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// No trusted key verifies the signature.
    #[error(
        "{file}: the signature does not match the file under any of the {keys} trusted keys (tampered, or signed with another key)"
    )]
    Invalid {
        /// The signed file.
        file: String,
        /// How many trusted keys were tried.
        keys: usize,
    },
    /// Signatures are required and no trusted key is configured.
    #[error("signatures are required but no trusted public key is configured")]
    NoTrustedKeys,
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
}

fn io(path: &Path, error: std::io::Error) -> SignatureError {
    SignatureError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

fn decode(what: &str, text: &str, length: usize) -> Result<Vec<u8>, SignatureError> {
    let bytes = hex::decode(text.trim()).map_err(|e| SignatureError::Malformed {
        what: what.to_owned(),
        problem: format!("not hex ({e})"),
    })?;
    if bytes.len() != length && length != 0 {
        return Err(SignatureError::Malformed {
            what: what.to_owned(),
            problem: format!("{} bytes where {length} are expected", bytes.len()),
        });
    }
    Ok(bytes)
}

/// A new signing key: (private key as hex of its PKCS#8 document, public key as hex).
pub fn generate_keypair() -> Result<(String, String), SignatureError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SignatureError::Malformed {
        what: "key generation".into(),
        problem: "no randomness".into(),
    })?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| SignatureError::Malformed {
            what: "generated key".into(),
            problem: e.to_string(),
        })?;
    Ok((
        hex::encode(pkcs8.as_ref()),
        hex::encode(pair.public_key().as_ref()),
    ))
}

/// The signature file of `file`: `<file>.sig`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn digest(file: &Path) -> Result<ring::digest::Digest, SignatureError> {
    let bytes = std::fs::read(file).map_err(|e| io(file, e))?;
    Ok(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

/// Signs `file` with a private key (hex PKCS#8) and writes `<file>.sig`; returns its path.
pub fn sign_file(file: &Path, private_key_hex: &str) -> Result<PathBuf, SignatureError> {
    let pkcs8 = decode("private key", private_key_hex, 0)?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| SignatureError::Malformed {
        what: "private key".into(),
        problem: e.to_string(),
    })?;
    let signature = pair.sign(digest(file)?.as_ref());
    let path = signature_path(file);
    std::fs::write(&path, format!("{}\n", hex::encode(signature.as_ref())))
        .map_err(|e| io(&path, e))?;
    Ok(path)
}

/// The public keys a signature may be made with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<Vec<u8>>,
}

impl TrustedKeys {
    /// Keys given as hex.
    pub fn from_hex<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, SignatureError> {
        let keys = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| decode(&format!("trusted key {}", i + 1), key, 32))
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Every `*.pub` file of a directory (one hex key each).
    pub fn from_dir(dir: &Path) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "pub"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| io(&file, e))?;
            keys.push(decode(&file.display().to_string(), &text, 32)?);
        }
        Ok(Self { keys })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks `<file>.sig` against the trusted keys.
pub fn verify_file(file: &Path, trusted: &TrustedKeys) -> Result<(), SignatureError> {
    let bytes = std::fs::read(file).map_err(|e| io(file, e))?;
    verify_bytes(file, &bytes, trusted)
}

/// Checks `<file>.sig` against the trusted keys for `bytes`, the content of `file` as it was
/// read once: what is then loaded is what was checked, whatever happens to the file meanwhile.
pub fn verify_bytes(
    file: &Path,
    bytes: &[u8],
    trusted: &TrustedKeys,
) -> Result<(), SignatureError> {
    if trusted.is_empty() {
        return Err(SignatureError::NoTrustedKeys);
    }
    let sig_path = signature_path(file);
    let text = match std::fs::read_to_string(&sig_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignatureError::Missing {
                file: file.display().to_string(),
                sig: sig_path.display().to_string(),
            });
        }
        Err(e) => return Err(io(&sig_path, e)),
    };
    let signature = decode(&sig_path.display().to_string(), &text, 64)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let verified = trusted.keys.iter().any(|key| {
        UnparsedPublicKey::new(&ED25519, key)
            .verify(digest.as_ref(), &signature)
            .is_ok()
    });
    if verified {
        Ok(())
    } else {
        Err(SignatureError::Invalid {
            file: file.display().to_string(),
            keys: trusted.keys.len(),
        })
    }
}

/// Whether plugins must be signed, and by whom.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    /// Refuse unsigned or badly signed plugins (`GOATFLOW_REQUIRE_SIGNATURES=1`).
    pub required: bool,
    /// The keys signatures are checked against.
    pub trusted: TrustedKeys,
}

impl SignaturePolicy {
    /// Checks a plugin file on load and on every reload: an error when signatures are required
    /// and the check fails; otherwise a warning, and the plugin loads.
    pub fn check(&self, file: &Path) -> Result<(), SignatureError> {
        if !self.checks_anything() {
            return self.check_bytes(file, &[]);
        }
        let bytes = std::fs::read(file).map_err(|e| io(file, e))?;
        self.check_bytes(file, &bytes)
    }

    /// Whether a check reads anything: signatures required, or trusted keys configured.
    pub fn checks_anything(&self) -> bool {
        self.required || !self.trusted.is_empty()
    }

    /// [`check`](Self::check) of `bytes`, the content of `file` read once.
    pub fn check_bytes(&self, file: &Path, bytes: &[u8]) -> Result<(), SignatureError> {
        if !self.checks_anything() {
            // Said once per process, not for every plugin and every reload.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "no trusted keys are configured: plugins load without their signatures being checked (configure trusted_keys_dir, or require_signatures)"
                );
            }
            tracing::debug!(file = %file.display(), "signature not checked: no trusted keys");
            return Ok(());
        }
        match verify_bytes(file, bytes, &self.trusted) {
            Ok(()) => Ok(()),
            Err(error) if self.required => Err(error),
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "loading a plugin whose signature is not verified");
                Ok(())
            }
        }
    }
}

/// What a plugin file's signature says, as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum SignatureState {
    /// A trusted key verifies the file's signature.
    Verified,
    /// The file has no `.sig` beside it (it loads because signatures are not required).
    Unsigned,
    /// The signature does not verify, or cannot be read: why.
    Invalid(String),
    /// No trusted key is configured, so nothing is checked.
    NotChecked,
    /// The plugin was registered in the process: there is no file to sign.
    Embedded,
}

impl SignaturePolicy {
    /// The state of `file`'s signature under these keys (reads and hashes the file).
    pub fn state(&self, file: &Path) -> SignatureState {
        if self.trusted.is_empty() {
            return SignatureState::NotChecked;
        }
        match verify_file(file, &self.trusted) {
            Ok(()) => SignatureState::Verified,
            Err(SignatureError::Missing { .. }) => SignatureState::Unsigned,
            Err(error) => SignatureState::Invalid(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_file(dir: &Path, content: &[u8]) -> (PathBuf, String) {
        let (private, public) = generate_keypair().unwrap();
        let file = dir.join("plugin.wasm");
        std::fs::write(&file, content).unwrap();
        sign_file(&file, &private).unwrap();
        (file, public)
    }

    #[test]
    fn good_missing_tampered_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let (file, public) = signed_file(dir.path(), b"module bytes");
        let trusted = TrustedKeys::from_hex([format!("  {public}\n").as_str()]).unwrap();
        assert_eq!(verify_file(&file, &trusted), Ok(()));

        let (_, other_public) = generate_keypair().unwrap();
        let wrong = TrustedKeys::from_hex([other_public.as_str()]).unwrap();
        assert!(matches!(
            verify_file(&file, &wrong),
            Err(SignatureError::Invalid { keys: 1, .. })
        ));

        std::fs::write(&file, b"module bytes, changed").unwrap();
        assert!(matches!(
            verify_file(&file, &trusted),
            Err(SignatureError::Invalid { .. })
        ));

        std::fs::remove_file(signature_path(&file)).unwrap();
        assert!(matches!(
            verify_file(&file, &trusted),
            Err(SignatureError::Missing { .. })
        ));

        std::fs::write(signature_path(&file), "zz-not-hex").unwrap();
        let err = verify_file(&file, &trusted).unwrap_err().to_string();
        assert!(err.contains("is not valid: not hex"), "{err}");
        assert_eq!(
            verify_file(&file, &TrustedKeys::default()),
            Err(SignatureError::NoTrustedKeys)
        );
    }

    #[test]
    fn required_refuses_and_optional_warns() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unsigned.wasm");
        std::fs::write(&file, b"x").unwrap();
        let (_, public) = generate_keypair().unwrap();
        let trusted = TrustedKeys::from_hex([public.as_str()]).unwrap();
        let required = SignaturePolicy {
            required: true,
            trusted: trusted.clone(),
        };
        assert!(matches!(
            required.check(&file),
            Err(SignatureError::Missing { .. })
        ));
        let optional = SignaturePolicy {
            required: false,
            trusted,
        };
        assert_eq!(optional.check(&file), Ok(()));
    }

    #[test]
    fn states_for_the_admin_list() {
        let dir = tempfile::tempdir().unwrap();
        let (signed, public) = signed_file(dir.path(), b"module bytes");
        let unsigned = dir.path().join("unsigned.wasm");
        std::fs::write(&unsigned, b"x").unwrap();
        let policy = SignaturePolicy {
            required: false,
            trusted: TrustedKeys::from_hex([public.as_str()]).unwrap(),
        };
        assert_eq!(policy.state(&signed), SignatureState::Verified);
        assert_eq!(policy.state(&unsigned), SignatureState::Unsigned);
        std::fs::write(&signed, b"module bytes, changed").unwrap();
        assert!(
            matches!(&policy.state(&signed), SignatureState::Invalid(why) if why.contains("does not match")),
            "{:?}",
            policy.state(&signed)
        );
        assert_eq!(
            SignaturePolicy::default().state(&unsigned),
            SignatureState::NotChecked
        );
    }

    #[test]
    fn keys_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = generate_keypair().unwrap();
        std::fs::write(dir.path().join("a.pub"), format!("{a}\n")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        assert_eq!(TrustedKeys::from_dir(dir.path()).unwrap().len(), 1);
        std::fs::write(dir.path().join("b.pub"), "abcd").unwrap();
        let err = TrustedKeys::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("b.pub is not valid: 2 bytes where 32 are expected"),
            "{err}"
        );
    }
}
