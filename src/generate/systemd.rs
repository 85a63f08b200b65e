//! A `.socket` and a `.service` unit: systemd binds the port and passes the socket at fd 3 with
//! `LISTEN_FDS`/`LISTEN_PID`, which is what `cargo serve-safe` does in socket handoff, so the
//! glue takes it unchanged.
//!
//! `ExecStart=` is quoted as systemd splits command lines, and every text value has its `%`
//! specifiers doubled; unit names are instance names, whose alphabet systemd takes as it is.

use std::net::IpAddr;
use std::path::Path;

use super::DeployTarget;
use super::escape::{self, unit_text};
use super::{Deployment, Generated, Input};
use crate::exit_codes::BadInput;

pub(super) fn render(deployment: &Deployment, dir: &Path) -> Result<Vec<Generated>, BadInput> {
    let name = &deployment.instance;
    Ok(vec![
        Generated {
            path: dir.join(format!("{name}.socket")),
            target: DeployTarget::Systemd,
            body: socket(deployment)?,
        },
        Generated {
            path: dir.join(format!("{name}.service")),
            target: DeployTarget::Systemd,
            body: service(deployment)?,
        },
    ])
}

/// A text setting made of the instance and the package's name and version, which cargo and
/// the instance rules keep free of what systemd would change; checked all the same.
fn text(value: String) -> Result<String, BadInput> {
    Input::new(
        value,
        "systemd setting",
        "the instance, package and version",
    )
    .fit("a unit file", unit_text)
}

/// The executable: `--bin-dir` and the binary's name, each refused by its own name when the
/// path cannot be written.
fn exec_start(deployment: &Deployment) -> Result<String, BadInput> {
    let place = "systemd's ExecStart=";
    deployment.bin.fit(place, |bin| {
        if bin.contains('/') || bin == "." || bin == ".." {
            return Err("it is not a file name".to_owned());
        }
        // A name systemd cannot take is the name's fault whatever the folder.
        escape::exec_path(&format!("/{bin}")).map(drop)
    })?;
    let bin = &deployment.bin.value;
    deployment.bin_dir.fit(place, |dir| {
        escape::exec_path(&format!("{}/{bin}", dir.trim_end_matches('/')))
    })
}

/// `ListenStream=` as systemd writes an address: IPv6 in brackets.
#[must_use]
pub(crate) fn listen_stream(host: IpAddr, port: u16) -> String {
    match host {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn socket(deployment: &Deployment) -> Result<String, BadInput> {
    let config = &deployment.config;
    Ok(format!(
        "\n[Unit]\n\
         Description={description}\n\
         \n\
         [Socket]\n\
         # host and preferred-port; the server takes the socket at fd 3, as under portguard.\n\
         ListenStream={listen}\n\
         FileDescriptorName={name}\n\
         # The wildcard address accepts IPv4 and IPv6 only where the host says so.\n\
         BindIPv6Only=default\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n",
        description = text(format!("{} listening socket", deployment.instance))?,
        name = text(deployment.instance.clone())?,
        listen = listen_stream(config.host.value, deployment.port),
    ))
}

fn service(deployment: &Deployment) -> Result<String, BadInput> {
    let config = &deployment.config;
    let name = &deployment.instance;
    let (kind, kind_note) = if deployment.notifies {
        (
            "notify",
            "# The server calls notify_ready(): started means READY=1 was sent.",
        )
    } else {
        (
            "simple",
            "# The server sends no READY=1 (it does not call notify_ready()).",
        )
    };
    Ok(format!(
        "\n[Unit]\n\
         Description={description}\n\
         Requires={name}.socket\n\
         After=network.target {name}.socket\n\
         \n\
         [Service]\n\
         {kind_note}\n\
         Type={kind}\n\
         NotifyAccess=main\n\
         ExecStart={exec}\n\
         # shutdown-timeout-ms: SIGTERM to the whole control group, then SIGKILL after it.\n\
         KillMode=control-group\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={stop}ms\n\
         Restart=on-failure\n\
         # The socket comes from systemd, so the server needs no privilege: a user of its own.\n\
         DynamicUser=yes\n\
         NoNewPrivileges=yes\n\
         # No [Install]: enable the socket, and the first connection starts the service.\n",
        description = text(format!(
            "{name} ({} {})",
            deployment.package, deployment.version
        ))?,
        exec = exec_start(deployment)?,
        stop = config.shutdown_timeout.value.as_millis(),
    ))
}
