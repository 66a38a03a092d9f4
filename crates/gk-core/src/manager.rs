//! The [`Manager`]: the plugins of a host, their state and every call into them.
//!
//! It builds each plugin's sandbox from the stored policy (or the default for a new plugin,
//! stored at once), initialises it outside any global lock, publishes it, routes calls (and
//! plugin-to-plugin calls, which go through the caller's sandbox), keeps enabled state and
//! policies in the [`Store`], replaces a plugin blue-green, and measures calls.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use gk_sandbox::{SandboxConfig, SandboxedHostApi};
use gk_sdk::{CallContext, GkRegistration, HostApi, Plugin, PluginError};

use crate::Store;
use crate::discovery::{Discovered, PluginRuntime};
use crate::host::{ProductionHost, Translations};

mod call;
mod catalog;
mod known;
mod package_texts;
mod policies;
mod replica;
mod stats;
mod status;
mod validation;

pub use catalog::{PluginItem, TranslationConflict};
pub use policies::{LOAD_TIME_SETTINGS, PolicyApplied};
pub use replica::{ChangeListener, StateChange, StoredStateApplied};
use stats::CallCounters;
pub use stats::{LATENCY_BUCKETS_MICROS, PluginStats};
pub use validation::{
    RESERVED_PATH_PREFIXES, RESERVED_TEMPLATES, ROUTE_METHODS, ROUTE_MIDDLEWARE, check_link,
};

/// Why the manager refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No plugin of that name is known.
    #[error("plugin `{0}` is not known")]
    NotFound(String),
    /// The plugin does not declare the item asked for.
    #[error("plugin `{plugin}` declares no {item}")]
    Undeclared {
        /// The plugin.
        plugin: String,
        /// What was asked for (`widget `id``).
        item: String,
    },
    /// The plugin is disabled.
    #[error("plugin `{0}` is disabled")]
    Disabled(String),
    /// The plugin's registration cannot be accepted.
    #[error("plugin `{plugin}` cannot be registered: {problem}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        problem: String,
    },
    /// The plugin failed.
    #[error("plugin `{plugin}`: {source}")]
    Plugin {
        /// The plugin.
        plugin: String,
        /// Its error.
        #[source]
        source: PluginError,
    },
    /// The host already routes plugin-to-plugin calls to another manager.
    #[error("the host already serves another manager")]
    HostInUse,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// The policy cannot be enforced.
    #[error(transparent)]
    Policy(#[from] gk_sandbox::PolicyError),
}

/// One loaded instance of a plugin.
struct Loaded {
    plugin: Arc<dyn Plugin>,
    registration: GkRegistration,
    sandbox: Arc<SandboxedHostApi>,
}

/// A known plugin.
struct Slot {
    name: String,
    /// Where to load it from, for a discovered plugin (replaced when its file changes).
    source: ArcSwapOption<Discovered>,
    /// Held while loading, so that concurrent first calls load once.
    load_lock: tokio::sync::Mutex<()>,
    /// Held while its stored state is written and applied, or read from the store and applied
    /// (another node's change): the two never interleave, so a stale read never undoes a
    /// newer local change.
    state_lock: tokio::sync::Mutex<()>,
    loaded: ArcSwapOption<Loaded>,
    enabled: std::sync::atomic::AtomicBool,
    counters: CallCounters,
    /// Why the last attempt to load it failed; cleared when it loads.
    load_error: ArcSwapOption<String>,
    /// What it declared the last time these exact bytes were loaded (the registration cache):
    /// the catalog knows its routes, widgets, menus and jobs before it loads.
    known: ArcSwapOption<GkRegistration>,
}

impl Slot {
    /// What it declares: the loaded instance's registration, else the cached one.
    fn registration(&self) -> Option<GkRegistration> {
        match self.loaded.load_full() {
            Some(loaded) => Some(loaded.registration.clone()),
            None => self
                .known
                .load_full()
                .map(|known| GkRegistration::clone(&known)),
        }
    }
}

/// The plugins of a host.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    host: Arc<dyn HostApi>,
    store: Store,
    sandbox_config: Arc<SandboxConfig>,
    plugins: RwLock<HashMap<String, Arc<Slot>>>,
    runtimes: RwLock<Vec<Arc<dyn PluginRuntime>>>,
    /// The `translate` service's catalogs, kept in step with the published registrations.
    translations: std::sync::OnceLock<Arc<Translations>>,
    /// Bumped whenever what the catalog queries answer may have changed.
    catalog_version: AtomicU64,
    /// The host templates a plugin may override (see [`Manager::allow_template_overrides`]).
    overridable_templates: RwLock<std::collections::BTreeSet<String>>,
    /// What a plugin's bytes are checked against each time they are loaded.
    signatures: RwLock<crate::signing::SignaturePolicy>,
    /// Told of every change this node makes to a plugin's stored state (the cluster).
    listener: std::sync::OnceLock<Arc<dyn ChangeListener>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("plugins", &self.names())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager over a [`ProductionHost`], wired both ways: the host's plugin-to-plugin calls
    /// come back through this manager, and its `translate` catalogs follow the registrations.
    pub fn for_production_host(
        host: Arc<ProductionHost>,
        store: Store,
        sandbox_config: Arc<SandboxConfig>,
    ) -> Result<Self, ManagerError> {
        let translations = host.services().translations.clone();
        let manager = Self::new(host.clone(), store, sandbox_config);
        host.set_plugin_caller(Arc::new(manager.clone()))
            .map_err(|_| ManagerError::HostInUse)?;
        manager.use_translations(translations);
        Ok(manager)
    }

    /// A manager over the real host services (`host`, which the sandboxes wrap) and `store`.
    pub fn new(host: Arc<dyn HostApi>, store: Store, sandbox_config: Arc<SandboxConfig>) -> Self {
        Self {
            inner: Arc::new(ManagerInner {
                host,
                store,
                sandbox_config,
                plugins: RwLock::new(HashMap::new()),
                runtimes: RwLock::new(Vec::new()),
                translations: std::sync::OnceLock::new(),
                catalog_version: AtomicU64::new(0),
                overridable_templates: RwLock::default(),
                signatures: RwLock::default(),
                listener: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Keeps `translations` (the catalogs the `translate` host service reads) in step with the
    /// registrations of the loaded plugins from now on. Set once; later calls are ignored.
    pub fn use_translations(&self, translations: Arc<Translations>) {
        if self.inner.translations.set(translations).is_err() {
            tracing::warn!("the manager already keeps a translation catalog; ignoring another");
        }
    }

    /// Checks every plugin's module or executable against `signatures` each time it is
    /// loaded (first load, reload, restart), on the bytes that are then loaded.
    pub fn set_signature_policy(&self, signatures: crate::signing::SignaturePolicy) {
        *self
            .inner
            .signatures
            .write()
            .unwrap_or_else(|p| p.into_inner()) = signatures;
    }

    fn catalog_changed(&self) {
        self.inner.catalog_version.fetch_add(1, Ordering::SeqCst);
    }

    /// A number that changes whenever a plugin is published, withdrawn, discovered, enabled or
    /// disabled: what was derived from the catalog queries (a route table, say) is stale once
    /// it differs.
    pub fn catalog_version(&self) -> u64 {
        self.inner.catalog_version.load(Ordering::SeqCst)
    }

    /// Called whenever an instance of a plugin is published.
    fn published(&self, registration: &GkRegistration) {
        self.catalog_changed();
        if let Some(translations) = self.inner.translations.get() {
            match &registration.i18n {
                Some(spec) => translations.set_plugin(&registration.name, spec),
                None => translations.remove_plugin(&registration.name),
            }
        }
    }

    /// Called whenever a plugin stops being loaded.
    fn withdrawn(&self, name: &str) {
        self.catalog_changed();
        if let Some(translations) = self.inner.translations.get() {
            translations.remove_plugin(name);
        }
    }

    /// The names of the known plugins, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, ManagerError> {
        self.inner
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    /// Registers a loaded plugin: validates its registration, builds its sandbox from its policy,
    /// calls `init` (within the policy's `init_timeout`, outside any lock) and publishes it.
    pub async fn register(&self, plugin: Arc<dyn Plugin>) -> Result<GkRegistration, ManagerError> {
        let loaded = self.prepare(plugin).await?;
        let registration = loaded.registration.clone();
        let name = registration.name.clone();
        let enabled = self.inner.store.plugin_enabled(&name).await?;
        let slot = Arc::new(Slot {
            name: name.clone(),
            source: ArcSwapOption::empty(),
            load_lock: tokio::sync::Mutex::new(()),
            state_lock: tokio::sync::Mutex::new(()),
            loaded: ArcSwapOption::from_pointee(loaded),
            enabled: std::sync::atomic::AtomicBool::new(enabled),
            counters: CallCounters::default(),
            load_error: ArcSwapOption::empty(),
            known: ArcSwapOption::empty(),
        });
        let previous = self
            .inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), slot);
        self.published(&registration);
        if let Some(previous) = previous {
            retire(&previous.name, previous.loaded.swap(None)).await;
        }
        tracing::info!(plugin = %name, enabled, "plugin registered");
        Ok(registration)
    }

    /// Adds a runtime that lazily discovered plugins can be loaded with.
    pub fn add_runtime(&self, runtime: Arc<dyn PluginRuntime>) {
        self.inner
            .runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(runtime);
    }

    /// Makes a discovered plugin known without loading it: it is loaded on first use, once,
    /// however many first calls arrive together.
    pub async fn add_discovered(&self, found: Discovered) -> Result<(), ManagerError> {
        self.add_discovered_all(vec![found]).await
    }

    /// The slot of a discovered plugin: a new one with `found` as its source, or the one
    /// already there (a plugin registered in the process, or another entry of the same name,
    /// keeps its own); whether it is new.
    fn insert_discovered(&self, found: Discovered, enabled: bool) -> (Arc<Slot>, bool) {
        let name = found.name.clone();
        let slot = Arc::new(Slot {
            name: name.clone(),
            source: ArcSwapOption::from_pointee(found),
            load_lock: tokio::sync::Mutex::new(()),
            state_lock: tokio::sync::Mutex::new(()),
            loaded: ArcSwapOption::empty(),
            enabled: std::sync::atomic::AtomicBool::new(enabled),
            counters: CallCounters::default(),
            load_error: ArcSwapOption::empty(),
            known: ArcSwapOption::empty(),
        });
        match self
            .inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
        {
            Entry::Occupied(existing) => (existing.get().clone(), false),
            Entry::Vacant(vacant) => (vacant.insert(slot).clone(), true),
        }
    }

    /// Loads `found` through its runtime now and replaces the running instance (blue-green); an
    /// error leaves the running instance as it was.
    pub async fn reload(&self, found: Discovered) -> Result<GkRegistration, ManagerError> {
        let (plugin, sha256) = self.load_with_runtime(&found).await?;
        let registration = plugin
            .register()
            .await
            .map_err(|source| ManagerError::Plugin {
                plugin: found.name.clone(),
                source,
            })?;
        if registration.name != found.name {
            let problem = format!(
                "it registers as `{}`; name the file or manifest after it",
                registration.name
            );
            return Err(ManagerError::Invalid {
                plugin: found.name.clone(),
                problem,
            });
        }
        let registration = self.replace(plugin).await?;
        self.remember_registration(&found.name, &sha256, &registration)
            .await;
        Ok(registration)
    }

    /// Makes a newly found plugin known, or points a known, unloaded one at its new source.
    pub async fn add_discovered_or_replace_source(
        &self,
        found: Discovered,
    ) -> Result<(), ManagerError> {
        // The slot stays: a load in progress (a first call, an upload) must land in it.
        match self.slot(&found.name) {
            Ok(slot) => {
                slot.source.store(Some(Arc::new(found)));
                self.recall_into(&slot).await;
                self.catalog_changed();
                Ok(())
            }
            Err(_) => self.add_discovered(found).await,
        }
    }

    /// Loads a discovered plugin now (a no-op when it is loaded) and returns its registration.
    pub async fn load(&self, name: &str) -> Result<GkRegistration, ManagerError> {
        let slot = self.slot(name)?;
        Ok(self.ensure_loaded(&slot).await?.registration.clone())
    }

    /// The loaded instance of a plugin, loading it first if it was only discovered.
    async fn ensure_loaded(&self, slot: &Arc<Slot>) -> Result<Arc<Loaded>, ManagerError> {
        if let Some(loaded) = slot.loaded.load_full() {
            return Ok(loaded);
        }
        let _loading = slot.load_lock.lock().await;
        if let Some(loaded) = slot.loaded.load_full() {
            return Ok(loaded);
        }
        let result = self.load_slot(slot).await;
        let error = result.as_ref().err().map(|e| Arc::new(e.to_string()));
        if error.is_some() {
            // What it declared last time no longer stands for a plugin that does not load.
            slot.known.store(None);
            self.catalog_changed();
        }
        slot.load_error.store(error);
        result
    }

    /// Loads a slot's plugin from its source and publishes it (the caller holds its load lock).
    async fn load_slot(&self, slot: &Arc<Slot>) -> Result<Arc<Loaded>, ManagerError> {
        let found = slot
            .source
            .load_full()
            .ok_or_else(|| ManagerError::NotFound(slot.name.clone()))?;
        let (plugin, sha256) = self.load_with_runtime(&found).await?;
        let loaded = Arc::new(self.prepare(plugin).await?);
        if loaded.registration.name != slot.name {
            let problem = format!(
                "it registers as `{}`; name the file or manifest after it",
                loaded.registration.name
            );
            retire(&slot.name, Some(loaded)).await;
            return Err(ManagerError::Invalid {
                plugin: slot.name.clone(),
                problem,
            });
        }
        slot.loaded.store(Some(loaded.clone()));
        self.published(&loaded.registration);
        self.remember_registration(&slot.name, &sha256, &loaded.registration)
            .await;
        slot.known
            .store(Some(Arc::new(loaded.registration.clone())));
        tracing::info!(plugin = %slot.name, "plugin loaded on first use");
        Ok(loaded)
    }

    /// Everything `register` and `replace` need before publishing: a validated, initialised plugin.
    async fn prepare(&self, plugin: Arc<dyn Plugin>) -> Result<Loaded, ManagerError> {
        let registration = plugin
            .register()
            .await
            .map_err(|source| ManagerError::Plugin {
                plugin: "(unregistered)".into(),
                source,
            })?;
        self.validate(&registration)?;
        let name = registration.name.clone();
        let policy = self.policy_for(&name).await?;
        let sandbox = Arc::new(SandboxedHostApi::with_config(
            name.clone(),
            self.inner.host.clone(),
            policy.clone(),
            self.inner.sandbox_config.clone(),
        )?);
        let init_ctx = CallContext::for_plugin(name.clone());
        let init = plugin.init(&init_ctx, sandbox.clone());
        match tokio::time::timeout(policy.init_timeout, init).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ManagerError::Plugin {
                    plugin: name,
                    source,
                });
            }
            Err(_) => {
                let source = PluginError::Timeout {
                    operation: "init".into(),
                    after: policy.init_timeout,
                };
                return Err(ManagerError::Plugin {
                    plugin: name,
                    source,
                });
            }
        }
        Ok(Loaded {
            plugin,
            registration,
            sandbox,
        })
    }

    /// Replaces a plugin blue-green: the new instance is initialised before the old one stops
    /// taking calls; calls in flight on the old one finish; enabled state and policy carry over.
    pub async fn replace(&self, plugin: Arc<dyn Plugin>) -> Result<GkRegistration, ManagerError> {
        let loaded = self.prepare(plugin).await?;
        let registration = loaded.registration.clone();
        let Ok(slot) = self.slot(&registration.name) else {
            return self.register(loaded.plugin).await;
        };
        let old = slot.loaded.swap(Some(Arc::new(loaded)));
        self.published(&registration);
        retire(&slot.name, old).await;
        tracing::info!(plugin = %slot.name, "plugin replaced");
        Ok(registration)
    }

    /// Unloads a plugin (shutdown within its policy's timeout). Its policy and enabled state stay
    /// in the store.
    pub async fn unregister(&self, name: &str) -> Result<(), ManagerError> {
        let slot = self
            .inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))?;
        self.withdrawn(name);
        retire(name, slot.loaded.swap(None)).await;
        Ok(())
    }

    /// Enables or disables a plugin, persistently.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        by: &str,
    ) -> Result<(), ManagerError> {
        let slot = self.slot(name)?;
        let _state = slot.state_lock.lock().await;
        self.inner
            .store
            .set_plugin_enabled(name, enabled, by)
            .await?;
        slot.enabled.store(enabled, Ordering::SeqCst);
        self.catalog_changed();
        self.announce(name, StateChange::State);
        Ok(())
    }

    /// Whether a plugin is enabled.
    pub fn is_enabled(&self, name: &str) -> Result<bool, ManagerError> {
        Ok(self.slot(name)?.enabled.load(Ordering::SeqCst))
    }

    /// A plugin's registration.
    pub fn registration(&self, name: &str) -> Result<GkRegistration, ManagerError> {
        self.slot(name)?
            .loaded
            .load_full()
            .map(|l| l.registration.clone())
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    /// Shuts every plugin down.
    pub async fn shutdown_all(&self) {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for slot in slots {
            self.withdrawn(&slot.name);
            retire(&slot.name, slot.loaded.swap(None)).await;
        }
    }
}

/// Shuts an instance down once the calls in flight on it are done (bounded by its policy's
/// shutdown timeout).
async fn retire(name: &str, old: Option<Arc<Loaded>>) {
    let Some(old) = old else { return };
    let grace = old.sandbox.effective_policy().shutdown_timeout;
    let deadline = Instant::now() + grace;
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ctx = CallContext::for_plugin(name);
    match tokio::time::timeout(grace, old.plugin.shutdown(&ctx)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(plugin = name, %error, "shutdown failed"),
        Err(_) => tracing::warn!(plugin = name, "shutdown timed out"),
    }
}
