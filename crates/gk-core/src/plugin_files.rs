//! Reading a file a plugin ships (a static file, a template, a translation) from inside its
//! directory, and only from there: the path is taken apart, `..`, absolute and empty parts are
//! refused, and no part below the plugin's directory may be a symbolic link (a plugin directory
//! is not signed as a whole, so a link in it would reach any file the server can read). The
//! file must be a regular file, and the one opened must be the one checked.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Why a plugin file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PluginFileError {
    /// The path leaves the directory, or goes through a link, or names no regular file.
    #[error("`{0}` is not a file inside the plugin's directory")]
    Outside(String),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The path of `relative` under `root` with every part checked (see the module docs).
pub fn checked_path(root: &Path, relative: &Path) -> Result<PathBuf, PluginFileError> {
    let outside = || PluginFileError::Outside(relative.display().to_string());
    let mut path = root.to_path_buf();
    let mut parts = 0;
    for component in relative.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => continue,
            _ => return Err(outside()),
        }
        parts += 1;
        let metadata = std::fs::symlink_metadata(&path).map_err(|_| outside())?;
        if metadata.file_type().is_symlink() {
            return Err(outside());
        }
    }
    if parts == 0 {
        return Err(outside());
    }
    Ok(path)
}

/// Opens `relative` under `root`: a regular file, reached through no link, at most
/// `max_bytes` long (checked on the opened file).
pub fn open(root: &Path, relative: &Path, max_bytes: u64) -> Result<(File, u64), PluginFileError> {
    let path = checked_path(root, relative)?;
    let io = |source| PluginFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let checked = std::fs::symlink_metadata(&path).map_err(io)?;
    if !checked.file_type().is_file() {
        return Err(PluginFileError::Outside(relative.display().to_string()));
    }
    let file = File::open(&path).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    // The file opened is the one checked (not a link or another file swapped in meanwhile).
    if opened.dev() != checked.dev() || opened.ino() != checked.ino() || !opened.is_file() {
        return Err(PluginFileError::Outside(relative.display().to_string()));
    }
    if opened.len() > max_bytes {
        return Err(io(std::io::Error::other(format!(
            "larger than {max_bytes} bytes"
        ))));
    }
    Ok((file, opened.len()))
}

/// Reads `relative` under `root` whole (see [`open`]).
pub fn read(root: &Path, relative: &Path, max_bytes: u64) -> Result<Vec<u8>, PluginFileError> {
    use std::io::Read;
    let (file, length) = open(root, relative, max_bytes)?;
    let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PluginFileError::Io {
            path: relative.display().to_string(),
            source,
        })?;
    if bytes.len() as u64 > max_bytes {
        return Err(PluginFileError::Io {
            path: relative.display().to_string(),
            source: std::io::Error::other(format!("larger than {max_bytes} bytes")),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_inside_reached_through_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plugin");
        std::fs::create_dir_all(root.join("static/css")).unwrap();
        std::fs::write(root.join("static/css/a.css"), "a{}").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("static/s")).unwrap();
        assert_eq!(
            read(&root, Path::new("static/css/a.css"), 10).unwrap(),
            b"a{}"
        );
        for refused in [
            "linked/secret",
            "static/s",
            "../secret",
            "/etc/passwd",
            "static/css",
            "",
            "static/missing",
        ] {
            assert!(read(&root, Path::new(refused), 10).is_err(), "{refused}");
        }
        assert!(
            read(&root, Path::new("static/css/a.css"), 2).is_err(),
            "too large"
        );
    }
}
