//! A `Deployment` and a `Service`: the container gets `PORT`, is probed on `health-path` (or
//! its port, without one), and has at least `shutdown-timeout-ms` between SIGTERM and SIGKILL.
//!
//! Written as text: every value is a number, a DNS label (plain unless YAML would take it for
//! a boolean or null), or a double-quoted scalar with every character YAML would change escaped.

use std::fmt::Write as _;
use std::path::Path;

use super::DeployTarget;
use super::escape::{yaml_name, yaml_quoted};
use super::{Deployment, Generated, ceil_seconds};
use crate::exit_codes::BadInput;

pub(super) fn render(deployment: &Deployment, dir: &Path) -> Result<Vec<Generated>, BadInput> {
    let name = object_name(&deployment.instance)?;
    Ok(vec![Generated {
        path: dir.join(format!("{}.yaml", deployment.instance)),
        target: DeployTarget::Kubernetes,
        body: manifests(deployment, &name),
    }])
}

/// The instance as a Kubernetes object name (a DNS-1035 label, which also satisfies DNS-1123
/// and container names): lowercase letters, digits and `-`, starting with a letter, at most
/// 63 characters. `my_server` becomes `my-server`.
///
/// # Errors
/// When no such name can be made from it.
pub(super) fn object_name(instance: &str) -> Result<String, BadInput> {
    let name: String = instance
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let name = name.trim_matches('-');
    if name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Ok(name.to_owned())
    } else {
        Err(BadInput(format!(
            "instance `{instance}` cannot name Kubernetes objects: a name must start with a \
             letter and have at most 63 letters, digits and `-`; pass `--instance NAME`"
        )))
    }
}

/// A label value: letters, digits, `-`, `_` and `.`, at most 63, alphanumeric at both ends.
/// Semantic-version build metadata (`+build.5`) has a `+`, which labels do not allow.
fn label_value(text: &str) -> String {
    let value: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

fn manifests(deployment: &Deployment, name: &str) -> String {
    let config = &deployment.config;
    let port = deployment.port;
    let probe_timeout = ceil_seconds(config.check_timeout.value);
    let probe = match &config.health_path.value {
        Some(path) => format!(
            "httpGet:\n              path: {}\n              port: http",
            yaml_quoted(path)
        ),
        None => "tcpSocket:\n              port: http".to_owned(),
    };
    let name = &yaml_name(name);
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
        version = yaml_quoted(&label_value(&deployment.version)),
        replicas = deployment.replicas,
        stop_ms = config.shutdown_timeout.value.as_millis(),
        grace = ceil_seconds(config.shutdown_timeout.value),
        image = yaml_quoted(&deployment.image.value),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_become_dns_labels_or_are_refused() {
        assert_eq!(object_name("hello-server").unwrap(), "hello-server");
        assert_eq!(object_name("My_Server.v2").unwrap(), "my-server-v2");
        assert_eq!(object_name("_api_").unwrap(), "api");
        for refused in ["9lives", "-", &"a".repeat(64), "a b", "été"] {
            let error = object_name(refused).unwrap_err().to_string();
            assert!(error.contains(&format!("instance `{refused}`")), "{error}");
        }
    }

    #[test]
    fn versions_become_label_values() {
        assert_eq!(label_value("0.1.0"), "0.1.0");
        assert_eq!(label_value("1.0.0-rc.1+build.5"), "1.0.0-rc.1_build.5");
        assert_eq!(label_value(&"9".repeat(80)).len(), 63);
    }
}
