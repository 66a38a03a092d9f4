//! The control bus: how one node tells the others that a plugin's stored state changed.
//!
//! Redis pub/sub when Redis is configured, else PostgreSQL `LISTEN`/`NOTIFY` when the store is
//! on PostgreSQL, else nothing (MariaDB without Redis: the nodes converge by the periodic
//! reconciliation alone). A message only names the plugin and the node that changed it; the
//! receiver reads the store. Messages can be lost (a node restarting, a network blip): every
//! (re)connection of the subscriber asks for a full reconciliation, so nothing depends on a
//! message arriving.

use std::time::Duration;

use fred::prelude::{
    Builder, ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::manager::StateChange;
use crate::{CoreError, Store};

/// How long a Redis command (or the first connection) may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the PostgreSQL listener waits before trying again after an error.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlMessage {
    /// The node that made the change.
    pub(crate) node: String,
    /// The plugin.
    pub(crate) plugin: String,
    /// What changed.
    pub(crate) change: StateChange,
}

/// What the subscriber hands to the node's reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Another node changed this plugin.
    Changed(ControlMessage),
    /// The subscription (re)started: messages may have been missed, look at everything.
    Resync,
}

/// Which transport carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// Redis pub/sub.
    Redis,
    /// PostgreSQL `LISTEN`/`NOTIFY`.
    Postgres,
    /// No messages: periodic reconciliation only.
    None,
}

/// The sending side of the bus.
#[derive(Debug)]
pub(crate) enum Bus {
    /// Redis: a client to publish with.
    Redis(fred::clients::Client),
    /// PostgreSQL: `pg_notify` through the store.
    Postgres(Store),
    /// Nothing to send on.
    None,
}

impl Bus {
    /// Which transport this is.
    pub(crate) fn kind(&self) -> BusKind {
        match self {
            Self::Redis(_) => BusKind::Redis,
            Self::Postgres(_) => BusKind::Postgres,
            Self::None => BusKind::None,
        }
    }

    /// Publishes `message` on `channel`. A failure is logged: the periodic reconciliation of the
    /// other nodes brings them the change anyway.
    pub(crate) async fn publish(&self, channel: &str, message: &ControlMessage) {
        let payload = match serde_json::to_string(message) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "cannot encode a control message");
                return;
            }
        };
        let result = match self {
            Self::Redis(client) => client
                .publish::<i64, _, _>(channel, payload)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Self::Postgres(store) => store
                .notify(channel, &payload)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Self::None => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(plugin = %message.plugin, %error, "cannot publish a control message; the other nodes pick the change up when they next reconcile");
        }
    }
}

/// A client that connects in the background and keeps reconnecting: a node starts, and keeps
/// serving, while Redis is down.
fn redis_client(url: &str) -> Result<fred::clients::Client, CoreError> {
    let mut config = Config::from_url(url)
        .map_err(|e| CoreError::Config(format!("cluster redis_url {url}: {e}")))?;
    config.fail_fast = false;
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = REDIS_TIMEOUT;
            c.internal_command_timeout = REDIS_TIMEOUT;
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = REDIS_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
        .map_err(|e| CoreError::Config(format!("cluster redis_url {url}: {e}")))
}

fn decode(payload: &str, own_node: &str) -> Option<Signal> {
    match serde_json::from_str::<ControlMessage>(payload) {
        Ok(message) if message.node == own_node => None,
        Ok(message) => Some(Signal::Changed(message)),
        Err(error) => {
            tracing::warn!(%error, "ignoring a control message that cannot be read");
            None
        }
    }
}

/// Connects the bus: a publisher and a subscriber task that sends what it hears (and a
/// [`Signal::Resync`] at every (re)subscription) to `signals`. Returns the publisher and the
/// subscriber's task.
pub(crate) async fn connect(
    redis_url: Option<&str>,
    store: &Store,
    store_url: &str,
    channel: String,
    node: String,
    signals: mpsc::UnboundedSender<Signal>,
) -> Result<(Bus, tokio::task::JoinHandle<()>), CoreError> {
    if let Some(url) = redis_url {
        let publisher = redis_client(url)?;
        let _connection = publisher.connect();
        let subscriber = redis_client(url)?;
        let _connection = subscriber.connect();
        let task = tokio::spawn(redis_subscriber(subscriber, channel, node, signals));
        return Ok((Bus::Redis(publisher), task));
    }
    if store.backend() == sea_orm::DatabaseBackend::Postgres {
        let mut listener = sea_orm::sqlx::postgres::PgListener::connect(store_url)
            .await
            .map_err(|e| CoreError::Config(format!("cluster: cannot LISTEN on the store: {e}")))?;
        listener
            .listen(&channel)
            .await
            .map_err(|e| CoreError::Config(format!("cluster: cannot LISTEN on the store: {e}")))?;
        let task = tokio::spawn(postgres_subscriber(listener, channel, node, signals));
        return Ok((Bus::Postgres(store.clone()), task));
    }
    tracing::warn!(
        "cluster: no Redis and the store is not on PostgreSQL: nodes learn of changes only when they reconcile"
    );
    Ok((Bus::None, tokio::spawn(async {})))
}

/// Subscribes to `channel`, trying again (every second, then less often) until it works.
async fn subscribe(subscriber: &fred::clients::Client, channel: &str) {
    let mut pause = LISTEN_RETRY;
    let mut warned = false;
    loop {
        match subscriber.subscribe(channel.to_owned()).await {
            Ok(()) => {
                if warned {
                    tracing::info!(%channel, "cluster: subscribed to the control channel again");
                }
                return;
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(%channel, %error, "cluster: cannot subscribe to the control channel; changes arrive by reconciliation until it works");
                    warned = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn redis_subscriber(
    subscriber: fred::clients::Client,
    channel: String,
    node: String,
    signals: mpsc::UnboundedSender<Signal>,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    subscribe(&subscriber, &channel).await;
    if signals.send(Signal::Resync).is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    let Some(payload) = message.value.as_string() else { continue };
                    if let Some(signal) = decode(&payload, &node)
                        && signals.send(signal).is_err()
                    {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "cluster: control messages were dropped; reconciling");
                    if signals.send(Signal::Resync).is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            reconnect = reconnects.recv() => match reconnect {
                Ok(server) => {
                    tracing::info!(%server, "cluster: Redis is back; subscribing again and reconciling");
                    subscribe(&subscriber, &channel).await;
                    if signals.send(Signal::Resync).is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

async fn postgres_subscriber(
    mut listener: sea_orm::sqlx::postgres::PgListener,
    channel: String,
    node: String,
    signals: mpsc::UnboundedSender<Signal>,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if let Some(signal) = decode(notification.payload(), &node)
                    && signals.send(signal).is_err()
                {
                    return;
                }
            }
            // The connection was lost; the next call reconnects (and listens again).
            Ok(None) => {
                tracing::warn!(%channel, "cluster: the LISTEN connection was lost; reconnecting and reconciling");
                if signals.send(Signal::Resync).is_err() {
                    return;
                }
            }
            Err(error) => {
                // One warning and one reconciliation per outage, not one a second.
                tracing::warn!(%error, "cluster: LISTEN failed; retrying until the store answers");
                let mut pause = LISTEN_RETRY;
                loop {
                    tokio::time::sleep(pause).await;
                    match listener.listen(&channel).await {
                        Ok(()) => break,
                        Err(_) => pause = (pause * 2).min(Duration::from_secs(30)),
                    }
                }
                tracing::info!(%channel, "cluster: listening again; reconciling");
                if signals.send(Signal::Resync).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_ignores_its_own_messages_and_reads_the_others() {
        let message = ControlMessage {
            node: "a".into(),
            plugin: "stats".into(),
            change: StateChange::Package,
        };
        let json = serde_json::to_string(&message).expect("json");
        assert_eq!(json, r#"{"node":"a","plugin":"stats","change":"package"}"#);
        assert_eq!(decode(&json, "a"), None);
        assert_eq!(decode(&json, "b"), Some(Signal::Changed(message)));
        assert_eq!(decode("{not json", "b"), None);
    }
}
