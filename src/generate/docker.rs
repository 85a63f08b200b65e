//! A multi-stage `Dockerfile` (built with the official Rust image, run on a slim Debian of the
//! same release, so the C library matches) and a `.dockerignore` at the build context, the
//! workspace root.
//!
//! What runs is written in exec form (JSON arrays, no shell, no variable substitution), so a
//! value reaches the program as one argument whatever it holds; the file names `COPY` needs
//! are refused unless Docker reads them literally; `ENV` and `EXPOSE` hold numbers only.

use std::fmt::Write as _;
use std::path::Path;

use super::DeployTarget;
use super::escape::{self, exec_form};
use super::{Deployment, Generated};
use crate::exit_codes::BadInput;

/// The Debian release both stages are based on.
const DEBIAN: &str = "bookworm";

pub(super) fn render(
    deployment: &Deployment,
    package_root: &Path,
    context: &Path,
) -> Result<Vec<Generated>, BadInput> {
    Ok(vec![
        Generated {
            path: package_root.join("Dockerfile"),
            target: DeployTarget::Docker,
            body: dockerfile(deployment)?,
        },
        Generated {
            path: context.join(".dockerignore"),
            target: DeployTarget::Docker,
            body: dockerignore(),
        },
    ])
}

fn dockerfile(deployment: &Deployment) -> Result<String, BadInput> {
    let config = &deployment.config;
    let bin = deployment
        .bin
        .fit("a Dockerfile COPY", escape::copy_file_name)?;
    let port = deployment.port;
    let rust = deployment.rust_version.as_deref().unwrap_or("1");
    let dockerfile = if deployment.package_dir.value.is_empty() {
        "Dockerfile".to_owned()
    } else {
        format!("{}/Dockerfile", deployment.package_dir.value)
    };
    let dockerfile = super::Input::new(
        dockerfile,
        "Dockerfile path",
        &deployment.package_dir.source,
    );
    let mut build = vec!["cargo", "build", "--release"];
    if deployment.locked {
        build.push("--locked");
    }
    build.extend(["--package", &deployment.package, "--bin", bin]);
    let mut text = format!(
        "# Build from the workspace root: docker build -f {dockerfile} -t {image} .\n\
         \n\
         FROM rust:{rust}-slim-{DEBIAN} AS build\n\
         WORKDIR /src\n\
         COPY . .\n\
         RUN {build}\n\
         \n\
         FROM debian:{DEBIAN}-slim\n",
        dockerfile = dockerfile.fit("a comment", escape::shell_word)?,
        image = deployment.image.fit("a comment", escape::shell_word)?,
        build = exec_form(&build),
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
        // Docker counts any exit status but 0 as unhealthy, so curl's own failure codes do;
        // --globoff keeps curl from reading `{}` and `[]` in the path as URL patterns.
        let url = format!("http://127.0.0.1:{port}{path}");
        let _ = write!(
            text,
            "HEALTHCHECK --interval=10s --timeout={timeout}ms --start-period={start}ms \\\n    \
             CMD {check}\n",
            timeout = config.check_timeout.value.as_millis(),
            start = config.ready_timeout.value.as_millis(),
            check = exec_form(&[
                "curl",
                "--fail",
                "--silent",
                "--show-error",
                "--globoff",
                "--output",
                "/dev/null",
                &url,
            ]),
        );
    }
    let _ = write!(
        text,
        "USER 65534:65534\n\
         CMD {run}\n",
        run = exec_form(&[&format!("/usr/local/bin/{bin}")]),
    );
    Ok(text)
}

fn dockerignore() -> String {
    "# Build output, portguard's state and local settings stay out of the image.\n\
     target/\n\
     .portguard/\n\
     .env\n\
     .git/\n"
        .to_owned()
}
