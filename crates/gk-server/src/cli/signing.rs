//! `gk keygen`, `gk sign` and `gk verify`: ed25519 keys for plugins, signatures of plugin files
//! (`<file>.sig`) and their check against trusted public keys.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gk_core::signing::{TrustedKeys, generate_keypair, sign_file, verify_file};

/// The arguments of `gk keygen`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Directory to write the keys into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// File name of the keys, without extension.
    #[arg(long, default_value = "goatkit")]
    name: String,
}

/// The arguments of `gk sign`.
#[derive(Debug, clap::Args)]
pub(crate) struct SignArgs {
    /// The file to sign.
    file: PathBuf,
    /// The private key file made by `gk keygen`.
    #[arg(long)]
    key: PathBuf,
}

/// The arguments of `gk verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The signed file.
    file: PathBuf,
    /// A public key file or hex key (repeat for several).
    #[arg(long, required = true)]
    pubkey: Vec<String>,
}

/// `gk keygen`: writes `<name>.key` (private, mode 0600) and `<name>.pub` into `--out`.
pub(crate) fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let (key, pubkey) = write_keypair(&args.out, &args.name)?;
    println!(
        "private key: {} (keep it secret)\npublic key:  {} (trust it with `gk serve --trusted-keys DIR`)",
        key.display(),
        pubkey.display()
    );
    Ok(())
}

/// `gk sign`: signs the file with the private key file; prints the signature's path.
pub(crate) fn sign(args: SignArgs) -> anyhow::Result<()> {
    let private = read_text(&args.key, "private key")?;
    let signature = sign_file(&args.file, private.trim())
        .with_context(|| format!("cannot sign {}", args.file.display()))?;
    println!("{}", signature.display());
    Ok(())
}

/// `gk verify`: checks the file's signature against public keys given as files or as hex.
pub(crate) fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let VerifyArgs { file, pubkey } = args;
    let mut hex_keys = Vec::new();
    for key in &pubkey {
        let path = Path::new(key);
        if path.is_file() {
            hex_keys.push(read_text(path, "public key")?.trim().to_owned());
        } else {
            hex_keys.push(key.trim().to_owned());
        }
    }
    let trusted = TrustedKeys::from_hex(hex_keys.iter().map(String::as_str))?;
    verify_file(&file, &trusted).with_context(|| format!("{} is not verified", file.display()))?;
    println!("{}: signature verified", file.display());
    Ok(())
}

/// Writes a new key pair as `<name>.key` and `<name>.pub` into `dir`; never overwrites a key.
fn write_keypair(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
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
