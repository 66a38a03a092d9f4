//! The `gk` commands that work on files: keys, signatures and packages.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gk_core::signing::{TrustedKeys, generate_keypair, sign_file, verify_file};

fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn write_new(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `gk keygen`: writes `<name>.key` (private, mode 0600) and `<name>.pub` into `dir`.
pub(crate) fn keygen(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (private, public) = generate_keypair()?;
    let (key, pubkey) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    for path in [&key, &pubkey] {
        if path.exists() {
            bail!(
                "{} exists already (an existing key is never overwritten): choose another --name",
                path.display()
            );
        }
    }
    write_new(&key, &format!("{private}\n"), true)?;
    write_new(&pubkey, &format!("{public}\n"), false)?;
    Ok((key, pubkey))
}

/// `gk sign`: signs `file` with the private key in `key_file`; returns the signature's path.
pub(crate) fn sign(file: &Path, key_file: &Path) -> anyhow::Result<PathBuf> {
    let private = read_text(key_file, "private key")?;
    sign_file(file, private.trim()).with_context(|| format!("cannot sign {}", file.display()))
}

/// `gk verify`: checks `file`'s signature against public keys given as files or as hex.
pub(crate) fn verify(file: &Path, pubkeys: &[String]) -> anyhow::Result<()> {
    let mut hex_keys = Vec::new();
    for key in pubkeys {
        let path = Path::new(key);
        if path.is_file() {
            hex_keys.push(read_text(path, "public key")?.trim().to_owned());
        } else {
            hex_keys.push(key.trim().to_owned());
        }
    }
    let trusted = TrustedKeys::from_hex(hex_keys.iter().map(String::as_str))?;
    verify_file(file, &trusted).with_context(|| format!("{} is not verified", file.display()))?;
    Ok(())
}

/// `gk package`: builds a package of the plugin directory `dir` at `output`.
pub(crate) async fn package(dir: &Path, output: &Path) -> anyhow::Result<String> {
    let manifest = gk_core::packaging::build(dir, output)
        .await
        .with_context(|| format!("cannot package {}", dir.display()))?;
    Ok(manifest.name)
}
