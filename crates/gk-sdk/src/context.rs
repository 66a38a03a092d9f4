//! The context every call carries: which plugin it runs in, who called it, how deep.

use serde::{Deserialize, Serialize};

/// The deepest chain of plugin-to-plugin calls the platform allows.
///
/// A call at depth `MAX_CALL_DEPTH` may still run; the call it would make next is refused.
pub const MAX_CALL_DEPTH: u32 = 10;

/// Who is calling and how deep in a chain of plugin-to-plugin calls.
///
/// The host builds contexts; a plugin never chooses its own identity. When a plugin calls the
/// host, the sandbox replaces [`plugin`](Self::plugin) with the name it was built for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallContext {
    /// The plugin this call runs in (for host calls: the plugin making the host call).
    pub plugin: String,
    /// The plugin that made this call through the host; `None` when the host itself called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// Plugin-to-plugin depth: 0 for a call from the host, one more for each hop.
    pub depth: u32,
    /// The end user's preferred language (for example `de`), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl CallContext {
    /// A context for a call the host makes into `plugin` (depth 0, no caller).
    pub fn for_plugin(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            ..Self::default()
        }
    }

    /// Sets the end user's language.
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// The context of a call this plugin makes into `target`: the caller is this context's
    /// plugin and the depth grows by one. Returns `None` past [`MAX_CALL_DEPTH`].
    pub fn nested_call(&self, target: impl Into<String>) -> Option<Self> {
        let depth = self.depth.checked_add(1).filter(|d| *d <= MAX_CALL_DEPTH)?;
        Some(Self {
            plugin: target.into(),
            caller: Some(self.plugin.clone()),
            depth,
            language: self.language.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_call_stamps_caller_and_depth() {
        let ctx = CallContext::for_plugin("a").with_language("de");
        let next = ctx.nested_call("b").unwrap();
        assert_eq!(next.plugin, "b");
        assert_eq!(next.caller.as_deref(), Some("a"));
        assert_eq!(next.depth, 1);
        assert_eq!(next.language.as_deref(), Some("de"));
    }

    #[test]
    fn nested_call_stops_at_max_depth() {
        let mut ctx = CallContext::for_plugin("a");
        for _ in 0..MAX_CALL_DEPTH {
            ctx = ctx.nested_call("a").unwrap();
        }
        assert_eq!(ctx.depth, MAX_CALL_DEPTH);
        assert_eq!(ctx.nested_call("a"), None);
    }
}
