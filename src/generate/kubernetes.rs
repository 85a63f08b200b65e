//! A `Deployment` and a `Service`: the container gets `PORT`, is probed on `health-path` (or
//! its port, without one), and has at least `shutdown-timeout-ms` between SIGTERM and SIGKILL.
//!
//! Written as text: every value is a name from a safe alphabet, a number, or a string quoted
//! as JSON, which YAML reads as the same string.

use std::fmt::Write as _;
use std::path::Path;

use super::{Deployment, Generated, ceil_seconds};
use crate::cli::DeployTarget;

pub(super) fn render(deployment: &Deployment, dir: &Path) -> Vec<Generated> {
    vec![Generated {
        path: dir.join(format!("{}.yaml", deployment.instance)),
        target: DeployTarget::Kubernetes,
        body: manifests(deployment),
    }]
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn manifests(deployment: &Deployment) -> String {
    let config = &deployment.config;
    let name = &deployment.instance;
    let port = config.preferred_port.value;
    let probe_timeout = ceil_seconds(config.check_timeout.value);
    let probe = match &config.health_path.value {
        Some(path) => format!(
            "httpGet:\n              path: {}\n              port: http",
            quoted(path)
        ),
        None => "tcpSocket:\n              port: http".to_owned(),
    };
    let mut text = String::from("---\n");
    let _ = write!(
        text,
        "apiVersion: apps/v1\n\
kind: Deployment\n\
metadata:\n\
\x20 name: {name}\n\
\x20 labels:\n\
\x20   app.kubernetes.io/name: {name}\n\
\x20   app.kubernetes.io/version: {version}\n\
\x20   app.kubernetes.io/managed-by: portguard\n\
spec:\n\
\x20 replicas: {replicas}\n\
\x20 selector:\n\
\x20   matchLabels:\n\
\x20     app.kubernetes.io/name: {name}\n\
\x20 template:\n\
\x20   metadata:\n\
\x20     labels:\n\
\x20       app.kubernetes.io/name: {name}\n\
\x20   spec:\n\
\x20     # shutdown-timeout-ms ({stop_ms} ms), rounded up: SIGTERM, then SIGKILL after it.\n\
\x20     terminationGracePeriodSeconds: {grace}\n\
\x20     containers:\n\
\x20       - name: {name}\n\
\x20         image: {image}\n\
\x20         ports:\n\
\x20           - name: http\n\
\x20             containerPort: {port}\n\
\x20             protocol: TCP\n\
\x20         env:\n\
\x20           - name: PORT\n\
\x20             value: \"{port}\"\n\
\x20           - name: PORTGUARD_HOST\n\
\x20             value: \"0.0.0.0\"\n\
\x20         readinessProbe:\n\
\x20           {probe}\n\
\x20           periodSeconds: 5\n\
\x20           timeoutSeconds: {probe_timeout}\n\
\x20         livenessProbe:\n\
\x20           {probe}\n\
\x20           periodSeconds: 10\n\
\x20           timeoutSeconds: {probe_timeout}\n\
\x20           failureThreshold: 3\n\
---\n\
apiVersion: v1\n\
kind: Service\n\
metadata:\n\
\x20 name: {name}\n\
\x20 labels:\n\
\x20   app.kubernetes.io/name: {name}\n\
\x20   app.kubernetes.io/managed-by: portguard\n\
spec:\n\
\x20 selector:\n\
\x20   app.kubernetes.io/name: {name}\n\
\x20 ports:\n\
\x20   - name: http\n\
\x20     port: {port}\n\
\x20     targetPort: http\n\
\x20     protocol: TCP\n",
        version = quoted(&deployment.version),
        replicas = deployment.replicas,
        stop_ms = config.shutdown_timeout.value.as_millis(),
        grace = ceil_seconds(config.shutdown_timeout.value),
        image = quoted(&deployment.image),
    );
    text
}
