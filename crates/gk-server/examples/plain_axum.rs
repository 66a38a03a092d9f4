//! The baseline of `cargo xtask bench`: a plain axum handler answering the same JSON as the
//! Stats plugin's overview route, with no plugin, sandbox or token check in between. It uses
//! the same allocator as `gk` (mimalloc), so that the comparison measures what the server adds.
//!
//! `cargo run --release -p gk-server --example plain_axum -- 127.0.0.1:9100`

use axum::Router;
use axum::routing::get;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let app = Router::new().route(
        "/api/plugins/plain/overview",
        get(|| async {
            (
                [("content-type", "application/json")],
                r#"{"closed":6,"open":4,"pending":2,"range":"all","total":12}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("plain axum on http://{address}/api/plugins/plain/overview");
    axum::serve(listener, app).await
}
