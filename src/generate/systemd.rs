//! A `.socket` and a `.service` unit: systemd binds the port and passes the socket at fd 3 with
//! `LISTEN_FDS`/`LISTEN_PID`, which is what `cargo serve-safe` does in socket handoff, so the
//! glue takes it unchanged.

use std::net::IpAddr;
use std::path::Path;

use super::{Deployment, Generated};
use crate::cli::DeployTarget;

pub(super) fn render(deployment: &Deployment, dir: &Path) -> Vec<Generated> {
    let name = &deployment.instance;
    vec![
        Generated {
            path: dir.join(format!("{name}.socket")),
            target: DeployTarget::Systemd,
            body: socket(deployment),
        },
        Generated {
            path: dir.join(format!("{name}.service")),
            target: DeployTarget::Systemd,
            body: service(deployment),
        },
    ]
}

/// `ListenStream=` as systemd writes an address: IPv6 in brackets.
#[must_use]
pub fn listen_stream(host: IpAddr, port: u16) -> String {
    match host {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn socket(deployment: &Deployment) -> String {
    let config = &deployment.config;
    format!(
        "\n[Unit]\n\
         Description={name} listening socket\n\
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
        name = deployment.instance,
        listen = listen_stream(config.host.value, config.preferred_port.value),
    )
}

fn service(deployment: &Deployment) -> String {
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
    format!(
        "\n[Unit]\n\
         Description={name} ({package} {version})\n\
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
        package = deployment.package,
        version = deployment.version,
        exec = deployment.bin_dir.join(&deployment.bin).display(),
        stop = config.shutdown_timeout.value.as_millis(),
    )
}
