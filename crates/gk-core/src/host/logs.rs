//! Plugin logs: a ring buffer per plugin, readable and clearable by the platform, and every
//! entry also emitted through `tracing` with the plugin's name.
//!
//! What a plugin writes is bounded: a message longer than [`LogLimits::line_bytes`] is cut (at
//! a character boundary) and ends with `… [truncated N bytes]`; fields whose JSON is longer are
//! replaced by a note of their size; and each plugin's ring holds at most
//! [`LogLimits::entries`] entries and [`LogLimits::ring_bytes`] bytes, the oldest going first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use gk_sdk::LogLevel;
use serde::Serialize;
use serde_json::{Map, Value};

/// The default number of entries kept per plugin.
pub const DEFAULT_LOG_ENTRIES: usize = 1000;
/// The default longest message kept, in bytes (longer ones are truncated with a marker).
pub const DEFAULT_LOG_LINE_BYTES: usize = 8 * 1024;
/// The default number of bytes each plugin's ring holds.
pub const DEFAULT_LOG_RING_BYTES: usize = 1024 * 1024;
/// What an entry costs besides its message and fields (time, level, sequence, bookkeeping).
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// How much of a plugin's logs is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Entries per plugin (at least 1).
    pub entries: usize,
    /// The longest message (and fields, as JSON) kept, in bytes.
    pub line_bytes: usize,
    /// The bytes each plugin's ring holds: message, fields and a fixed overhead per entry.
    pub ring_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            entries: DEFAULT_LOG_ENTRIES,
            line_bytes: DEFAULT_LOG_LINE_BYTES,
            ring_bytes: DEFAULT_LOG_RING_BYTES,
        }
    }
}

/// `message` cut to at most `limit` bytes at a character boundary, with `… [truncated N
/// bytes]` when anything was cut.
pub fn truncate_message(message: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if message.len() <= limit {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut cut = limit;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… [truncated {} bytes]",
        &message[..cut],
        message.len() - cut
    ))
}

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

impl LogEntry {
    /// What the entry counts for against its ring's byte limit.
    fn cost(&self) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len())
            .sum();
        ENTRY_OVERHEAD_BYTES + self.plugin.len() + self.message.len() + fields
    }
}

/// One plugin's entries and their cost.
#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<(LogEntry, usize)>,
    bytes: usize,
}

/// The logs of every plugin.
#[derive(Debug)]
pub struct PluginLogs {
    limits: LogLimits,
    sequence: std::sync::atomic::AtomicU64,
    rings: Mutex<HashMap<String, Ring>>,
}

impl PluginLogs {
    /// Keeps the last `capacity` entries of each plugin (and the default byte limits).
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(LogLimits {
            entries: capacity,
            ..LogLimits::default()
        })
    }

    /// Keeps what `limits` allow of each plugin.
    pub fn with_limits(limits: LogLimits) -> Self {
        Self {
            limits: LogLimits {
                entries: limits.entries.max(1),
                ..limits
            },
            sequence: std::sync::atomic::AtomicU64::new(0),
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Appends an entry to `plugin`'s ring (bounded as the module says) and emits it through
    /// tracing.
    pub fn write(&self, plugin: &str, level: LogLevel, message: &str, fields: &Map<String, Value>) {
        let message = truncate_message(message, self.limits.line_bytes);
        let message: &str = &message;
        let mut fields_text = Value::Object(fields.clone());
        let fields_len = fields_text.to_string().len();
        let mut fields = std::borrow::Cow::Borrowed(fields);
        if fields_len > self.limits.line_bytes {
            let mut note = Map::new();
            note.insert(
                "_truncated".into(),
                Value::from(format!("fields of {fields_len} bytes dropped")),
            );
            fields_text = Value::Object(note.clone());
            fields = std::borrow::Cow::Owned(note);
        }
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
            fields: fields.into_owned(),
        };
        let cost = entry.cost();
        let mut rings = self
            .rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ring = rings.entry(plugin.to_owned()).or_default();
        while !ring.entries.is_empty()
            && (ring.entries.len() >= self.limits.entries
                || ring.bytes + cost > self.limits.ring_bytes)
        {
            if let Some((_, freed)) = ring.entries.pop_front() {
                ring.bytes -= freed;
            }
        }
        ring.bytes += cost;
        ring.entries.push_back((entry, cost));
    }

    /// The bytes `plugin`'s ring holds, as counted against [`LogLimits::ring_bytes`].
    pub fn ring_bytes(&self, plugin: &str) -> usize {
        self.rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(plugin)
            .map_or(0, |ring| ring.bytes)
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
            .flat_map(|(_, ring)| {
                ring.entries
                    .iter()
                    .map(|(e, _)| e)
                    .filter(|e| e.level >= min_level)
                    .cloned()
            })
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
        Self::with_limits(LogLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_truncated_with_a_marker() {
        assert_eq!(truncate_message("short", 10), "short");
        assert_eq!(
            truncate_message("0123456789abc", 10),
            "0123456789… [truncated 3 bytes]"
        );
        // Cut at a character boundary: `é` is two bytes.
        assert_eq!(truncate_message("aé", 2), "a… [truncated 2 bytes]");
    }

    #[test]
    fn a_flood_is_bounded_in_bytes_and_entries() {
        let logs = PluginLogs::with_limits(LogLimits {
            entries: 1000,
            line_bytes: 1024,
            ring_bytes: 16 * 1024,
        });
        let huge = "x".repeat(5 * 1024 * 1024);
        for _ in 0..200 {
            logs.write("flood", LogLevel::Info, &huge, &Map::new());
        }
        let entries = logs.read(Some("flood"), LogLevel::Debug, usize::MAX);
        assert!(logs.ring_bytes("flood") <= 16 * 1024);
        let kept: usize = entries.iter().map(|e| e.message.len()).sum();
        assert!(kept <= 16 * 1024, "{kept}");
        assert!(
            entries.len() < 200 && !entries.is_empty(),
            "{}",
            entries.len()
        );
        assert!(entries[0].message.ends_with("… [truncated 5241856 bytes]"));
        // Huge fields are replaced by a note of their size.
        let mut fields = Map::new();
        fields.insert("blob".into(), Value::from(huge.as_str()));
        logs.write("fields", LogLevel::Info, "m", &fields);
        let entry = &logs.read(Some("fields"), LogLevel::Debug, 1)[0];
        assert_eq!(
            entry.fields["_truncated"],
            "fields of 5242891 bytes dropped"
        );
        // Another plugin's ring is its own.
        logs.write("quiet", LogLevel::Info, "hello", &Map::new());
        assert_eq!(logs.read(Some("quiet"), LogLevel::Debug, 10).len(), 1);
    }

    #[test]
    fn the_entry_limit_still_holds() {
        let logs = PluginLogs::new(3);
        for i in 0..5 {
            logs.write("p", LogLevel::Info, &format!("m{i}"), &Map::new());
        }
        let messages: Vec<String> = logs
            .read(Some("p"), LogLevel::Debug, 10)
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["m4", "m3", "m2"]);
    }
}
