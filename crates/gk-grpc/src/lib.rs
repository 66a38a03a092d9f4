//! gk-grpc: runs plugin executables in their own process and speaks to them over gRPC.
//!
//! It will own process spawning with an OS sandbox (Linux namespaces, pdeathsig, minimal
//! environment), the go-plugin style handshake, the tonic client of `PluginService`, one
//! `HostService` server per plugin that stamps the caller, restart on crash and stdio capture.
//!
//! It depends on `gk-sdk` only: it never knows the manager, the store or the server.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
