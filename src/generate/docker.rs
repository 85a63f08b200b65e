//! A multi-stage `Dockerfile` (built with the official Rust image, run on a slim Debian of the
//! same release, so the C library matches) and a `.dockerignore` at the build context, the
//! workspace root.

use std::fmt::Write as _;
use std::path::Path;

use super::{Deployment, Generated};
use crate::cli::DeployTarget;

/// The Debian release both stages are based on.
const DEBIAN: &str = "bookworm";

pub(super) fn render(
    deployment: &Deployment,
    package_root: &Path,
    context: &Path,
) -> Vec<Generated> {
    vec![
        Generated {
            path: package_root.join("Dockerfile"),
            target: DeployTarget::Docker,
            body: dockerfile(deployment),
        },
        Generated {
            path: context.join(".dockerignore"),
            target: DeployTarget::Docker,
            body: dockerignore(),
        },
    ]
}

fn dockerfile(deployment: &Deployment) -> String {
    let config = &deployment.config;
    let bin = &deployment.bin;
    let port = config.preferred_port.value;
    let rust = deployment.rust_version.as_deref().unwrap_or("1");
    let locked = if deployment.locked { " --locked" } else { "" };
    let dockerfile = if deployment.package_dir.is_empty() {
        "Dockerfile".to_owned()
    } else {
        format!("{}/Dockerfile", deployment.package_dir)
    };
    let mut text = format!(
        "# Build from the workspace root: docker build -f {dockerfile} -t {image} .\n\
         \n\
         FROM rust:{rust}-slim-{DEBIAN} AS build\n\
         WORKDIR /src\n\
         COPY . .\n\
         RUN cargo build --release{locked} --package {package} --bin {bin}\n\
         \n\
         FROM debian:{DEBIAN}-slim\n",
        image = deployment.image,
        package = deployment.package,
    );
    if config.health_path.value.is_some() {
        text.push_str(
            "# curl for the health check; nothing else is added to the image.\n\
             RUN apt-get update \\\n    \
             && apt-get install --yes --no-install-recommends curl \\\n    \
             && rm -rf /var/lib/apt/lists/*\n",
        );
    }
    let _ = write!(
        text,
        "COPY --from=build /src/target/release/{bin} /usr/local/bin/{bin}\n\
         # The glue binds PORTGUARD_HOST:PORT when no socket is passed; in a container that is\n\
         # every interface, on the preferred port.\n\
         ENV PORTGUARD_HOST=0.0.0.0 PORT={port}\n\
         EXPOSE {port}\n\
         # Stopping is SIGTERM, then SIGKILL after `docker stop --time` (shutdown-timeout-ms is {stop} ms).\n\
         STOPSIGNAL SIGTERM\n",
        stop = config.shutdown_timeout.value.as_millis(),
    );
    if let Some(path) = &config.health_path.value {
        let _ = write!(
            text,
            "HEALTHCHECK --interval=10s --timeout={timeout}ms --start-period={start}ms \\\n    \
             CMD curl --fail --silent --show-error --output /dev/null http://127.0.0.1:{port}{path} || exit 1\n",
            timeout = config.check_timeout.value.as_millis(),
            start = config.ready_timeout.value.as_millis(),
        );
    }
    let _ = write!(
        text,
        "USER 65534:65534\n\
         CMD [\"/usr/local/bin/{bin}\"]\n"
    );
    text
}

fn dockerignore() -> String {
    "# Build output, portguard's state and local settings stay out of the image.\n\
     target/\n\
     .portguard/\n\
     .env\n\
     .git/\n"
        .to_owned()
}
