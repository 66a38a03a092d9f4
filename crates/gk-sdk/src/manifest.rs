//! `plugin.yaml`: the file beside a plugin's module or binary that says what it is and how to
//! run it.
//!
//! ```yaml
//! name: hello-grpc
//! version: "1.0.0"
//! runtime: grpc          # or wasm (the default)
//! binary: hello-grpc     # for wasm: `wasm: hello.wasm` (or `binary:`)
//! resources:
//!   call_timeout: 5s
//!   permissions:
//!     - { type: cache, access: readwrite }
//! ```

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::{format_duration, parse_duration};
use crate::string_enum::string_enum;
use crate::{Access, ManifestError, Permission, ResourceRequest};

/// The file names a plugin directory's manifest may have, in order of preference.
pub const MANIFEST_FILE_NAMES: [&str; 2] = ["plugin.yaml", "manifest.yaml"];

/// The longest plugin name the platform accepts.
const MAX_NAME_LEN: usize = 64;

string_enum! {
    /// How a plugin is run.
    pub enum Runtime as "runtime" {
        /// A `.wasm` module run in-process by wasmer.
        Wasm = "wasm",
        /// A native executable in its own process, spoken to over gRPC.
        Grpc = "grpc",
    }
}

/// A validated `plugin.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginManifest {
    /// The plugin's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// Version string.
    pub version: String,
    /// How to run it.
    pub runtime: Runtime,
    /// The module (wasm) or executable (grpc), relative to the plugin directory and inside it.
    pub entry: PathBuf,
    /// Description.
    pub description: String,
    /// Author.
    pub author: String,
    /// Licence.
    pub license: String,
    /// Homepage.
    pub homepage: String,
    /// Requested limits and permissions.
    pub resources: ResourceRequest,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wasm: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    license: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    homepage: String,
    #[serde(default, skip_serializing_if = "RawResources::is_empty")]
    resources: RawResources,
}

/// `resources` as written, validated field by field so errors name the exact field.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shutdown_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    permissions: Vec<RawPermission>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scope: Vec<String>,
}

impl RawResources {
    fn is_empty(&self) -> bool {
        self.memory_mb.is_none()
            && self.call_timeout.is_none()
            && self.init_timeout.is_none()
            && self.shutdown_timeout.is_none()
            && self.permissions.is_empty()
    }

    fn from_request(request: &ResourceRequest) -> Self {
        Self {
            memory_mb: request.memory_mb,
            call_timeout: request.call_timeout.map(format_duration),
            init_timeout: request.init_timeout.map(format_duration),
            shutdown_timeout: request.shutdown_timeout.map(format_duration),
            permissions: request
                .permissions
                .iter()
                .map(|p| RawPermission {
                    kind: p.kind.as_str().to_owned(),
                    access: Some(p.access.as_str().to_owned()),
                    scope: p.scope.clone(),
                })
                .collect(),
        }
    }

    fn validate(self) -> Result<ResourceRequest, ManifestError> {
        let timeout = |field: &str, text: Option<String>| {
            text.map(|text| parse_duration(&text))
                .transpose()
                .map_err(|e| ManifestError::field(format!("resources.{field}"), e.to_string()))
        };
        let permissions = self
            .permissions
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let field = |name: &str| format!("resources.permissions[{i}].{name}");
                Ok(Permission {
                    kind: p
                        .kind
                        .parse()
                        .map_err(|e| ManifestError::field(field("type"), e))?,
                    access: match p.access {
                        None => Access::Read,
                        Some(text) => text
                            .parse()
                            .map_err(|e| ManifestError::field(field("access"), e))?,
                    },
                    scope: p.scope,
                })
            })
            .collect::<Result<_, ManifestError>>()?;
        Ok(ResourceRequest {
            memory_mb: self.memory_mb,
            call_timeout: timeout("call_timeout", self.call_timeout)?,
            init_timeout: timeout("init_timeout", self.init_timeout)?,
            shutdown_timeout: timeout("shutdown_timeout", self.shutdown_timeout)?,
            permissions,
        })
    }
}

impl PluginManifest {
    /// Parses and validates a manifest. Every refusal names the field and the problem.
    ///
    /// ```
    /// use gk_sdk::{PluginManifest, Runtime};
    /// let manifest = PluginManifest::from_yaml("name: hello\nruntime: grpc\nbinary: bin/hello\n").unwrap();
    /// assert_eq!(manifest.runtime, Runtime::Grpc);
    /// let error = PluginManifest::from_yaml("name: Hello\nbinary: x.wasm\n").unwrap_err();
    /// assert!(error.to_string().starts_with("plugin.yaml: field `name`: `Hello` is not a valid plugin name"));
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest =
            serde_norway::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        Self::validate(raw)
    }

    /// Reads the manifest of a plugin directory (`plugin.yaml`, else `manifest.yaml`).
    pub fn from_dir(dir: &Path) -> Result<Self, ManifestError> {
        let path = MANIFEST_FILE_NAMES
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| dir.join(MANIFEST_FILE_NAMES[0]));
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The manifest as YAML, in the form [`from_yaml`](Self::from_yaml) reads.
    pub fn to_yaml(&self) -> String {
        let entry = self.entry.to_string_lossy().into_owned();
        let raw = RawManifest {
            name: self.name.clone(),
            version: self.version.clone(),
            runtime: Some(self.runtime.as_str().to_owned()),
            binary: (self.runtime == Runtime::Grpc).then(|| entry.clone()),
            wasm: (self.runtime == Runtime::Wasm).then_some(entry),
            description: self.description.clone(),
            author: self.author.clone(),
            license: self.license.clone(),
            homepage: self.homepage.clone(),
            resources: RawResources::from_request(&self.resources),
        };
        // Strings, options and a request of plain values always serialise.
        serde_norway::to_string(&raw).unwrap_or_default()
    }

    /// The entry's absolute path under `plugin_dir`, refusing one that leaves the directory
    /// through a symbolic link.
    pub fn resolve_entry(&self, plugin_dir: &Path) -> Result<PathBuf, ManifestError> {
        let field = entry_field(self.runtime);
        let io = |source| ManifestError::Io {
            path: plugin_dir.join(&self.entry).display().to_string(),
            source,
        };
        let dir = plugin_dir.canonicalize().map_err(io)?;
        let entry = dir.join(&self.entry).canonicalize().map_err(io)?;
        if !entry.starts_with(&dir) {
            return Err(ManifestError::field(
                field,
                format!(
                    "`{}` leads outside the plugin directory",
                    self.entry.display()
                ),
            ));
        }
        Ok(entry)
    }

    fn validate(raw: RawManifest) -> Result<Self, ManifestError> {
        validate_plugin_name(&raw.name)
            .map_err(|problem| ManifestError::field("name", problem.to_string()))?;
        let runtime = match raw.runtime.as_deref() {
            None => Runtime::Wasm,
            Some(text) => text
                .parse()
                .map_err(|problem| ManifestError::field("runtime", problem))?,
        };
        let entry = match (runtime, raw.binary, raw.wasm) {
            (Runtime::Grpc, _, Some(_)) => {
                return Err(ManifestError::field(
                    "wasm",
                    "a grpc plugin names its executable in `binary`",
                ));
            }
            (Runtime::Wasm, Some(_), Some(_)) => {
                return Err(ManifestError::field(
                    "binary",
                    "give the module once, in `wasm` or in `binary`",
                ));
            }
            (Runtime::Grpc, Some(path), None)
            | (Runtime::Wasm, None, Some(path))
            | (Runtime::Wasm, Some(path), None) => path,
            (Runtime::Grpc, None, None) => {
                return Err(ManifestError::field(
                    "binary",
                    "missing: a grpc plugin must name its executable",
                ));
            }
            (Runtime::Wasm, None, None) => {
                return Err(ManifestError::field(
                    "wasm",
                    "missing: a wasm plugin must name its module",
                ));
            }
        };
        let resources = raw.resources.validate()?;
        let entry = validate_entry(&entry)
            .map_err(|problem| ManifestError::field(entry_field(runtime), problem))?;
        Ok(Self {
            name: raw.name,
            version: raw.version,
            runtime,
            entry,
            description: raw.description,
            author: raw.author,
            license: raw.license,
            homepage: raw.homepage,
            resources,
        })
    }
}

fn entry_field(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Wasm => "wasm",
        Runtime::Grpc => "binary",
    }
}

/// Checks a plugin name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
pub fn validate_plugin_name(name: &str) -> Result<(), PluginNameError> {
    if name.is_empty() {
        return Err(PluginNameError::Missing);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PluginNameError::TooLong {
            name: name.to_owned(),
        });
    }
    let valid_first = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !(valid_first && valid_rest) {
        return Err(PluginNameError::Invalid {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Why a string is not a plugin name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginNameError {
    /// The name is empty.
    #[error("missing: every plugin needs a name")]
    Missing,
    /// The name is longer than 64 characters.
    #[error("`{name}` is longer than {MAX_NAME_LEN} characters")]
    TooLong {
        /// The name.
        name: String,
    },
    /// The name holds other characters, or starts with `_` or `-`.
    #[error(
        "`{name}` is not a valid plugin name: use lower-case letters, digits, `_` and `-`, \
         starting with a letter or digit"
    )]
    Invalid {
        /// The name.
        name: String,
    },
}

fn validate_entry(path: &str) -> Result<PathBuf, String> {
    if path.trim().is_empty() {
        return Err("is empty".to_owned());
    }
    let path = Path::new(path);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{}` leads outside the plugin directory: give a path inside it, like `bin/plugin`",
                    path.display()
                ));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(format!(
            "`{}` names the plugin directory itself, not a file",
            path.display()
        ));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn minimal_grpc_manifest() {
        let m = PluginManifest::from_yaml(
            "name: hello-grpc\nversion: \"1.0.0\"\nruntime: grpc\nbinary: hello-grpc\n",
        )
        .unwrap();
        assert_eq!(m.runtime, Runtime::Grpc);
        assert_eq!(m.entry, PathBuf::from("hello-grpc"));
    }

    #[test]
    fn wasm_is_the_default_runtime_and_binary_is_accepted() {
        let m = PluginManifest::from_yaml("name: stats\nbinary: ./stats.wasm\n").unwrap();
        assert_eq!(m.runtime, Runtime::Wasm);
        assert_eq!(m.entry, PathBuf::from("stats.wasm"));
    }

    #[test]
    fn yaml_round_trip() {
        let text = "name: s\nruntime: wasm\nwasm: m/s.wasm\ndescription: d\nresources:\n  call_timeout: 1500ms\n  permissions:\n  - type: http\n    scope: ['*.example.com']\n";
        let m = PluginManifest::from_yaml(text).unwrap();
        assert_eq!(m.resources.call_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(PluginManifest::from_yaml(&m.to_yaml()).unwrap(), m);
    }

    #[test]
    fn resolve_entry_refuses_symlinks_out_of_the_directory() {
        let root = std::env::temp_dir().join(format!("gk-sdk-manifest-{}", std::process::id()));
        let dir = root.join("plugin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.join("outside"), b"x").unwrap();
        std::fs::write(dir.join("inside"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("outside"), dir.join("link")).unwrap();
        let inside = PluginManifest::from_yaml("name: p\nruntime: grpc\nbinary: inside\n").unwrap();
        assert!(
            inside
                .resolve_entry(&dir)
                .unwrap()
                .ends_with("plugin/inside")
        );
        #[cfg(unix)]
        {
            let link = PluginManifest::from_yaml("name: p\nruntime: grpc\nbinary: link\n").unwrap();
            let err = link.resolve_entry(&dir).unwrap_err().to_string();
            assert_eq!(
                err,
                "plugin.yaml: field `binary`: `link` leads outside the plugin directory"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
