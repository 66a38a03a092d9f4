//! The layering, written once for every key: the defaults ([`ServeConfig::default`]), then the
//! file, then the environment, then the flags, each applying the [`KEYS`] and [`SECTIONS`] it
//! holds. A key's declaration says where each layer finds it; this module only walks the
//! layers, checks the shape of what the file holds, and hands each value to the key's setter
//! with the name errors use (the dotted key, the variable or the flag).

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::keys::{KEYS, SECTIONS};
use super::parse::{list, value_error};
use super::{ConfigError, Environment, ServeConfig};

/// What a key holds in the file; the environment and the flags give text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A string.
    Text,
    /// An integer (written as digits in a variable).
    Integer,
    /// `true` or `false` (in a variable also `1`, `yes`, `on`…); a flag is a switch.
    Bool,
    /// An array of strings (comma-separated in a variable).
    List,
}

impl Shape {
    fn expected(self) -> &'static str {
        match self {
            Self::Text => "a string",
            Self::Integer => "an integer",
            Self::Bool => "a boolean",
            Self::List => "an array of strings",
        }
    }
}

/// Sets one key of the configuration from a value of any layer.
pub(super) type Setter = fn(&mut ServeConfig, &Value<'_>) -> Result<(), ConfigError>;

/// One configuration key, declared once: where each layer finds it, and what reads it.
#[derive(Debug)]
pub(super) struct Key {
    /// The dotted path in `goatkit.toml` (`database.max_rows`).
    pub(super) path: &'static str,
    /// The environment variables, read in this order (the last one set wins).
    pub(super) env: &'static [&'static str],
    /// The flag of `gk serve`, as `--name <VALUE>`, or `--name` for a switch.
    pub(super) flag: Option<&'static str>,
    /// What the file holds.
    pub(super) shape: Shape,
    /// What the key is for (the flag's help).
    pub(super) doc: &'static str,
    /// Parses and checks the value, and stores it.
    pub(super) set: Setter,
}

/// A table of open-ended keys (`[databases.<name>]`, `[config]`, `[plugins.<name>]`) and the
/// variables that go with it.
#[derive(Debug)]
pub(super) struct Section {
    /// The table's name in the file.
    pub(super) path: &'static str,
    /// Reads the table from the file.
    pub(super) file: fn(&mut ServeConfig, &toml::Table, &FileLayer<'_>) -> Result<(), ConfigError>,
    /// Reads the section's variables.
    pub(super) env: fn(&mut ServeConfig, &Environment) -> Result<(), ConfigError>,
}

/// One value as a layer gives it.
#[derive(Debug)]
pub(super) struct Value<'a> {
    name: &'a str,
    raw: Raw,
    base: Option<&'a Path>,
}

#[derive(Debug)]
enum Raw {
    One(String),
    Many(Vec<String>),
}

impl<'a> Value<'a> {
    /// A value given as text: a variable or a flag.
    pub(super) fn text(name: &'a str, text: impl Into<String>) -> Self {
        Self {
            name,
            raw: Raw::One(text.into()),
            base: None,
        }
    }

    /// What errors call the value: the dotted key, the variable or the flag.
    pub(super) fn name(&self) -> &str {
        self.name
    }

    /// The value as text.
    pub(super) fn string(&self) -> String {
        match &self.raw {
            Raw::One(text) => text.clone(),
            Raw::Many(items) => items.join(","),
        }
    }

    /// The value as text; empty unsets the key.
    pub(super) fn optional(&self) -> Option<String> {
        Some(self.string()).filter(|text| !text.is_empty())
    }

    /// The value read by `parse`, whose errors name the value.
    pub(super) fn parse<T>(
        &self,
        parse: impl FnOnce(&str, &str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        parse(self.name, &self.string())
    }

    /// The items: the array of the file, or the comma-separated text of a variable (blank
    /// items dropped).
    pub(super) fn list(&self) -> Vec<String> {
        match &self.raw {
            Raw::One(text) => list(text),
            Raw::Many(items) => items.clone(),
        }
    }

    /// A path; relative ones in the file are relative to the file.
    pub(super) fn path(&self) -> PathBuf {
        self.relative(PathBuf::from(self.string()))
    }

    /// Paths, as [`Value::list`]; relative ones in the file are relative to the file.
    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.list()
            .into_iter()
            .map(|item| self.relative(item.into()))
            .collect()
    }

    fn relative(&self, path: PathBuf) -> PathBuf {
        match self.base {
            Some(base) if !path.is_absolute() => base.join(path),
            _ => path,
        }
    }
}

/// The file being read: its tables, and where each key is written, for errors.
#[derive(Debug)]
pub(super) struct FileLayer<'a> {
    label: String,
    text: &'a str,
    spans: toml::Spanned<DeTable<'a>>,
    /// The directory relative paths in the file are relative to.
    pub(super) base: &'a Path,
}

impl FileLayer<'_> {
    /// An error at `path` in the file (on its key, or on its value), with the line and column
    /// when known: never the line itself, it may hold a password.
    fn error_at(&self, path: &[&str], on_key: bool, message: String) -> ConfigError {
        let message = match self.span(path, on_key) {
            Some(span) => format!("{}: {message}", line_and_column(self.text, span)),
            None => message,
        };
        ConfigError::Parse {
            path: self.label.clone(),
            message,
        }
    }

    fn span(&self, path: &[&str], on_key: bool) -> Option<Range<usize>> {
        let (last, parents) = path.split_last()?;
        let mut table = self.spans.get_ref();
        for name in parents {
            table = table.get(*name)?.get_ref().as_table()?;
        }
        let (key, value) = table.get_key_value(*last)?;
        Some(if on_key { key.span() } else { value.span() })
    }

    /// `path` names no key; `expected` are those its table takes.
    pub(super) fn unknown(&self, path: &[&str], expected: &[&str]) -> ConfigError {
        let name = path.last().copied().unwrap_or_default();
        let expected = match expected {
            [] => "no keys".to_owned(),
            [one] => format!("`{one}`"),
            many => format!(
                "one of {}",
                many.iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.error_at(
            path,
            true,
            format!("unknown field `{name}`, expected {expected}"),
        )
    }

    /// `value`, at `path`, is not what the key takes. The value itself is not repeated: it
    /// may be a secret.
    pub(super) fn wrong_type(
        &self,
        path: &[&str],
        value: &toml::Value,
        expected: &str,
    ) -> ConfigError {
        self.error_at(
            path,
            false,
            format!(
                "{}: invalid type: {}, expected {expected}",
                path.join("."),
                value.type_str()
            ),
        )
    }

    /// `value` as a table, or an error naming `path`.
    pub(super) fn table<'v>(
        &self,
        path: &[&str],
        value: &'v toml::Value,
    ) -> Result<&'v toml::Table, ConfigError> {
        value
            .as_table()
            .ok_or_else(|| self.wrong_type(path, value, "a table"))
    }

    /// `value` as a string, or an error naming `path`.
    pub(super) fn string<'v>(
        &self,
        path: &[&str],
        value: &'v toml::Value,
    ) -> Result<&'v str, ConfigError> {
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(path, value, "a string"))
    }

    /// The value of `key` at `path`, as its shape says the file writes it.
    fn value<'s>(
        &'s self,
        key: &Key,
        path: &[&str],
        value: &toml::Value,
    ) -> Result<Value<'s>, ConfigError> {
        let wrong = || self.wrong_type(path, value, key.shape.expected());
        let raw = match (key.shape, value) {
            (Shape::Text, toml::Value::String(text)) => Raw::One(text.clone()),
            (Shape::Integer, toml::Value::Integer(n)) => Raw::One(n.to_string()),
            (Shape::Bool, toml::Value::Boolean(b)) => Raw::One(b.to_string()),
            (Shape::List, toml::Value::Array(items)) => Raw::Many(
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(wrong)?,
            ),
            _ => return Err(wrong()),
        };
        Ok(Value {
            name: key.path,
            raw,
            base: Some(self.base),
        })
    }
}

/// "line L, column C" of the byte offset where `span` starts.
fn line_and_column(text: &str, span: Range<usize>) -> String {
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}")
}

/// Reads the file at `path` over `config`: every key and section it holds, each checked for
/// its shape first (an unknown key or a wrong type is refused before any value applies), then
/// applied in the order of the declarations.
pub(super) fn apply_file(config: &mut ServeConfig, path: &Path) -> Result<(), ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: label.clone(),
        source,
    })?;
    let syntax = |e: toml::de::Error| ConfigError::Parse {
        message: match e.span() {
            Some(span) => format!("{}: {}", line_and_column(&text, span), e.message()),
            None => e.message().to_owned(),
        },
        path: label.clone(),
    };
    let table: toml::Table = toml::from_str(&text).map_err(syntax)?;
    let spans = DeTable::parse(&text).map_err(syntax)?;
    let file = FileLayer {
        label: label.clone(),
        text: &text,
        spans,
        base: path.parent().unwrap_or(Path::new("")),
    };
    let mut keys = Vec::new();
    let mut sections = Vec::new();
    walk(&file, &mut Vec::new(), &table, &mut keys, &mut sections)?;
    keys.sort_by_key(|(index, _)| *index);
    for (index, value) in keys {
        (KEYS[index].set)(config, &value)?;
    }
    sections.sort_by_key(|(index, _)| *index);
    for (index, table) in sections {
        (SECTIONS[index].file)(config, table, &file)?;
    }
    Ok(())
}

/// Collects the keys (by their index in [`KEYS`]) and the sections (in [`SECTIONS`]) of
/// `table`, found at `path`.
fn walk<'f, 't>(
    file: &'f FileLayer<'_>,
    path: &mut Vec<&'t str>,
    table: &'t toml::Table,
    keys: &mut Vec<(usize, Value<'f>)>,
    sections: &mut Vec<(usize, &'t toml::Table)>,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        path.push(name.as_str());
        let dotted = path.join(".");
        if let Some(index) = KEYS.iter().position(|key| key.path == dotted) {
            keys.push((index, file.value(&KEYS[index], path, value)?));
        } else if let Some(index) = SECTIONS.iter().position(|s| s.path == dotted) {
            sections.push((index, file.table(path, value)?));
        } else if KEYS.iter().any(|key| is_under(key.path, &dotted)) {
            let inner = file.table(path, value)?;
            walk(file, path, inner, keys, sections)?;
        } else {
            let parent = path[..path.len() - 1].join(".");
            return Err(file.unknown(path, &names_under(&parent)));
        }
        path.pop();
    }
    Ok(())
}

/// Whether `path` is a key of the table `table` (or of a table inside it).
fn is_under(path: &str, table: &str) -> bool {
    path.strip_prefix(table)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The names the table `table` (`""`: the top level) takes, in the declarations' order.
fn names_under(table: &str) -> Vec<&'static str> {
    let paths = KEYS
        .iter()
        .map(|key| key.path)
        .chain(SECTIONS.iter().map(|s| s.path));
    let mut names: Vec<&'static str> = Vec::new();
    for path in paths {
        let rest = if table.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(table)
                .and_then(|rest| rest.strip_prefix('.'))
        };
        if let Some(name) = rest.and_then(|rest| rest.split('.').next())
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// Reads the environment over `config`: each key's variables, in the declarations' order, then
/// each section's.
pub(super) fn apply_env(config: &mut ServeConfig, env: &Environment) -> Result<(), ConfigError> {
    for key in KEYS {
        for name in key.env {
            if let Some(text) = env.get(name) {
                (key.set)(config, &Value::text(name, text))?;
            }
        }
    }
    for section in SECTIONS {
        (section.env)(config, env)?;
    }
    Ok(())
}

/// A command-line flag of `gk serve` that sets a configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// The flag's name, without the leading `--`.
    pub long: &'static str,
    /// What the help calls its value; `None` for a switch, which sets the key to true.
    pub value_name: Option<&'static str>,
    /// What the flag sets.
    pub help: &'static str,
    /// The key it sets, dotted as in `goatkit.toml`.
    pub key: &'static str,
}

/// The flags `gk serve` takes for configuration keys, in the declarations' order.
pub fn flags() -> impl Iterator<Item = Flag> {
    KEYS.iter().filter_map(|key| {
        let spec = key.flag?.strip_prefix("--")?;
        let (long, value_name) = match spec.split_once(' ') {
            Some((long, value)) => (long, Some(value.trim_matches(['<', '>']))),
            None => (spec, None),
        };
        Some(Flag {
            long,
            value_name,
            help: key.doc,
            key: key.path,
        })
    })
}

/// Applies `given` flags (name without `--`, value; `"true"` for a switch) over `config`.
pub(super) fn apply_flags<'a>(
    config: &mut ServeConfig,
    given: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ConfigError> {
    for (long, text) in given {
        let flag = flags()
            .find(|flag| flag.long == long)
            .ok_or_else(|| value_error(&format!("--{long}"), "is not a flag of gk serve"))?;
        let key = KEYS
            .iter()
            .find(|key| key.path == flag.key)
            .ok_or_else(|| value_error(&format!("--{long}"), "sets no key"))?;
        let name = format!("--{long}");
        (key.set)(config, &Value::text(&name, text))?;
    }
    Ok(())
}
