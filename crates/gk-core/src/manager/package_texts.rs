//! The `i18n/` folder of a plugin directory or package: one file per language
//! (`de.json`, `de.yaml`, `pt-BR.yml`) holding `key: text` pairs, nested maps read as dotted
//! keys. They are merged into what the plugin registers, so the catalog, the dashboard and the
//! plugin's own `translate` calls see them; a text the plugin registers itself wins over a
//! file's. A file that cannot be read fails the load, naming the file and the problem.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, GkRegistration, HostApi, I18nSpec, LimitStops, Plugin, PluginError, ResourcePolicy,
};

/// Language -> key -> text.
pub(super) type Texts = BTreeMap<String, BTreeMap<String, String>>;

/// The largest translation file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most translation files read.
const MAX_FILES: usize = 64;

/// Reads `dir/i18n/`; empty when there is no such folder.
pub(super) fn read(dir: &Path) -> Result<Texts, String> {
    let folder = dir.join("i18n");
    if std::fs::symlink_metadata(&folder).is_err() {
        return Ok(Texts::new());
    }
    // Inside the plugin's directory and through no link.
    crate::plugin_files::checked_path(dir, Path::new("i18n")).map_err(|e| e.to_string())?;
    let entries = std::fs::read_dir(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let mut texts = Texts::new();
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut files = 0;
    for path in paths {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !matches!(extension.as_str(), "json" | "yaml" | "yml") {
            continue;
        }
        files += 1;
        if files > MAX_FILES {
            return Err(format!(
                "{}: more than {MAX_FILES} translation files",
                folder.display()
            ));
        }
        let problem = |what: String| format!("{}: {what}", path.display());
        let language = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|l| {
                (2..=35).contains(&l.len())
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .ok_or_else(|| problem("the file name is not a language tag like de or pt-BR".into()))?
            .to_owned();
        let file_name = path.file_name().unwrap_or_default();
        let bytes =
            crate::plugin_files::read(dir, &Path::new("i18n").join(file_name), MAX_FILE_BYTES)
                .map_err(|e| problem(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| problem("not UTF-8".into()))?;
        let value: serde_json::Value = if extension == "json" {
            serde_json::from_str(&text).map_err(|e| problem(e.to_string()))?
        } else {
            serde_norway::from_str(&text).map_err(|e| problem(e.to_string()))?
        };
        let mut flat = BTreeMap::new();
        flatten("", &value, &mut flat).map_err(problem)?;
        texts.entry(language).or_default().extend(flat);
    }
    Ok(texts)
}

fn flatten(
    prefix: &str,
    value: &serde_json::Value,
    into: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let dotted = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&dotted, inner, into)?;
            }
            Ok(())
        }
        serde_json::Value::String(text) if !prefix.is_empty() => {
            into.insert(prefix.to_owned(), text.clone());
            Ok(())
        }
        serde_json::Value::Null if prefix.is_empty() => Ok(()),
        _ => Err(format!(
            "`{}` must be a text or a map of texts",
            if prefix.is_empty() {
                "(the file)"
            } else {
                prefix
            }
        )),
    }
}

/// `registration` with `texts` added (its own texts win).
pub(super) fn merge(mut registration: GkRegistration, texts: &Texts) -> GkRegistration {
    if texts.is_empty() {
        return registration;
    }
    let spec = registration.i18n.get_or_insert_with(I18nSpec::default);
    for (language, entries) in texts {
        if !spec.languages.contains(language) {
            spec.languages.push(language.clone());
        }
        let catalog = spec.translations.entry(language.clone()).or_default();
        for (key, text) in entries {
            catalog.entry(key.clone()).or_insert_with(|| text.clone());
        }
    }
    registration
}

/// A plugin whose registration gains its package's texts; everything else is the plugin's.
pub(super) struct WithPackageTexts {
    pub(super) inner: Arc<dyn Plugin>,
    pub(super) texts: Texts,
}

#[async_trait]
impl Plugin for WithPackageTexts {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(merge(self.inner.register().await?, &self.texts))
    }

    async fn init(&self, ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.inner.init(ctx, host).await
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        self.inner.call(ctx, function, args).await
    }

    async fn shutdown(&self, ctx: &CallContext) -> Result<(), PluginError> {
        self.inner.shutdown(ctx).await
    }

    async fn health(&self) -> Result<(), PluginError> {
        self.inner.health().await
    }

    fn apply_limits(&self, policy: &ResourcePolicy) -> bool {
        self.inner.apply_limits(policy)
    }

    fn limit_stops(&self) -> LimitStops {
        self.inner.limit_stops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_per_language_nested_keys_and_the_plugins_own_texts_win() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("i18n");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("de.json"),
            r#"{"dashboard": {"title": "Übersicht"}, "greeting": "Hallo"}"#,
        )
        .unwrap();
        std::fs::write(folder.join("en.yaml"), "dashboard:\n  title: Overview\n").unwrap();
        std::fs::write(folder.join("README.md"), "ignored").unwrap();
        let texts = read(dir.path()).unwrap();
        assert_eq!(texts["de"]["dashboard.title"], "Übersicht");
        assert_eq!(texts["en"]["dashboard.title"], "Overview");

        let mut own = I18nSpec::default();
        own.translations
            .entry("de".into())
            .or_default()
            .insert("greeting".into(), "Servus".into());
        let registration = GkRegistration {
            name: "p".into(),
            i18n: Some(own),
            ..Default::default()
        };
        let merged = merge(registration, &texts).i18n.unwrap();
        assert_eq!(merged.translations["de"]["greeting"], "Servus");
        assert_eq!(merged.translations["de"]["dashboard.title"], "Übersicht");
        assert!(merged.languages.contains(&"en".to_owned()));

        std::fs::write(folder.join("fr.json"), r#"{"count": 3}"#).unwrap();
        let error = read(dir.path()).unwrap_err();
        assert!(error.contains("fr.json: `count` must be a text"), "{error}");
        std::fs::remove_file(folder.join("fr.json")).unwrap();
        std::fs::write(folder.join("../i18n/x y.json"), "{}").unwrap();
        assert!(read(dir.path()).unwrap_err().contains("not a language tag"));
        std::fs::remove_file(folder.join("x y.json")).unwrap();

        // A linked file or folder reads nothing outside the plugin.
        std::os::unix::fs::symlink("/etc/hostname", folder.join("it.json")).unwrap();
        assert!(read(dir.path()).unwrap_err().contains("it.json"));
        std::fs::remove_file(folder.join("it.json")).unwrap();
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&folder, other.path().join("i18n")).unwrap();
        assert!(read(other.path()).is_err());
    }
}
