//! Joining a cluster at start (`[cluster] enabled`): the configuration checks, then
//! [`gk_core::cluster::Cluster::join`].

use std::net::SocketAddr;
use std::sync::Arc;

use gk_core::cluster::{Cluster, ClusterConfig};
use gk_core::{Loader, Manager};

use crate::ServeConfig;
use crate::server::ServerError;

/// Checks what a cluster needs before anything is opened: a store every node shares, and a
/// token secret every node signs with.
pub(crate) fn check(config: &ServeConfig) -> Result<(), ServerError> {
    if !config.cluster.enabled {
        return Ok(());
    }
    if config.store_url().starts_with("sqlite:") {
        return Err(ServerError::ClusterConfig(
            "cluster.enabled needs a store every node shares: set database.url (or \
             GOATKIT_DATABASE_URL) to PostgreSQL or MariaDB"
                .to_owned(),
        ));
    }
    if config.token_secret.is_none() {
        return Err(ServerError::ClusterConfig(
            "cluster.enabled needs token_secret (GOATKIT_TOKEN_SECRET), the same on every node, \
             so that a token one node signs is good on all"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Joins the cluster when `[cluster] enabled`; `None` otherwise.
pub(crate) async fn join(
    config: &ServeConfig,
    manager: &Manager,
    loader: &Arc<Loader>,
    addr: SocketAddr,
) -> Result<Option<Arc<Cluster>>, ServerError> {
    if !config.cluster.enabled {
        return Ok(None);
    }
    let settings = &config.cluster;
    let cluster = Cluster::join(
        ClusterConfig {
            node_id: settings.node_id_or_default(addr.port()),
            prefix: settings.namespace(),
            redis_url: config.redis_url.clone(),
            store_url: config.store_url(),
            reconcile_every: settings.reconcile_every,
            heartbeat_every: settings.heartbeat_every,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            address: advertised(settings.advertise.as_deref(), addr),
            // `check` refused a cluster without one.
            secret: config
                .token_secret
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        },
        manager.clone(),
        Arc::clone(loader),
    )
    .await?;
    Ok(Some(Arc::new(cluster)))
}

/// The rate limiter every node shares: Redis, when this node is part of a cluster and Redis is
/// configured; `None` keeps each sandbox's own limits. It connects in the background: a node
/// starts while Redis is down, applying its own limits until Redis answers.
pub(crate) fn shared_limiter(
    config: &ServeConfig,
) -> Result<Option<Arc<dyn gk_sandbox::SharedLimiter>>, ServerError> {
    let (true, Some(url)) = (config.cluster.enabled, &config.redis_url) else {
        return Ok(None);
    };
    let limiter = gk_core::cluster::RedisLimiter::connect_lazy(url, &config.cluster.namespace())
        .map_err(|source| ServerError::Service {
            key: "redis_url".to_owned(),
            source,
        })?;
    Ok(Some(limiter))
}

/// Who may run each job occurrence: claimed in Redis when configured, else in the store; `None`
/// (every occurrence runs here) when this node is not part of a cluster.
pub(crate) async fn job_claims(
    config: &ServeConfig,
    store: &gk_core::Store,
) -> Result<Option<Arc<dyn gk_core::cluster::JobClaims>>, ServerError> {
    if !config.cluster.enabled {
        return Ok(None);
    }
    let node = config.cluster.node_id_or_default(config.listen.port());
    Ok(Some(match &config.redis_url {
        Some(url) => {
            gk_core::cluster::RedisJobClaims::connect_lazy(url, &config.cluster.namespace(), &node)
                .map_err(|source| ServerError::Service {
                    key: "redis_url".to_owned(),
                    source,
                })?
        }
        None => gk_core::cluster::StoreJobClaims::new(store.clone(), &node),
    }))
}

/// The address other nodes reach this one at: `advertise`, else the listen address (with a
/// warning when that is a wildcard no other node can connect to).
fn advertised(advertise: Option<&str>, addr: SocketAddr) -> String {
    if let Some(address) = advertise {
        return address.to_owned();
    }
    if addr.ip().is_unspecified() {
        tracing::warn!(%addr, "the node listens on a wildcard address: set cluster.advertise to the host:port other nodes reach it at, or the merged log view leaves this node out");
    }
    addr.to_string()
}
