//! Composition: the host services, the store, the manager with both runtimes, the loader and
//! the HTTP listener, started together and stopped gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use gk_core::host::{
    DatabaseConfig, Databases, HostServices, HttpClient, LogLimits, Mailer, MemoryCache, Outbox,
    PluginLogs, ProductionHost, RedisCache, SmtpMailer, Translations,
};
use gk_core::signing::{SignaturePolicy, TrustedKeys};
use gk_core::{Loader, Manager, Store, WatchHandle};
use gk_sandbox::SandboxConfig;
use gk_wasm::{WasmConfig, WasmRuntime};
use tokio::sync::oneshot;

use crate::ServeConfig;
use crate::auth::{Role, TokenKeys, load_or_generate_secret};
use crate::router::router;
use crate::runtimes::{GrpcAdapter, WasmAdapter};
use crate::state::{AppState, SharedState};

/// Entries in each plugin's log ring.
const LOG_RING: usize = 1000;
/// How long the admin token printed on a fresh install stays valid.
const FIRST_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Entries of the in-memory cache.
const CACHE_ENTRIES: usize = 100_000;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A directory could not be made.
    #[error("cannot create {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A host service could not start.
    #[error(transparent)]
    Host(#[from] gk_core::CoreError),
    /// A configured service cannot be used: the key that names it, and why.
    #[error("{key}: {source}")]
    Service {
        /// The configuration key (`databases.reports.url`, `email.smtp_url`, …).
        key: String,
        /// Why.
        #[source]
        source: gk_core::CoreError,
    },
    /// The configuration file cannot be watched for reloads.
    #[error("cannot follow the configuration file for reloads: {0}")]
    Reload(notify::Error),
    /// The database configuration has no `default` database for the store.
    #[error("the database configuration has no `default` database")]
    NoDefaultDatabase,
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] gk_core::StoreError),
    /// The WASM runtime could not start.
    #[error(transparent)]
    Wasm(#[from] gk_wasm::WasmError),
    /// The trusted keys could not be read.
    #[error(transparent)]
    Signature(#[from] gk_core::signing::SignatureError),
    /// The plugins directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] gk_core::WatchError),
    /// The manager could not be set up over the host.
    #[error(transparent)]
    Manager(#[from] gk_core::ManagerError),
    /// The token secret cannot be used.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// An `init_sql` file could not be read or run.
    #[error("init_sql {path}: {message}")]
    InitSql {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The cluster settings cannot be used.
    #[error("{0}")]
    ClusterConfig(String),
    /// The node could not join its cluster.
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] gk_core::cluster::ClusterError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A started server: its address and what stops it.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (the real port when the configuration asked for port 0).
    pub addr: SocketAddr,
    /// The plugins.
    pub manager: Manager,
    /// Signs and checks tokens.
    pub tokens: TokenKeys,
    /// On a fresh install (no secret yet): an admin token for the first login, shown once.
    pub first_admin_token: Option<String>,
    /// The plugins' jobs.
    pub scheduler: Arc<gk_core::Scheduler>,
    /// This node's membership of its cluster (`[cluster] enabled`).
    pub cluster: Option<Arc<gk_core::cluster::Cluster>>,
    stop: oneshot::Sender<()>,
    jobs: tokio::task::JoinHandle<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    _watch: WatchHandle,
    _reload: crate::reload::ConfigReload,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, then shuts every plugin down.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        self.jobs.abort();
        match self.serving.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the HTTP server stopped with an error"),
            Err(error) => tracing::warn!(%error, "the HTTP server task failed"),
        }
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        self.manager.shutdown_all().await;
        tracing::info!("stopped");
    }
}

fn make_dir(path: &std::path::Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(path).map_err(|source| ServerError::Directory {
        path: path.display().to_string(),
        source,
    })
}

/// The sandbox settings: each database's statements parsed in its own dialect, and the
/// platform's tables out of every scope.
fn sandbox_config(
    databases: &Databases,
    shared_limiter: Option<Arc<dyn gk_sandbox::SharedLimiter>>,
) -> Arc<SandboxConfig> {
    let mut config = SandboxConfig::default().with_reserved_tables(Store::TABLES);
    for (name, dialect) in databases.dialects() {
        config = config.with_dialect(name, dialect);
    }
    if let Some(limiter) = shared_limiter {
        config = config.with_shared_limiter(limiter);
    }
    Arc::new(config)
}

/// `config` with every path made absolute against the working directory, once, at start: the
/// paths the server hands out (a gRPC plugin's host socket, which the plugin reaches from its
/// own directory) and compares (the watcher's events) never depend on a working directory.
fn with_absolute_paths(config: &ServeConfig) -> Result<ServeConfig, ServerError> {
    let absolute = |path: &std::path::Path| {
        std::path::absolute(path).map_err(|source| ServerError::Directory {
            path: path.display().to_string(),
            source,
        })
    };
    let mut resolved = config.clone();
    resolved.plugins_dir = absolute(&config.plugins_dir)?;
    resolved.data_dir = absolute(&config.data_dir)?;
    if let Some(dir) = &config.trusted_keys_dir {
        resolved.trusted_keys_dir = Some(absolute(dir)?);
    }
    if let Some(file) = &config.config_file {
        resolved.config_file = Some(absolute(file)?);
    }
    resolved.init_sql = config
        .init_sql
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<_, _>>()?;
    resolved.native_plugin_read_only_paths = config
        .native_plugin_read_only_paths
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<_, _>>()?;
    Ok(resolved)
}

/// Opens the default database and every named one; a database that cannot be opened stops the
/// start with the key that names it.
async fn connect_databases(config: &ServeConfig) -> Result<Databases, ServerError> {
    let limits = config.database_limits;
    let mut database_config = DatabaseConfig {
        query_timeout: limits.query_timeout,
        max_rows: limits.max_rows,
        max_result_bytes: limits.max_result_bytes,
        max_concurrent_queries: limits.max_concurrent_queries,
        ..DatabaseConfig::single(config.database_url())
    };
    database_config.urls.extend(config.databases.clone());
    Databases::connect(&database_config)
        .await
        .map_err(|source| match &source {
            gk_core::CoreError::DatabaseOpen { name, .. } => ServerError::Service {
                key: if name == gk_sdk::DEFAULT_DATABASE {
                    "database.url".to_owned()
                } else {
                    format!("databases.{name}.url")
                },
                source,
            },
            _ => ServerError::Host(source),
        })
}

/// The SMTP mailer when `[email] smtp_url` is set, checked to answer now.
async fn mailer(config: &ServeConfig) -> Result<Option<SmtpMailer>, ServerError> {
    let service_error = |source| ServerError::Service {
        key: "email.smtp_url".to_owned(),
        source,
    };
    let smtp = config
        .email
        .smtp_config()
        .map_err(|e| service_error(gk_core::CoreError::Config(e.to_string())))?;
    let Some(smtp) = smtp else {
        return Ok(None);
    };
    let mailer = SmtpMailer::new(&smtp).map_err(service_error)?;
    mailer.check().await.map_err(service_error)?;
    tracing::info!(host = %smtp.host, port = smtp.port, "email goes out over SMTP");
    Ok(Some(mailer))
}

/// Runs each `init_sql` file whose content has not run yet.
async fn run_init_sql(
    store: &Store,
    databases: &Databases,
    files: &[std::path::PathBuf],
) -> Result<(), ServerError> {
    let target = databases
        .connection(gk_sdk::DEFAULT_DATABASE)
        .ok_or(ServerError::NoDefaultDatabase)?;
    for file in files {
        let failed = |message: String| ServerError::InitSql {
            path: file.display().to_string(),
            message,
        };
        let sql = std::fs::read_to_string(file).map_err(|e| failed(e.to_string()))?;
        let label = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if store
            .run_sql_once(target, &label, &sql)
            .await
            .map_err(|e| failed(e.to_string()))?
        {
            tracing::info!(file = %file.display(), "init SQL ran");
        }
    }
    Ok(())
}

/// Starts the server described by `config`: opens the store, registers both runtimes, makes the
/// plugins of the plugins directory known (loaded on first use), watches the directory and
/// listens.
pub async fn start(config: &ServeConfig) -> Result<RunningServer, ServerError> {
    let config = &with_absolute_paths(config)?;
    crate::cluster::check(config)?;
    make_dir(&config.data_dir)?;
    make_dir(&config.plugins_dir)?;
    // Every configured service is checked before anything is opened or written.
    let mailer = mailer(config).await?;
    let databases = connect_databases(config).await?;
    let connection = databases
        .connection(gk_sdk::DEFAULT_DATABASE)
        .ok_or(ServerError::NoDefaultDatabase)?
        .clone();
    // The platform's state lives apart from plugin data: its own SQLite file by default.
    let store = Store::connect(&config.store_url()).await?;
    if config.store_url() != config.database_url() {
        store.adopt_tables_from(&connection).await?;
    }
    let sandbox_config = sandbox_config(&databases, crate::cluster::shared_limiter(config)?);
    let claims = crate::cluster::job_claims(config, &store).await?;
    let logs = Arc::new(PluginLogs::with_limits(LogLimits {
        entries: LOG_RING,
        line_bytes: config.log_line_bytes,
        ring_bytes: config.log_ring_bytes,
    }));
    run_init_sql(&store, &databases, &config.init_sql).await?;
    let cache: Arc<dyn gk_core::host::Cache> = match &config.redis_url {
        Some(url) => Arc::new(RedisCache::connect_with_quota(url, config.cache_quota_bytes).await?),
        None => Arc::new(MemoryCache::with_quota(
            CACHE_ENTRIES,
            config.cache_quota_bytes,
        )),
    };
    let mailer: Arc<dyn Mailer> = match mailer {
        Some(smtp) => Arc::new(smtp),
        None => Arc::new(Outbox::new(store.clone())),
    };
    let email_label = if config.email.smtp_url.is_some() {
        "SMTP"
    } else {
        "outbox table"
    };
    let config_values = config.config_values();
    let host = Arc::new(ProductionHost::new(HostServices {
        databases,
        cache,
        logs: logs.clone(),
        config: config_values.clone(),
        translations: Arc::new(Translations::default()),
        mailer,
        http: HttpClient::new(config.http.client_config()),
    }));
    let manager = Manager::for_production_host(host, store, sandbox_config)?;
    let known = manager.clone();
    config_values.set_plugin_names(Arc::new(move || known.names()));
    let reload = crate::reload::follow(config, config_values).map_err(ServerError::Reload)?;
    manager.allow_template_overrides(config.overridable_templates.iter().cloned());

    let wasm = WasmRuntime::new(WasmConfig {
        cache_dir: Some(config.data_dir.join("module-cache")),
        ..WasmConfig::default()
    })?;
    manager.add_runtime(Arc::new(WasmAdapter::new(Arc::new(wasm))));
    let run_dir = config.data_dir.join("run");
    make_dir(&run_dir)?;
    manager.add_runtime(Arc::new(GrpcAdapter::with_isolation(
        run_dir,
        gk_grpc::IsolationConfig {
            allow_unisolated_native_plugins: config.allow_unisolated_native_plugins,
            read_only_paths: config.native_plugin_read_only_paths.clone(),
            ..gk_grpc::IsolationConfig::default()
        },
    )));

    let trusted = match &config.trusted_keys_dir {
        Some(dir) => TrustedKeys::from_dir(dir)?,
        None => TrustedKeys::default(),
    };
    let loader = Loader::new(
        manager.clone(),
        config.plugins_dir.clone(),
        config.data_dir.join("packages"),
        SignaturePolicy {
            required: config.require_signatures,
            trusted,
        },
    );
    for refused in loader.scan().await {
        tracing::warn!(%refused, "plugin not loaded");
    }
    for (name, approved) in manager
        .approve_unreviewed_all(&config.approve, "configuration")
        .await
    {
        if let Err(error) = approved {
            tracing::warn!(plugin = %name, %error, "cannot approve the plugin named in `approve`");
        }
    }
    if config.eager_loading {
        for failed in manager.load_all().await {
            tracing::warn!(error = %failed, "plugin not loaded");
        }
    }
    let watch = loader.watch()?;
    let scheduler = Arc::new(gk_core::Scheduler::new(manager.clone()));
    if let Some(claims) = claims {
        scheduler.set_claims(claims);
    }
    let jobs = scheduler.follow_manager();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    // Before the first request: a node joining a cluster installs the cluster's plugins first.
    let cluster = crate::cluster::join(config, &manager, &loader, addr).await?;
    let (secret, generated) =
        load_or_generate_secret(config.token_secret.as_deref(), &config.data_dir)?;
    let tokens = TokenKeys::from_secret(&secret)?;
    let first_admin_token = if generated {
        Some(tokens.mint("admin", Role::Admin, FIRST_TOKEN_TTL)?)
    } else {
        None
    };

    let (stop, stopped) = oneshot::channel::<()>();
    let pages = Arc::new(crate::pages::Pages::new());
    let app = router(AppState::new(SharedState {
        manager: manager.clone(),
        tokens: Arc::new(tokens.clone()),
        request_timeout: config.request_timeout,
        metrics_token: config.metrics_token.clone(),
        loader: loader.clone(),
        logs,
        pages: pages.clone(),
        templates: crate::pages::PluginTemplates::new(pages, manager.clone()),
        routes: Arc::default(),
        cluster: cluster.clone(),
    }));
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(
        %addr,
        plugins = ?manager.names(),
        database = %gk_core::host::redacted_url(&config.database_url()),
        plugins_dir = %config.plugins_dir.display(),
        cache = if config.redis_url.is_some() { "Redis" } else { "in memory" },
        email = email_label,
        "GoatKit is serving"
    );
    Ok(RunningServer {
        addr,
        manager,
        tokens,
        first_admin_token,
        scheduler,
        cluster,
        stop,
        jobs,
        serving,
        _watch: watch,
        _reload: reload,
    })
}
