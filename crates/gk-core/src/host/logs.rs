//! Plugin logs: a ring buffer per plugin, readable and clearable by the platform, and every
//! entry also emitted through `tracing` with the plugin's name.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use gk_sdk::LogLevel;
use serde::Serialize;
use serde_json::{Map, Value};

/// The default number of entries kept per plugin.
pub const DEFAULT_LOG_ENTRIES: usize = 1000;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    /// Position in the order entries were written (across plugins).
    pub sequence: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The plugin that wrote it.
    pub plugin: String,
    /// Severity.
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// Structured fields.
    pub fields: Map<String, Value>,
}

/// The logs of every plugin.
#[derive(Debug)]
pub struct PluginLogs {
    capacity: usize,
    sequence: std::sync::atomic::AtomicU64,
    rings: Mutex<HashMap<String, VecDeque<LogEntry>>>,
}

impl PluginLogs {
    /// Keeps the last `capacity` entries of each plugin.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            sequence: std::sync::atomic::AtomicU64::new(0),
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// Appends an entry to `plugin`'s ring and emits it through tracing.
    pub fn write(&self, plugin: &str, level: LogLevel, message: &str, fields: &Map<String, Value>) {
        let fields_text = Value::Object(fields.clone());
        match level {
            LogLevel::Debug => tracing::debug!(plugin, fields = %fields_text, "{message}"),
            LogLevel::Info => tracing::info!(plugin, fields = %fields_text, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, fields = %fields_text, "{message}"),
            LogLevel::Error => tracing::error!(plugin, fields = %fields_text, "{message}"),
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let sequence = self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = LogEntry {
            sequence,
            time_ms,
            plugin: plugin.to_owned(),
            level,
            message: message.to_owned(),
            fields: fields.clone(),
        };
        let mut rings = self
            .rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ring = rings.entry(plugin.to_owned()).or_default();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The newest `limit` entries, newest first, of one plugin (or all), at `min_level` or above.
    pub fn read(&self, plugin: Option<&str>, min_level: LogLevel, limit: usize) -> Vec<LogEntry> {
        let rings = self
            .rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut entries: Vec<LogEntry> = rings
            .iter()
            .filter(|(name, _)| plugin.is_none_or(|p| p == name.as_str()))
            .flat_map(|(_, ring)| ring.iter().filter(|e| e.level >= min_level).cloned())
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.sequence));
        entries.truncate(limit);
        entries
    }

    /// Clears one plugin's log, or all.
    pub fn clear(&self, plugin: Option<&str>) {
        let mut rings = self
            .rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match plugin {
            Some(name) => {
                rings.remove(name);
            }
            None => rings.clear(),
        }
    }
}

impl Default for PluginLogs {
    fn default() -> Self {
        Self::new(DEFAULT_LOG_ENTRIES)
    }
}
