//! Nodes starting together on a new database: each opens the store (creating its tables) at
//! the same moment, and every one of them opens it.

use gk_core::Store;
use sea_orm::ConnectionTrait;

use crate::{service_url, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_a_new_database_all_open_the_store() {
    let Some(admin_url) = service_url("GK_TEST_POSTGRES_URL") else {
        return;
    };
    let name = unique("gk_store_race").replace('-', "_");
    let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let opened = futures::future::join_all((0..6).map(|_| {
        let url = url.clone();
        async move {
            let db = sea_orm::Database::connect(&url).await.unwrap();
            Store::open(db).await.map(|_| ())
        }
    }))
    .await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    for result in opened {
        result.expect("every node opens the store");
    }
}
