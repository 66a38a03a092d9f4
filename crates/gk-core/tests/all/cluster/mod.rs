//! The cluster pieces against real backends: rate limits shared in Redis, and job occurrences
//! claimed in Redis or the store's database, the store opened by nodes starting together. Each
//! test uses keys, plugin names and job ids of its own run, so runs in parallel do not meet.

mod jobs;
mod limits;
mod store;

/// A name no other test run uses.
pub(crate) fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Deletes the keys a test left under `prefix` in the Redis at `url`.
pub(crate) async fn forget_keys(url: &str, prefix: &str) {
    use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
    use fred::types::CustomCommand;
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let keys: Vec<String> = client
        .custom(
            CustomCommand::new_static("KEYS", None, false),
            vec![format!("{prefix}:*")],
        )
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = client.del(keys).await.unwrap();
    }
    let _ = client.quit().await;
}
