//! edgecap: the event-capture daemon. `main.rs` only parses arguments; everything runs from
//! here so tests can drive [`daemon::run`] with their own shutdown future.

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fault;
pub mod follow;
pub mod forward;
pub mod ingest;
pub mod json;
pub mod limits;
pub mod notify;
pub mod project;
pub mod retry;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod system;
pub mod tls;
pub mod writer;

/// Resolves once `flag` is true (or its sender is gone). Drops the `watch::Ref` before
/// returning, so it can sit in a `select!` of a `Send` future.
pub async fn wait_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}
