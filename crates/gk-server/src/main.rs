//! `gk`: the GoatKit server and command line.
//!
//! This file parses the command line and hands each subcommand to its function in [`cli`]
//! (one file per command or group of related commands); nothing else happens here but
//! starting the async runtime and the tracing subscriber.

mod cli;

/// mimalloc rather than the C library's allocator: a request through the server makes about
/// fifty small allocations, and glibc's `malloc`/`free` were a fifth of its instructions
/// (callgrind, `POST /api/v1/plugins/noop/call/ping`); the library crates leave the choice to
/// the binary. Built with `no_thp`, so that it does not ask for transparent huge pages for its
/// arenas (`madvise(MADV_HUGEPAGE)`): with the kernel's THP mode `madvise`, that had the server's
/// RSS grow from 36 to 51 MiB at start and from ~155 KiB to 1.1 MiB per loaded WASM plugin.
/// (Under THP `always` the kernel may still back them with huge pages.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// GoatKit: run and manage GoatFlow plugins.
#[derive(Debug, Parser)]
#[command(name = "gk", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server with the plugins of the plugins directory. With no configuration it
    /// runs on embedded defaults: SQLite under ./data, in-memory cache, outbox email, ./plugins,
    /// 127.0.0.1:8080. Settings come from goatkit.toml, then GOATKIT_* variables (one per key,
    /// e.g. GOATKIT_LISTEN, GOATKIT_DATABASE_URL, GOATKIT_APPROVE), then these flags.
    Serve(cli::serve::ServeArgs),
    /// Write a new plugin project: a Cargo project, plugin.yaml and a README with the build
    /// command. Build it with `gk build DIR`.
    Init(cli::project::InitArgs),
    /// Build a plugin project (release): `<name>.wasm` for a WASM plugin (installing the WASM
    /// toolchain when it is missing, and saying so), the executable for a gRPC plugin, written
    /// beside its plugin.yaml.
    Build(cli::project::BuildArgs),
    /// Generate an ed25519 key pair for signing plugins: `<name>.key` (keep it secret) and
    /// `<name>.pub` (give it to the servers that should trust your plugins).
    Keygen(cli::signing::KeygenArgs),
    /// Sign a plugin file (module, binary or package): writes `<file>.sig`.
    Sign(cli::signing::SignArgs),
    /// Verify a plugin file's `<file>.sig` against trusted public keys; fails when none matches.
    Verify(cli::signing::VerifyArgs),
    /// Build a plugin package (ZIP) from a directory with a plugin.yaml.
    Package(cli::packaging::PackageArgs),
    /// Manage the plugins of a running server through its API.
    Plugins(cli::plugins::PluginsArgs),
    /// Mint an API token from the server's secret (the configured one, or the one `gk serve`
    /// generated into the data directory).
    Token(cli::token::TokenArgs),
}

fn main() -> anyhow::Result<()> {
    cli::config::take_token_secret();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => cli::serve::run(args).await,
        Command::Init(args) => cli::project::init(args),
        Command::Build(args) => cli::project::build(args),
        Command::Keygen(args) => cli::signing::keygen(args),
        Command::Sign(args) => cli::signing::sign(args),
        Command::Verify(args) => cli::signing::verify(args),
        Command::Package(args) => cli::packaging::package(args).await,
        Command::Plugins(args) => cli::plugins::run(args).await,
        Command::Token(args) => cli::token::run(args),
    }
}
