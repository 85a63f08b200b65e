//! axum-server: an axum app that plays well with portguard.
//!
//! Run it with `cargo serve-safe` from this folder, or on its own with
//! `PORT=8080 cargo run`. Routes: `GET /` a greeting, `GET /health` answers `ok`.
//!
//! `src/portguard.rs` is what `cargo portguard init` writes for axum: the
//! listening socket portguard passes (`handoff = "socket"` in Cargo.toml) or
//! one bound to `PORTGUARD_HOST`:`PORT`, a shutdown signal for axum's graceful
//! shutdown, and the readiness message. It needs no crate beyond axum and tokio.

mod portguard;

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(hello))
        .route("/health", get(|| async { "ok\n" }));

    let listener = portguard::listener().await?;
    println!(
        "axum-server: listening on http://{}, pid {}",
        listener.local_addr()?,
        std::process::id()
    );
    portguard::notify_ready();

    // On SIGTERM (what `cargo portguard stop` and Ctrl-C in `cargo serve-safe`
    // send) or SIGINT, axum stops accepting and lets open requests finish.
    axum::serve(listener, app)
        .with_graceful_shutdown(portguard::shutdown_signal())
        .await?;
    println!("axum-server: stopped gracefully");
    Ok(())
}

async fn hello() -> String {
    format!("Hello from axum-server, pid {}.\n", std::process::id())
}
