//! `cargo portguard ports`: every candidate port of the resolved configuration, in the order
//! `serve-safe` tries them, with what each one is now (free, busy and held by whom, reserved by
//! another portguard, not permitted), and the port `serve-safe` would take; while the instance
//! `serve-safe` would start runs already, that it would refuse, and what a copy with
//! `--instance NAME` would take. The answer to "who is on port 5000" that `lsof -i :5000` gives
//! otherwise.
//!
//! It only looks: nothing is started, built or written, and no socket is left bound (the checks
//! bind and close at once, without listening).

use std::fmt::Write as _;

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::cli::{CommonArgs, ConfigQueryArgs};
use crate::config::Config;
use crate::context::Context;
use crate::exit_codes;
use crate::instance::summary::State;
use crate::instance::{InstanceName, StateDir};
use crate::output::inert;
use crate::port::{self, Holder, PortState};
use crate::project::Project;
use crate::runtime::RuntimeDir;

/// What a candidate port is now, as `ports` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CandidateState {
    /// `serve-safe` could take it.
    Free,
    /// Another socket listens on it; `holder` is who, where that could be found out.
    Busy { holder: Option<Holder> },
    /// Another portguard of this user holds it for a running instance; `by` says which, and
    /// `holder` is the process listening on it, if one does and it could be found.
    Reserved { by: String, holder: Option<Holder> },
    /// The OS refuses it to this user (a port below 1024 without privileges).
    NotPermitted,
    /// It cannot be bound for another reason, given here.
    Unavailable(String),
}

impl CandidateState {
    /// The state as the STATE column and the JSON `state` field spell it.
    #[must_use]
    pub(crate) fn name(&self, json: bool) -> &'static str {
        match self {
            CandidateState::Free => "free",
            CandidateState::Busy { .. } => "busy",
            CandidateState::Reserved { .. } => "reserved",
            CandidateState::NotPermitted if json => "not_permitted",
            CandidateState::NotPermitted => "not permitted",
            CandidateState::Unavailable(_) => "unavailable",
        }
    }

    /// The HOLDER column: who holds the port, or why it cannot be had.
    fn detail(&self) -> String {
        match self {
            CandidateState::Free | CandidateState::NotPermitted => String::new(),
            CandidateState::Busy {
                holder: Some(holder),
            } => holder.to_string(),
            CandidateState::Busy { holder: None } => "unknown".to_owned(),
            CandidateState::Reserved { by, holder: None } => inert(by).into_owned(),
            CandidateState::Reserved {
                by,
                holder: Some(holder),
            } => format!("{}: {holder}", inert(by)),
            CandidateState::Unavailable(why) => inert(why).into_owned(),
        }
    }
}

impl From<PortState> for CandidateState {
    fn from(state: PortState) -> Self {
        match state {
            PortState::Free => CandidateState::Free,
            PortState::Busy { holder } => CandidateState::Busy { holder },
            PortState::Reserved { by } => CandidateState::Reserved { by, holder: None },
            PortState::NotPermitted => CandidateState::NotPermitted,
            PortState::Unavailable(why) => CandidateState::Unavailable(why),
        }
    }
}

/// One candidate port and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) port: u16,
    pub(crate) state: CandidateState,
}

/// What `serve-safe` would do with these candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// This candidate, the first free one.
    Port(u16),
    /// A port from the OS: no candidate is free and `dynamic-port` is on.
    Dynamic,
    /// Nothing: no candidate is free and `dynamic-port` is off.
    Nothing,
}

/// The survey of one configuration's candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Survey {
    pub(crate) host: IpAddr,
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) dynamic_port: bool,
    /// The instance `serve-safe` would start, when it is running already: `serve-safe` would
    /// refuse, and the pick is what a copy with `--instance NAME` would take.
    pub(crate) running: Option<RunningInstance>,
}

/// The default instance (named after the binary, as `serve-safe` names it) while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RunningInstance {
    pub(crate) instance: String,
    /// The server's pid and port; `None` while it starts and has no record yet.
    pub(crate) pid: Option<u32>,
    pub(crate) port: Option<u16>,
}

/// The default instance of `project` if it is running: the one `serve-safe` without
/// `--instance` would start, in the state folder it would use. Nothing when the binary cannot be
/// told (several and none configured), or the state folder is missing or not safely this
/// user's: then `ports` answers about the candidates alone.
fn running_instance(
    context: &Context,
    project: &Project,
    config: &Config,
) -> Option<RunningInstance> {
    let target = project.target(None, config.bin.value.as_deref()).ok()?;
    let name = InstanceName::new(target.name()).ok()?;
    let located = StateDir::locate(
        &project.workspace_root,
        context.path_var("PORTGUARD_STATE_DIR"),
    );
    // Checked first so that a project that never ran gets no warning about its missing folder.
    std::fs::symlink_metadata(located.path()).ok()?;
    let state = StateDir::find(&project.workspace_root, Some(located.path().to_owned()))?;
    let summary = state.instance(&name).summary(false).ok()?;
    (summary.state == State::Running).then(|| RunningInstance {
        pid: summary.running.as_ref().map(|run| run.pid),
        port: summary.running.as_ref().map(|run| run.port),
        instance: summary.instance,
    })
}

/// The hook for per-user port reservations: which other portguard instance holds `port` in
/// the runtime folder `dir`, if one does (see [`crate::reserve`]).
#[must_use]
pub(crate) fn reservation_holder(dir: Option<&RuntimeDir>, port: u16) -> Option<String> {
    port::reservation_holder(dir, port)
}

/// Looks at every candidate of `config`, in order, as `serve-safe` would: a port reserved by
/// another portguard (`reserved` names the instance) is reserved, whatever its sockets; every
/// other port is checked for a bind, and a busy port's holder looked up.
#[must_use]
pub(crate) fn survey(config: &Config, reserved: impl Fn(u16) -> Option<String>) -> Survey {
    let host = config.host.value;
    let candidates = config
        .candidates()
        .into_iter()
        .map(|port| {
            let checked = port::check(host, port);
            let state = match (reserved(port), checked) {
                (Some(by), PortState::Busy { holder }) => CandidateState::Reserved { by, holder },
                (Some(by), _) => CandidateState::Reserved { by, holder: None },
                (None, checked) => checked.into(),
            };
            Candidate { port, state }
        })
        .collect();
    Survey {
        host,
        candidates,
        dynamic_port: config.dynamic_port.value,
        running: None,
    }
}

impl Survey {
    /// The port `serve-safe` would take: the first free candidate, else one from the OS if
    /// `dynamic-port` allows it.
    #[must_use]
    pub(crate) fn pick(&self) -> Pick {
        let free = self
            .candidates
            .iter()
            .find(|candidate| candidate.state == CandidateState::Free);
        match (free, self.dynamic_port) {
            (Some(candidate), _) => Pick::Port(candidate.port),
            (None, true) => Pick::Dynamic,
            (None, false) => Pick::Nothing,
        }
    }

    /// The table (`PORT  STATE  HOLDER`) and a line saying what `serve-safe` would take.
    #[must_use]
    pub(crate) fn render(&self) -> String {
        let rows: Vec<[String; 3]> = self
            .candidates
            .iter()
            .map(|c| {
                [
                    c.port.to_string(),
                    c.state.name(false).to_owned(),
                    c.state.detail(),
                ]
            })
            .collect();
        let header = ["PORT".to_owned(), "STATE".to_owned(), "HOLDER".to_owned()];
        let width = |column: usize| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (port_width, state_width) = (width(0), width(1));
        let mut out = String::new();
        for [port, state, holder] in std::iter::once(&header).chain(&rows) {
            let line = format!("{port:<port_width$}  {state:<state_width$}  {holder}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
        // Writing to a String cannot fail.
        let who = match &self.running {
            Some(running) => {
                let _ = writeln!(
                    out,
                    "instance `{}` is already running ({}): serve-safe would refuse to start it \
                     again",
                    inert(&running.instance),
                    match (running.pid, running.port) {
                        (Some(pid), Some(port)) => format!("pid {pid}, port {port}"),
                        _ => "starting".to_owned(),
                    }
                );
                "a copy with `--instance NAME`"
            }
            None => "serve-safe",
        };
        let _ = match self.pick() {
            Pick::Port(port) => writeln!(out, "{who} would use port {port} on {}", self.host),
            Pick::Dynamic => writeln!(
                out,
                "{who} would use a port from the OS on {}: no candidate is free",
                self.host
            ),
            Pick::Nothing => writeln!(
                out,
                "{who} would find no port on {}: no candidate is free and `dynamic-port` is off",
                self.host
            ),
        };
        out
    }

    /// The `--json` answer.
    #[must_use]
    pub(crate) fn to_json(&self) -> Json {
        Json {
            host: self.host.to_string(),
            candidates: self.candidates.iter().map(JsonCandidate::from).collect(),
            would_use: match self.pick() {
                Pick::Port(port) => Some(port),
                Pick::Dynamic | Pick::Nothing => None,
            },
            dynamic_port: self.dynamic_port,
            running: self.running.clone(),
        }
    }
}

/// `ports --json`: `would_use` is null when no candidate is free; `dynamic_port` then tells
/// whether `serve-safe` would take a port from the OS or fail. `running` is null, or the
/// default instance that runs already (`instance`, `pid`, `port`; pid and port null while it
/// starts): then `serve-safe` would refuse, and `would_use` is what a copy with
/// `--instance NAME` would take.
#[derive(Debug, Serialize)]
pub(crate) struct Json {
    pub(crate) host: String,
    pub(crate) candidates: Vec<JsonCandidate>,
    pub(crate) would_use: Option<u16>,
    pub(crate) dynamic_port: bool,
    pub(crate) running: Option<RunningInstance>,
}

/// One candidate in `ports --json`.
#[derive(Debug, Serialize)]
pub(crate) struct JsonCandidate {
    pub(crate) port: u16,
    pub(crate) state: &'static str,
    /// The portguard instance that reserved the port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<String>,
    /// The process listening on a busy or reserved port, when it could be found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) command: Option<String>,
    /// Why an unavailable port cannot be had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

impl From<&Candidate> for JsonCandidate {
    fn from(candidate: &Candidate) -> Self {
        let mut json = JsonCandidate {
            port: candidate.port,
            state: candidate.state.name(true),
            by: None,
            pid: None,
            command: None,
            reason: None,
        };
        match &candidate.state {
            CandidateState::Busy {
                holder: Some(holder),
            } => {
                json.pid = Some(holder.pid);
                json.command = Some(holder.command.clone()).filter(|c| !c.is_empty());
            }
            CandidateState::Reserved { by, holder } => {
                json.by = Some(by.clone());
                if let Some(holder) = holder {
                    json.pid = Some(holder.pid);
                    json.command = Some(holder.command.clone()).filter(|c| !c.is_empty());
                }
            }
            CandidateState::Unavailable(why) => json.reason = Some(why.clone()),
            CandidateState::Free | CandidateState::NotPermitted | CandidateState::Busy { .. } => {}
        }
        json
    }
}

/// `cargo portguard ports`. Exit 0 whatever the ports are; 2 for bad input.
///
/// # Errors
/// Bad input (configuration, flags, environment, `.env`), a cargo that cannot read the project,
/// stdout gone.
pub(crate) fn ports(context: &Context, common: &CommonArgs, args: &ConfigQueryArgs) -> Result<i32> {
    let crate::config::Loaded {
        project, config, ..
    } = super::load_config(context, common, args.flags())?;
    let runtime = context.runtime_dir().ok();
    let mut survey = survey(&config, |port| reservation_holder(runtime, port));
    survey.running = running_instance(context, &project, &config);
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&survey.to_json())
            .context("could not encode the ports")?;
        text.push('\n');
        text
    } else {
        survey.render()
    };
    crate::output::answer(&text)?;
    Ok(exit_codes::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, Sourced};
    use std::net::{Ipv4Addr, TcpListener};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn candidate(port: u16, state: CandidateState) -> Candidate {
        Candidate { port, state }
    }

    fn survey_of(candidates: Vec<Candidate>, dynamic_port: bool) -> Survey {
        Survey {
            host: LOCALHOST,
            candidates,
            dynamic_port,
            running: None,
        }
    }

    fn busy_by(pid: u32, command: &str) -> CandidateState {
        CandidateState::Busy {
            holder: Some(Holder {
                pid,
                command: command.to_owned(),
            }),
        }
    }

    fn config_with(candidates: &[u16], dynamic: bool) -> Config {
        let sourced = |value| Sourced {
            value,
            source: Source::Default,
        };
        Config {
            preferred_port: sourced(Some(candidates[0])),
            fallback_ports: Sourced {
                value: candidates[1..].to_vec(),
                source: Source::Default,
            },
            dynamic_port: Sourced {
                value: dynamic,
                source: Source::Default,
            },
            ..Config::default()
        }
    }

    #[test]
    fn the_first_free_candidate_is_picked() {
        let survey = survey_of(
            vec![
                candidate(5000, busy_by(42, "node server.js")),
                candidate(
                    5001,
                    CandidateState::Reserved {
                        by: "api".into(),
                        holder: None,
                    },
                ),
                candidate(80, CandidateState::NotPermitted),
                candidate(5002, CandidateState::Free),
                candidate(5003, CandidateState::Free),
            ],
            false,
        );
        assert_eq!(survey.pick(), Pick::Port(5002));
        assert_eq!(survey.to_json().would_use, Some(5002));
    }

    #[test]
    fn without_a_free_candidate_dynamic_port_decides() {
        let taken = vec![candidate(5000, CandidateState::Busy { holder: None })];
        assert_eq!(survey_of(taken.clone(), true).pick(), Pick::Dynamic);
        assert_eq!(survey_of(taken.clone(), false).pick(), Pick::Nothing);
        assert_eq!(survey_of(taken, true).to_json().would_use, None);
        assert_eq!(survey_of(Vec::new(), true).pick(), Pick::Dynamic);
    }

    #[test]
    fn the_table_is_aligned_and_says_what_would_be_used() {
        let survey = survey_of(
            vec![
                candidate(5000, busy_by(4242, "node server.js")),
                candidate(5001, CandidateState::Free),
                candidate(80, CandidateState::NotPermitted),
                candidate(5002, CandidateState::Busy { holder: None }),
                candidate(
                    5003,
                    CandidateState::Reserved {
                        by: "`api` in /src/shop".into(),
                        holder: None,
                    },
                ),
                candidate(
                    5004,
                    CandidateState::Reserved {
                        by: "`web` in /src/shop".into(),
                        holder: Some(Holder {
                            pid: 81,
                            command: "target/debug/web".into(),
                        }),
                    },
                ),
            ],
            true,
        );
        assert_eq!(
            survey.render(),
            "\
PORT  STATE          HOLDER
5000  busy           pid 4242 `node server.js`
5001  free
80    not permitted
5002  busy           unknown
5003  reserved       `api` in /src/shop
5004  reserved       `web` in /src/shop: pid 81 `target/debug/web`

serve-safe would use port 5001 on 127.0.0.1
"
        );
    }

    #[test]
    fn the_last_line_says_when_no_candidate_is_free() {
        let taken = vec![candidate(5000, CandidateState::Busy { holder: None })];
        let dynamic = survey_of(taken.clone(), true).render();
        assert!(
            dynamic.ends_with(
                "\nserve-safe would use a port from the OS on 127.0.0.1: no candidate is free\n"
            ),
            "{dynamic}"
        );
        let nothing = survey_of(taken, false).render();
        assert!(
            nothing.ends_with("`dynamic-port` is off\n") && nothing.contains("would find no port"),
            "{nothing}"
        );
    }

    #[test]
    fn a_running_instance_is_named_and_the_pick_is_for_a_copy() {
        let mut survey = survey_of(
            vec![
                candidate(
                    5000,
                    CandidateState::Reserved {
                        by: "`api` in /src/shop".into(),
                        holder: None,
                    },
                ),
                candidate(5001, CandidateState::Free),
            ],
            true,
        );
        survey.running = Some(RunningInstance {
            instance: "api".into(),
            pid: Some(4242),
            port: Some(5000),
        });
        let text = survey.render();
        assert!(
            text.ends_with(
                "\ninstance `api` is already running (pid 4242, port 5000): serve-safe would \
                 refuse to start it again\n\
                 a copy with `--instance NAME` would use port 5001 on 127.0.0.1\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(survey.to_json()).expect("json");
        assert_eq!(
            json["running"],
            serde_json::json!({"instance": "api", "pid": 4242, "port": 5000})
        );
        assert_eq!(json["would_use"], 5001);

        survey.running = Some(RunningInstance {
            instance: "api".into(),
            pid: None,
            port: None,
        });
        survey.candidates.truncate(1);
        let text = survey.render();
        assert!(
            text.ends_with(
                "\ninstance `api` is already running (starting): serve-safe would refuse to \
                 start it again\n\
                 a copy with `--instance NAME` would use a port from the OS on 127.0.0.1: no \
                 candidate is free\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_has_the_holder_only_where_there_is_one() {
        let survey = survey_of(
            vec![
                candidate(5000, busy_by(4242, "node server.js")),
                candidate(5001, busy_by(7, "")),
                candidate(5002, CandidateState::Busy { holder: None }),
                candidate(5003, CandidateState::Free),
                candidate(80, CandidateState::NotPermitted),
                candidate(
                    5004,
                    CandidateState::Reserved {
                        by: "api".into(),
                        holder: None,
                    },
                ),
                candidate(5005, CandidateState::Unavailable("no such host".into())),
                candidate(
                    5006,
                    CandidateState::Reserved {
                        by: "web".into(),
                        holder: Some(Holder {
                            pid: 81,
                            command: "web".into(),
                        }),
                    },
                ),
            ],
            true,
        );
        let json = serde_json::to_value(survey.to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "host": "127.0.0.1",
                "candidates": [
                    {"port": 5000, "state": "busy", "pid": 4242, "command": "node server.js"},
                    {"port": 5001, "state": "busy", "pid": 7},
                    {"port": 5002, "state": "busy"},
                    {"port": 5003, "state": "free"},
                    {"port": 80, "state": "not_permitted"},
                    {"port": 5004, "state": "reserved", "by": "api"},
                    {"port": 5005, "state": "unavailable", "reason": "no such host"},
                    {"port": 5006, "state": "reserved", "by": "web", "pid": 81, "command": "web"},
                ],
                "would_use": 5003,
                "dynamic_port": true,
                "running": null,
            })
        );
    }

    #[test]
    fn survey_checks_each_candidate_in_order() {
        let bind = || {
            let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
            let port = listener.local_addr().expect("addr").port();
            (listener, port)
        };
        let (_held, busy) = bind();
        let (_held_reserved, reserved_busy) = bind();
        let free = bind().1;
        let reserved_free = bind().1;
        let config = config_with(&[busy, reserved_free, reserved_busy, free], false);
        let survey = survey(&config, |port| {
            [reserved_free, reserved_busy]
                .contains(&port)
                .then(|| "`other` in /elsewhere".to_owned())
        });
        let ports: Vec<u16> = survey.candidates.iter().map(|c| c.port).collect();
        assert_eq!(ports, [busy, reserved_free, reserved_busy, free]);
        let is_us = |holder: &Option<Holder>| {
            holder
                .as_ref()
                .is_some_and(|holder| holder.pid == std::process::id())
        };
        match &survey.candidates[0].state {
            CandidateState::Busy { holder } => assert!(is_us(holder), "{holder:?}"),
            other => panic!("expected our own listener, got {other:?}"),
        }
        assert_eq!(
            survey.candidates[1].state,
            CandidateState::Reserved {
                by: "`other` in /elsewhere".to_owned(),
                holder: None,
            }
        );
        match &survey.candidates[2].state {
            CandidateState::Reserved { by, holder } => {
                assert_eq!(by, "`other` in /elsewhere");
                assert!(is_us(holder), "{holder:?}");
            }
            other => panic!("expected a reserved port, got {other:?}"),
        }
        assert_eq!(survey.candidates[3].state, CandidateState::Free);
        assert_eq!(survey.pick(), Pick::Port(free));
    }
}
