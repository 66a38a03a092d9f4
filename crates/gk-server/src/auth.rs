//! Tokens: HS256 JWTs signed with the server's secret. The secret comes from configuration or,
//! on a fresh install, is generated once and kept in the data directory (mode 0600).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The file under the data directory that keeps a generated secret.
pub const SECRET_FILE: &str = "jwt-secret";

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including the admin API.
    Admin,
    /// Plugin calls and routes marked `auth`.
    Agent,
}

/// The claims of a GoatKit token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's login.
    pub sub: String,
    /// The user's role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// The user's numeric id in the host application, when the token carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    /// The user's email address, when the token carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Why a token or secret was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "missing bearer token: send `Authorization: Bearer <token>` (mint one with `gk token`)"
    )]
    Missing,
    /// The token is expired, malformed or signed with another secret.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The secret is too short to sign with.
    #[error("the token secret must be at least 32 bytes, got {0}")]
    WeakSecret(usize),
    /// The secret file could not be read or written.
    #[error("{path}: {source}")]
    SecretFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No randomness for a new secret.
    #[error("cannot generate a token secret: no system randomness")]
    NoRandomness,
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Signs requests between the nodes of a cluster (a key of its own, derived from the
    /// secret): they never carry a user's token.
    node_key: ring::hmac::Key,
    /// Tokens this secret verified, with their claims (see [`TokenKeys::verify`]). Hashed with
    /// foldhash rather than SipHash (a third of a cached check's cost, the token being some
    /// 200 bytes): only tokens signed with the secret are ever inserted, so nobody without it
    /// can choose the keys that would collide.
    verified: Arc<RwLock<HashMap<Box<str>, Claims, foldhash::fast::RandomState>>>,
}

/// The most verified tokens kept; when full, the expired go, or else all of them.
const VERIFIED_TOKENS_KEPT: usize = 4096;

/// How long a node's signed request stays good.
pub const NODE_PROOF_TTL: Duration = Duration::from_secs(30);

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a node proof signs.
fn node_message(node: &str, expires: u64, request: &str) -> String {
    format!("{node}\n{expires}\n{request}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::WeakSecret(secret.len()));
        }
        let derived = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            b"goatkit cluster node requests v1",
        );
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            node_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()),
            verified: Arc::default(),
        })
    }

    /// A proof that node `node` sends `request` (method, path and query), good for
    /// [`NODE_PROOF_TTL`]: `<node>.<expiry, Unix ms>.<HMAC, hex>`.
    pub fn node_proof(&self, node: &str, request: &str) -> String {
        let expires = now_ms().saturating_add(NODE_PROOF_TTL.as_millis() as u64);
        let tag = ring::hmac::sign(
            &self.node_key,
            node_message(node, expires, request).as_bytes(),
        );
        format!("{node}.{expires}.{}", hex::encode(tag.as_ref()))
    }

    /// Checks a [`TokenKeys::node_proof`] for `request`; the node's id.
    pub fn check_node_proof(&self, proof: &str, request: &str) -> Result<String, AuthError> {
        let invalid = |why: &str| AuthError::Invalid(format!("node proof: {why}"));
        let (rest, tag) = proof.rsplit_once('.').ok_or_else(|| invalid("malformed"))?;
        let (node, expires) = rest.rsplit_once('.').ok_or_else(|| invalid("malformed"))?;
        let expires: u64 = expires.parse().map_err(|_| invalid("malformed"))?;
        let now = now_ms();
        if expires < now || expires > now.saturating_add(NODE_PROOF_TTL.as_millis() as u64) {
            return Err(invalid("expired"));
        }
        let tag = hex::decode(tag).map_err(|_| invalid("malformed"))?;
        ring::hmac::verify(
            &self.node_key,
            node_message(node, expires, request).as_bytes(),
            &tag,
        )
        .map_err(|_| invalid("bad signature"))?;
        Ok(node.to_owned())
    }

    /// Mints a token for `user` with `role`, valid for `ttl`.
    pub fn mint(&self, user: &str, role: Role, ttl: Duration) -> Result<String, AuthError> {
        let iat = now();
        let claims = Claims {
            sub: user.to_owned(),
            role,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            uid: None,
            email: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Checks a token's signature, algorithm and expiry.
    ///
    /// A token this secret verified before is known by its exact text, and only its expiry is
    /// checked again: clients send the same token with every request, and decoding and
    /// checking it (two base64 parts, two JSON documents, an HMAC key schedule) was the
    /// largest cost of a plugin call over HTTP after the socket. Only tokens that passed are
    /// kept, so a caller without the secret cannot fill the cache.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now())
    }

    /// [`TokenKeys::verify`] at `now` (seconds since the Unix epoch) for tokens already kept.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let kept = self
            .verified
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned();
        if let Some(claims) = kept {
            // As jsonwebtoken decides without leeway: good through the second of `exp`.
            if claims.exp >= now {
                return Ok(claims);
            }
            self.verified
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(token);
            return Err(AuthError::Invalid("ExpiredSignature".into()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_TOKENS_KEPT {
            verified.retain(|_, kept| kept.exp >= now);
            if verified.len() >= VERIFIED_TOKENS_KEPT {
                verified.clear();
            }
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }
}

/// The secret: `configured` when given, else the one kept in `data_dir`, generated (and
/// reported as new) when there is none yet.
pub fn load_or_generate_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<(Vec<u8>, bool), AuthError> {
    if let Some(secret) = configured {
        return Ok((secret.trim().as_bytes().to_vec(), false));
    }
    let path = secret_path(data_dir);
    let file_error = |source| AuthError::SecretFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok((text.trim().as_bytes().to_vec(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e)),
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| AuthError::NoRandomness)?;
    let secret = hex::encode(bytes);
    write_private(&path, &secret).map_err(file_error)?;
    Ok((secret.into_bytes(), true))
}

/// Where a generated secret is kept.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRET_FILE)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let keys = TokenKeys::from_secret(&[7; 32]).unwrap();
        let token = keys
            .mint("ada", Role::Admin, Duration::from_secs(60))
            .unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ada", Role::Admin));

        let other = TokenKeys::from_secret(&[8; 32]).unwrap();
        assert!(matches!(other.verify(&token), Err(AuthError::Invalid(_))));
        assert!(matches!(
            keys.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
        let expired = keys.mint("ada", Role::Admin, Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let error = keys.verify(&expired).unwrap_err().to_string();
        assert!(error.contains("xpired"), "{error}");
        assert!(matches!(
            TokenKeys::from_secret(b"short"),
            Err(AuthError::WeakSecret(5))
        ));
    }

    #[test]
    fn a_verified_token_is_kept_until_it_expires_and_only_its_exact_text() {
        let keys = TokenKeys::from_secret(&[7; 32]).unwrap();
        let token = keys
            .mint("ada", Role::Agent, Duration::from_secs(60))
            .unwrap();
        let first = keys.verify(&token).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), first);
        assert_eq!(keys.verified.read().unwrap().len(), 1);
        // Another signature on the same claims is no kept token: it is checked, and refused.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut forged = signature.as_bytes().to_vec();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{signed}.{}", String::from_utf8(forged).unwrap());
        assert!(keys.verify(&forged).is_err());
        // Another secret's keys never saw it.
        let other = TokenKeys::from_secret(&[8; 32]).unwrap();
        assert!(other.verify(&token).is_err());
        // Through the second of its expiry, and not after.
        assert!(keys.verify_at(&token, first.exp).is_ok());
        let error = keys.verify_at(&token, first.exp + 1).unwrap_err();
        assert!(error.to_string().contains("xpired"), "{error}");
        assert!(keys.verified.read().unwrap().is_empty());
        // Refused tokens are never kept.
        assert!(keys.verify("not.a.token").is_err());
        assert!(keys.verified.read().unwrap().is_empty());
    }

    #[test]
    fn the_kept_tokens_are_bounded() {
        let keys = TokenKeys::from_secret(&[7; 32]).unwrap();
        for n in 0..VERIFIED_TOKENS_KEPT + 10 {
            let token = keys
                .mint(&format!("user{n}"), Role::Agent, Duration::from_secs(60))
                .unwrap();
            keys.verify(&token).unwrap();
        }
        assert!(keys.verified.read().unwrap().len() <= VERIFIED_TOKENS_KEPT);
    }

    #[test]
    fn a_node_proof_holds_for_its_request_and_secret_only() {
        let keys = TokenKeys::from_secret(&[7; 32]).unwrap();
        let request = "GET /api/v1/cluster/logs?limit=10";
        let proof = keys.node_proof("node-a", request);
        assert_eq!(keys.check_node_proof(&proof, request).unwrap(), "node-a");
        let refused = |proof: &str, request: &str| keys.check_node_proof(proof, request).is_err();
        assert!(refused(&proof, "GET /api/v1/cluster/logs?limit=1000"));
        assert!(refused(&proof.replacen("node-a", "node-b", 1), request));
        let other = TokenKeys::from_secret(&[8; 32]).unwrap();
        assert!(other.check_node_proof(&proof, request).is_err());
        // A node proof is no token, and a token no node proof.
        assert!(keys.verify(&proof).is_err());
        let token = keys
            .mint("ada", Role::Admin, Duration::from_secs(60))
            .unwrap();
        assert!(refused(&token, request));
        // Expired, or dated too far ahead.
        let (node, rest) = proof.split_once('.').unwrap();
        let (_, tag) = rest.split_once('.').unwrap();
        assert!(refused(&format!("{node}.1.{tag}"), request));
        assert!(refused(&format!("{node}.{}.{tag}", u64::MAX), request));
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, new) = load_or_generate_secret(None, dir.path()).unwrap();
        assert!(new);
        assert_eq!(first.len(), 64);
        let (again, new) = load_or_generate_secret(None, dir.path()).unwrap();
        assert!(!new);
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(secret_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (configured, new) = load_or_generate_secret(Some(" s3cret "), dir.path()).unwrap();
        assert_eq!((configured.as_slice(), new), (&b"s3cret"[..], false));
    }
}
