//! The files `init` generates, kept as real Rust in `templates/` so they are read, reviewed and
//! compiled like any other code, and filled in by plain substitution.

use super::Framework;

const STD: &str = include_str!("../../templates/glue/std.rs");
/// tokio and axum take the same glue; only its header says how it is used.
const TOKIO_BASED: &str = include_str!("../../templates/glue/tokio-based.rs");
const ACTIX_WEB: &str = include_str!("../../templates/glue/actix-web.rs");

/// A block for a build script: `include!("portguard_build.rs");` runs it.
pub(crate) const BUILD_MODULE: &str = include_str!("../../templates/build/portguard_build.rs");
/// A whole build script that only runs the block.
pub(crate) const BUILD_SCRIPT: &str = include_str!("../../templates/build/build.rs");
/// The file name the block is written under, beside the build script.
pub(crate) const BUILD_MODULE_FILE: &str = "portguard_build.rs";
/// What the block needs to read Cargo.toml at build time.
pub(crate) const BUILD_DEPENDENCY: (&str, &str) = ("toml", "1");

/// The startup glue for `framework`, with the configured defaults baked in.
#[must_use]
pub(crate) fn glue(framework: Framework, host: &str, port: u16) -> String {
    let template = match framework {
        Framework::Std => STD.to_owned(),
        Framework::Tokio => TOKIO_BASED
            .replace("@NEEDS@", "Needs `tokio` with `net` and `rt`, nothing more.")
            .replace(
                "@SERVE@",
                "// then accept until `portguard::shutdown_signal()` completes, e.g. with `tokio::select!`",
            ),
        Framework::Axum => TOKIO_BASED
            .replace("@NEEDS@", "Needs only the `tokio` an axum app has (`net`, `rt`).")
            .replace(
                "@SERVE@",
                "axum::serve(listener, app).with_graceful_shutdown(portguard::shutdown_signal()).await?;",
            ),
        Framework::ActixWeb => ACTIX_WEB.to_owned(),
    };
    template
        .replace("@PORTGUARD_VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@DEFAULT_HOST@", host)
        .replace("@DEFAULT_PORT@", &port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `@NAME@`; a lone `@` is code (the abstract `NOTIFY_SOCKET` prefix).
    fn has_placeholder(text: &str) -> bool {
        let segments: Vec<&str> = text.split('@').collect();
        segments.len() > 2
            && segments[1..segments.len() - 1].iter().any(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
    }

    #[test]
    fn every_placeholder_is_filled() {
        assert!(has_placeholder(STD), "the template itself has placeholders");
        for framework in [
            Framework::Std,
            Framework::Tokio,
            Framework::Axum,
            Framework::ActixWeb,
        ] {
            let text = glue(framework, "127.0.0.1", 5000);
            assert!(
                !has_placeholder(&text),
                "{framework:?} glue keeps a placeholder:\n{text}"
            );
            assert!(text.contains("5000"), "{framework:?}");
        }
    }
}
