//! Plugin packages: a ZIP holding `plugin.yaml` (or `manifest.yaml`), the module or binary, and
//! optional `templates/`, `static/`, `i18n/`.
//!
//! Extraction trusts nothing the archive says: it refuses symbolic links, absolute paths, `..`,
//! duplicate names, a file over [`MAX_FILE_BYTES`], more than [`MAX_TOTAL_BYTES`] in all and
//! more than [`MAX_ENTRIES`] entries — counting the bytes actually inflated, not the sizes the
//! archive claims — and writes into a temporary directory that is moved into place only when
//! complete, so a bad package never replaces a good installation.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use async_zip::base::write::ZipFileWriter;
// The `read1` module async_zip 0.0.19 recommends instead exposes raw central-directory records;
// the limits this module enforces itself (inflated bytes, entries, names, links) are what keep
// hostile archives out, whichever reader is used. Moving to `read1` is a follow-up.
#[allow(deprecated)]
use async_zip::tokio::read::fs::ZipFileReader;
use async_zip::{Compression, ZipEntryBuilder};
use futures::io::AsyncReadExt;
use gk_sdk::{MANIFEST_FILE_NAMES, PluginManifest};

/// The largest file a package may hold.
pub const MAX_FILE_BYTES: u64 = 100 << 20;
/// The most a package may inflate to.
pub const MAX_TOTAL_BYTES: u64 = 500 << 20;
/// The most entries a package may hold.
pub const MAX_ENTRIES: usize = 1000;

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The archive breaks a rule.
    #[error("package {package}: {problem}")]
    Refused {
        /// The archive.
        package: String,
        /// Which rule, and where.
        problem: String,
    },
    /// The archive is not a readable ZIP.
    #[error("package {package} is not a readable ZIP: {message}")]
    Zip {
        /// The archive.
        package: String,
        /// What the reader said.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
}

fn io(path: &Path, error: impl std::fmt::Display) -> PackageError {
    PackageError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// A safe relative path for an entry name, or why it is not one.
fn entry_path(name: &str) -> Result<PathBuf, String> {
    if name.contains('\\') || name.contains('\0') {
        return Err(format!("entry `{name}` has a backslash or NUL in its name"));
    }
    let path = Path::new(name);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("entry `{name}` climbs out with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry `{name}` is an absolute path"));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(format!("entry `{name}` has no name"));
    }
    Ok(clean)
}

/// Extracts `package` into `plugins_dir/<name>` (the name from its manifest) and returns that
/// directory and the manifest. An existing installation is replaced only once the new one is
/// complete.
#[allow(deprecated)] // see the import of ZipFileReader
pub async fn extract(
    package: &Path,
    plugins_dir: &Path,
) -> Result<(PathBuf, PluginManifest), PackageError> {
    let label = package.display().to_string();
    let refused = |problem: String| PackageError::Refused {
        package: label.clone(),
        problem,
    };
    let reader = ZipFileReader::new(package)
        .await
        .map_err(|e| PackageError::Zip {
            package: label.clone(),
            message: e.to_string(),
        })?;
    let entries = reader.file().entries();
    if entries.len() > MAX_ENTRIES {
        return Err(refused(format!(
            "{} entries, more than the {MAX_ENTRIES} allowed",
            entries.len()
        )));
    }

    tokio::fs::create_dir_all(plugins_dir)
        .await
        .map_err(|e| io(plugins_dir, e))?;
    let staging = plugins_dir.join(format!(".incoming-{}-{}", std::process::id(), unique()));
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|e| io(&staging, e))?;
    let result = async {
        let mut seen = HashSet::new();
        let mut total: u64 = 0;
        for (index, entry) in entries.iter().enumerate() {
            let name = entry
                .filename()
                .as_str()
                .map_err(|_| refused(format!("entry {index} has a name that is not UTF-8")))?
                .to_owned();
            let path = entry_path(&name).map_err(&refused)?;
            if !seen.insert(path.clone()) {
                return Err(refused(format!("entry `{name}` appears twice")));
            }
            const S_IFMT: u16 = 0o170_000;
            const S_IFLNK: u16 = 0o120_000;
            if entry
                .unix_permissions()
                .is_some_and(|mode| mode & S_IFMT == S_IFLNK)
            {
                return Err(refused(format!("entry `{name}` is a symbolic link")));
            }
            let target = staging.join(&path);
            if entry.dir().unwrap_or(false) || name.ends_with('/') {
                tokio::fs::create_dir_all(&target)
                    .await
                    .map_err(|e| io(&target, e))?;
                continue;
            }
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io(parent, e))?;
            }
            let mut reader =
                reader
                    .reader_with_entry(index)
                    .await
                    .map_err(|e| PackageError::Zip {
                        package: label.clone(),
                        message: e.to_string(),
                    })?;
            let mut file = tokio::fs::File::create(&target)
                .await
                .map_err(|e| io(&target, e))?;
            let mut written: u64 = 0;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = reader
                    .read(&mut buffer)
                    .await
                    .map_err(|e| PackageError::Zip {
                        package: label.clone(),
                        message: format!("{name}: {e}"),
                    })?;
                if n == 0 {
                    break;
                }
                written += n as u64;
                total += n as u64;
                if written > MAX_FILE_BYTES {
                    return Err(refused(format!(
                        "entry `{name}` inflates past {} MiB",
                        MAX_FILE_BYTES >> 20
                    )));
                }
                if total > MAX_TOTAL_BYTES {
                    return Err(refused(format!(
                        "the package inflates past {} MiB in all",
                        MAX_TOTAL_BYTES >> 20
                    )));
                }
                tokio::io::AsyncWriteExt::write_all(&mut file, &buffer[..n])
                    .await
                    .map_err(|e| io(&target, e))?;
            }
            // A tokio write completes in the background: without this the last bytes may not be
            // on disk yet when the manifest is read back (a flaky "missing name" in CI).
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|e| io(&target, e))?;
            if let Some(mode) = entry.unix_permissions() {
                use std::os::unix::fs::PermissionsExt;
                let mode = u32::from(mode) & 0o755;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io(&target, e))?;
            }
        }
        let manifest_name = MANIFEST_FILE_NAMES
            .iter()
            .find(|name| staging.join(name).is_file())
            .ok_or_else(|| refused(format!("it holds no {}", MANIFEST_FILE_NAMES.join(" or "))))?;
        let text = tokio::fs::read_to_string(staging.join(manifest_name))
            .await
            .map_err(|e| io(&staging.join(manifest_name), e))?;
        let manifest = PluginManifest::from_yaml(&text).map_err(|e| refused(e.to_string()))?;
        if !staging.join(&manifest.entry).is_file() {
            return Err(refused(format!(
                "the manifest names `{}`, which the package does not hold",
                manifest.entry.display()
            )));
        }
        Ok(manifest)
    }
    .await;
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(error) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(error);
        }
    };
    let destination = plugins_dir.join(&manifest.name);
    let previous = plugins_dir.join(format!(".previous-{}-{}", manifest.name, unique()));
    let had_previous = destination.exists();
    if had_previous {
        tokio::fs::rename(&destination, &previous)
            .await
            .map_err(|e| io(&destination, e))?;
    }
    if let Err(error) = tokio::fs::rename(&staging, &destination).await {
        if had_previous {
            let _ = tokio::fs::rename(&previous, &destination).await;
        }
        let _ = tokio::fs::remove_dir_all(&staging).await;
        return Err(io(&destination, error));
    }
    if had_previous {
        let _ = tokio::fs::remove_dir_all(&previous).await;
    }
    Ok((destination, manifest))
}

pub(crate) fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{nanos:08x}")
}

/// Builds a package of a plugin directory: its manifest, the module or binary it names, and
/// `templates/`, `static/` and `i18n/` when present.
pub async fn build(plugin_dir: &Path, output: &Path) -> Result<PluginManifest, PackageError> {
    let manifest = PluginManifest::from_dir(plugin_dir).map_err(|e| PackageError::Refused {
        package: plugin_dir.display().to_string(),
        problem: e.to_string(),
    })?;
    let manifest_file = MANIFEST_FILE_NAMES
        .iter()
        .map(|n| plugin_dir.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| plugin_dir.join(MANIFEST_FILE_NAMES[0]));
    let mut files = vec![manifest_file, plugin_dir.join(&manifest.entry)];
    for extra in ["templates", "static", "i18n"] {
        collect(&plugin_dir.join(extra), &mut files).map_err(|e| io(&plugin_dir.join(extra), e))?;
    }
    let file = tokio::fs::File::create(output)
        .await
        .map_err(|e| io(output, e))?;
    let mut writer = ZipFileWriter::with_tokio(file);
    for path in files {
        let name = path
            .strip_prefix(plugin_dir)
            .map_err(|e| io(&path, e))?
            .to_string_lossy()
            .replace('\\', "/");
        let data = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)
                .map(|m| m.permissions().mode() as u16 & 0o755)
                .unwrap_or(0o644)
        };
        let entry = ZipEntryBuilder::new(name.into(), Compression::Deflate)
            .unix_permissions(0o100_000 | mode);
        writer
            .write_entry_whole(entry, &data)
            .await
            .map_err(|e| io(output, e))?;
    }
    // tokio's File finishes writes in the background: flush before saying the package is there.
    let mut file = writer
        .close()
        .await
        .map_err(|e| io(output, e))?
        .into_inner();
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|e| io(output, e))?;
    Ok(manifest)
}

/// Every file under `dir`, if it exists.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}
