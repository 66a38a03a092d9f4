//! Every plugin call has one `gk.plugin.call` span (the manager's), with the plugin, the
//! function, the caller and the depth; a failed call is recorded at error level inside it; a
//! plugin-to-plugin call is a span of its own under the caller's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gk_sdk::{Access, Permission, PermissionType, PolicyStatus};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::common::{TestPlugin, fixture};

/// A span as the subscriber saw it.
#[derive(Debug, Clone)]
struct SeenSpan {
    id: u64,
    parent: Option<u64>,
    name: &'static str,
    fields: BTreeMap<String, String>,
}

/// An event: its level, the span it happened in, its fields.
#[derive(Debug, Clone)]
struct SeenEvent {
    level: Level,
    span: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<SeenSpan>>,
    events: Mutex<Vec<SeenEvent>>,
}

/// A subscriber that keeps every span and event (one thread: the test's runtime).
#[derive(Default)]
struct Capture {
    seen: Arc<Seen>,
    next: AtomicU64,
    stack: Mutex<Vec<u64>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Capture {
    fn current(&self) -> Option<u64> {
        self.stack.lock().unwrap().last().copied()
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => self.current(),
            None => None,
        };
        let span = SeenSpan {
            id,
            parent,
            name: attrs.metadata().name(),
            fields,
        };
        self.seen.spans.lock().unwrap().push(span);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.seen.spans.lock().unwrap();
        if let Some(seen) = spans.iter_mut().find(|s| s.id == span.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.seen.events.lock().unwrap().push(SeenEvent {
            level: *event.metadata().level(),
            span: self.current(),
            fields,
        });
    }

    fn enter(&self, span: &Id) {
        self.stack.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut stack = self.stack.lock().unwrap();
        if let Some(at) = stack.iter().rposition(|id| *id == span.into_u64()) {
            stack.remove(at);
        }
    }
}

impl Seen {
    fn calls(&self) -> Vec<SeenSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == "gk.plugin.call")
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.spans.lock().unwrap().clear();
        self.events.lock().unwrap().clear();
    }

    /// Whether `span` is `ancestor` or one of its descendants.
    fn descends(&self, span: u64, ancestor: u64) -> bool {
        let spans = self.spans.lock().unwrap();
        let mut at = Some(span);
        while let Some(id) = at {
            if id == ancestor {
                return true;
            }
            at = spans.iter().find(|s| s.id == id).and_then(|s| s.parent);
        }
        false
    }
}

fn field<'a>(span: &'a SeenSpan, name: &str) -> Option<&'a str> {
    span.fields.get(name).map(String::as_str)
}

#[tokio::test]
async fn a_plugin_call_has_one_span_with_its_fields_and_errors_at_error_level() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .register(Arc::new(TestPlugin::new("beta", "1")))
        .await
        .unwrap();
    let mut policy = gk_sdk::ResourcePolicy::default_for("alpha");
    policy.status = PolicyStatus::Approved;
    policy.permissions =
        vec![Permission::new(PermissionType::PluginCall, Access::Read).with_scope(["beta"])];
    f.manager.set_policy(policy, "admin").await.unwrap();

    let capture = Capture::default();
    let seen = capture.seen.clone();
    let _default = tracing::subscriber::set_default(capture);

    f.manager.call("alpha", "who", b"").await.unwrap();
    let calls = seen.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(field(call, "plugin"), Some("alpha"));
    assert_eq!(field(call, "function"), Some("who"));
    assert_eq!(field(call, "depth"), Some("0"));
    assert_eq!(field(call, "caller"), None);
    assert!(
        !seen
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.level == Level::ERROR),
        "a successful call logs no error"
    );

    seen.clear();
    f.manager.call("alpha", "nope", b"").await.unwrap_err();
    let calls = seen.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let errors: Vec<SeenEvent> = seen
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.level == Level::ERROR)
        .cloned()
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].span, Some(calls[0].id));
    assert!(
        errors[0]
            .fields
            .get("error")
            .is_some_and(|e| e.contains("unknown_function")),
        "{errors:?}"
    );

    seen.clear();
    let call_beta = br#"{"target": "beta", "function": "who", "args": {}}"#;
    f.manager.call("alpha", "call", call_beta).await.unwrap();
    let calls = seen.calls();
    assert_eq!(
        calls.len(),
        2,
        "one span per call, not per layer: {calls:?}"
    );
    let (outer, inner) = (&calls[0], &calls[1]);
    assert_eq!(
        (field(outer, "plugin"), field(outer, "function")),
        (Some("alpha"), Some("call"))
    );
    assert_eq!(
        (
            field(inner, "plugin"),
            field(inner, "function"),
            field(inner, "caller"),
            field(inner, "depth")
        ),
        (Some("beta"), Some("who"), Some("alpha"), Some("1"))
    );
    assert!(
        seen.descends(inner.id, outer.id),
        "the called plugin's span is under the caller's: {:?}",
        seen.spans.lock().unwrap()
    );
}
