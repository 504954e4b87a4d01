//! The `[run]` section of a command file: what an ops command runs, under
//! which lock, after whose approval, and how it is undone. Checked when the
//! command files load: every template compiles and names only variables that
//! exist, every argument that reaches an argv has a pattern or a fixed set of
//! values, and the program of every step is fixed by the file, never by chat.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::command::{ArgKind, ArgSpec};
use crate::policy::Role;

/// Variables every step template may use besides the command's arguments.
pub const VARIABLES: [&str; 5] = ["requester", "target", "current_version", "opsclaw", "data_dir"];
/// Only rollback steps know what they return to.
pub const ROLLBACK_VARIABLES: [&str; 1] = ["previous_version"];
/// Secrets are referenced as `{{ secrets.NAME }}`.
pub const SECRETS: &str = "secrets";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;
const MAX_OUTPUT_CAP: usize = 16 * 1024 * 1024;
const DEFAULT_APPROVAL_EXPIRY: Duration = Duration::from_secs(3600);

/// A validated `[run]` section.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The lock key template: two runs with the same rendered target never overlap.
    pub target: String,
    /// Which arguments name the app, environment and version (deployment history).
    pub history: Option<HistoryKeys>,
    /// Allowed values of the environment argument; empty allows any value its pattern accepts.
    pub environments: Vec<String>,
    pub approval: Option<ApprovalSpec>,
    /// Relative paths are under the data directory.
    pub workdir: Option<PathBuf>,
    /// Environment variables passed through from the bot's environment.
    pub env: Vec<String>,
    /// Passed through like `env`, usable as `{{ secrets.NAME }}`, and redacted wherever output is shown or kept.
    pub secrets: Vec<String>,
    /// Variables set for every step, as templates (`APP_VERSION = "{{ version }}"`).
    pub set_env: Vec<(String, String)>,
    pub steps: Vec<StepSpec>,
    pub rollback: Vec<StepSpec>,
    /// A failed verify step starts the rollback at once.
    pub auto_rollback: bool,
}

#[derive(Debug, Clone)]
pub struct HistoryKeys {
    pub app: String,
    pub env: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct ApprovalSpec {
    pub approvers: u32,
    pub role: Role,
    pub expires: Duration,
    /// Only runs in these environments need approval; empty means every run.
    pub environments: Vec<String>,
    /// Rollbacks need approval too.
    pub rollback: bool,
}

#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    pub kind: StepKind,
    pub action: ActionSpec,
    pub timeout: Duration,
    pub output_cap: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    Run,
    /// Repeated every `interval` until it succeeds or the step's timeout passes.
    Verify {
        interval: Duration,
    },
    Pause(Duration),
}

#[derive(Debug, Clone)]
pub enum ActionSpec {
    /// Templates, one per argv element.
    Argv(Vec<String>),
    Http(HttpSpec),
    None,
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Accepted statuses; empty means any 2xx.
    pub expect: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    target: Option<String>,
    history: Option<RawHistory>,
    #[serde(default)]
    environments: Vec<String>,
    approval: Option<RawApproval>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    set_env: BTreeMap<String, String>,
    timeout: Option<String>,
    output_cap: Option<toml::Value>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    rollback: Vec<RawStep>,
    #[serde(default)]
    auto_rollback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    app: String,
    env: Option<String>,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    #[serde(default = "one")]
    approvers: u32,
    role: String,
    expires: Option<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default = "yes")]
    rollback: bool,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default = "run_kind")]
    kind: String,
    argv: Option<Vec<String>>,
    http: Option<RawHttp>,
    duration: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    output_cap: Option<toml::Value>,
}

fn run_kind() -> String {
    "run".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "post")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default)]
    expect: Vec<u16>,
}

fn post() -> String {
    "POST".into()
}

/// One problem: the key under `run` and what is wrong.
type Problem = (String, String);

fn duration(key: &str, text: &str) -> Result<Duration, Problem> {
    humantime::parse_duration(text).map_err(|e| (key.to_owned(), format!("`{text}` is not a duration: {e}")))
}

/// `65536`, `"64KiB"`, `"1MiB"`.
fn size(key: &str, value: &toml::Value) -> Result<usize, Problem> {
    let bad = || (key.to_owned(), format!("`{value}` is not a size (e.g. 65536, \"64KiB\", \"1MiB\")"));
    let n = match value {
        toml::Value::Integer(n) => usize::try_from(*n).map_err(|_| bad())?,
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: usize = digits.parse().map_err(|_| bad())?;
            let unit = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "KB" | "K" => 1024,
                "MiB" | "MB" | "M" => 1024 * 1024,
                _ => return Err(bad()),
            };
            n * unit
        }
        _ => return Err(bad()),
    };
    if n == 0 || n > MAX_OUTPUT_CAP {
        return Err((key.to_owned(), format!("must be between 1 byte and {} MiB", MAX_OUTPUT_CAP >> 20)));
    }
    Ok(n)
}

/// An optional setting: its value, the default when it is absent, and the
/// default (with the problem recorded) when it is wrong, so checking goes on.
fn or_default<T>(setting: Option<Result<T, Problem>>, default: T, problems: &mut Vec<Problem>) -> T {
    match setting {
        None => default,
        Some(Ok(value)) => value,
        Some(Err(problem)) => {
            problems.push(problem);
            default
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variables a template uses: top-level names, and `secrets.NAME` as is.
fn variables(key: &str, source: &str) -> Result<BTreeSet<String>, Problem> {
    let env = minijinja::Environment::new();
    let template = env.template_from_str(source).map_err(|e| (key.to_owned(), e.to_string()))?;
    Ok(template.undeclared_variables(true).into_iter().collect())
}

/// Validates `raw` against the command's arguments.
pub(crate) fn validate(raw: RawRun, command: &str, args: &[ArgSpec]) -> Result<RunSpec, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let arg = |name: &str| args.iter().find(|a| a.name == name);
    let mut used: Vec<(String, BTreeSet<String>, bool)> = Vec::new();
    let mut check =
        |key: String, source: &str, rollback: bool, problems: &mut Vec<Problem>| match variables(&key, source) {
            Ok(vars) => used.push((key, vars, rollback)),
            Err(p) => problems.push(p),
        };

    let target = raw.target.unwrap_or_else(|| command.to_owned());
    check("run.target".into(), &target, false, &mut problems);
    let history = raw.history.map(|h| HistoryKeys { app: h.app, env: h.env, version: h.version });
    if let Some(h) = &history {
        for (key, name) in [("app", Some(&h.app)), ("env", h.env.as_ref()), ("version", Some(&h.version))] {
            let Some(name) = name else { continue };
            match arg(name) {
                None => problems.push((format!("run.history.{key}"), format!("there is no argument `{name}`"))),
                Some(a) if matches!(a.kind, ArgKind::Flag | ArgKind::Text | ArgKind::Words) => problems
                    .push((format!("run.history.{key}"), format!("argument `{name}` must be a word or a choice"))),
                Some(a) if key == "version" && !a.required => {
                    problems.push(("run.history.version".into(), format!("argument `{name}` must be required")))
                }
                Some(_) => {}
            }
        }
    }
    if !raw.environments.is_empty() && history.as_ref().and_then(|h| h.env.as_ref()).is_none() {
        problems.push(("run.environments".into(), "needs run.history.env to name the environment argument".into()));
    }
    let approval = match raw.approval {
        None => None,
        Some(a) => {
            if a.approvers == 0 || a.approvers > 5 {
                problems.push(("run.approval.approvers".into(), "must be between 1 and 5".into()));
            }
            let role = Role::parse(&a.role).map_err(|m| problems.push(("run.approval.role".into(), m))).ok();
            let expires = or_default(
                a.expires.as_deref().map(|e| duration("run.approval.expires", e)),
                DEFAULT_APPROVAL_EXPIRY,
                &mut problems,
            );
            for env in &a.environments {
                if !raw.environments.is_empty() && !raw.environments.contains(env) {
                    problems.push(("run.approval.environments".into(), format!("`{env}` is not in run.environments")));
                }
            }
            role.map(|role| ApprovalSpec {
                approvers: a.approvers,
                role,
                expires,
                environments: a.environments,
                rollback: a.rollback,
            })
        }
    };
    for (key, names) in [("run.env", &raw.env), ("run.secrets", &raw.secrets)] {
        for name in names {
            if !valid_env_name(name) {
                problems.push((key.into(), format!("`{name}` is not an environment variable name")));
            }
        }
    }
    for (name, value) in &raw.set_env {
        if !valid_env_name(name) {
            problems.push(("run.set_env".into(), format!("`{name}` is not an environment variable name")));
        }
        check(format!("run.set_env.{name}"), value, false, &mut problems);
    }
    let timeout =
        or_default(raw.timeout.as_deref().map(|t| duration("run.timeout", t)), DEFAULT_TIMEOUT, &mut problems);
    let output_cap =
        or_default(raw.output_cap.as_ref().map(|v| size("run.output_cap", v)), DEFAULT_OUTPUT_CAP, &mut problems);
    let mut steps_of = |list: Vec<RawStep>, section: &str, problems: &mut Vec<Problem>| -> Vec<StepSpec> {
        let rollback = section == "rollback";
        let mut out = Vec::new();
        for (i, s) in list.into_iter().enumerate() {
            let key = format!("run.{section}[{i}]");
            match step(s, &key, timeout, output_cap) {
                Ok(spec) => {
                    match &spec.action {
                        ActionSpec::Argv(argv) => {
                            for (j, part) in argv.iter().enumerate() {
                                check(format!("{key}.argv[{j}]"), part, rollback, problems);
                            }
                            // The program is the file's choice, never the chat's.
                            if let Ok(vars) = variables(&key, &argv[0])
                                && vars.iter().any(|v| v != "opsclaw")
                            {
                                problems.push((
                                    format!("{key}.argv[0]"),
                                    "the program may only use {{ opsclaw }}, never arguments".into(),
                                ));
                            }
                        }
                        ActionSpec::Http(h) => {
                            check(format!("{key}.http.url"), &h.url, rollback, problems);
                            for (name, value) in &h.headers {
                                check(format!("{key}.http.headers.{name}"), value, rollback, problems);
                            }
                            if let Some(body) = &h.body {
                                check(format!("{key}.http.body"), body, rollback, problems);
                            }
                        }
                        ActionSpec::None => {}
                    }
                    out.push(spec);
                }
                Err(p) => problems.push(p),
            }
        }
        out
    };
    let steps = steps_of(raw.steps, "steps", &mut problems);
    let rollback = steps_of(raw.rollback, "rollback", &mut problems);
    if steps.is_empty() {
        problems.push(("run.steps".into(), "an ops command needs at least one step".into()));
    }
    if raw.auto_rollback && rollback.is_empty() && history.is_none() {
        problems.push((
            "run.auto_rollback".into(),
            "needs [[run.rollback]] steps or run.history (to redeploy the previous version)".into(),
        ));
    }

    // Every variable must exist; every argument reaching a step must be constrained.
    for (key, vars, rollback) in used {
        for var in vars {
            if let Some(name) = var.strip_prefix("secrets.") {
                if !raw.secrets.iter().any(|s| s == name) {
                    problems.push((key.clone(), format!("secret `{name}` is not listed in run.secrets")));
                }
                continue;
            }
            if var == SECRETS {
                problems.push((key.clone(), "use {{ secrets.NAME }} for one secret".into()));
                continue;
            }
            let var = var.split('.').next().unwrap_or(&var).to_owned();
            if VARIABLES.contains(&var.as_str()) || (rollback && ROLLBACK_VARIABLES.contains(&var.as_str())) {
                continue;
            }
            match arg(&var) {
                None if ROLLBACK_VARIABLES.contains(&var.as_str()) => {
                    problems.push((key.clone(), format!("`{var}` is only known in rollback steps")))
                }
                None => problems.push((key.clone(), format!("unknown variable `{var}`"))),
                Some(a) => match &a.kind {
                    ArgKind::Word { pattern: None } => problems.push((
                        key.clone(),
                        format!("argument `{var}` reaches a step, so it needs a `pattern` (or make it a choice)"),
                    )),
                    ArgKind::Text | ArgKind::Words => {
                        problems.push((key.clone(), format!("argument `{var}` is free text and cannot reach a step")))
                    }
                    _ => {}
                },
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RunSpec {
        target,
        history,
        environments: raw.environments,
        approval,
        workdir: raw.workdir,
        env: raw.env,
        secrets: raw.secrets,
        set_env: raw.set_env.into_iter().collect(),
        steps,
        rollback,
        auto_rollback: raw.auto_rollback,
    })
}

fn step(raw: RawStep, key: &str, timeout: Duration, output_cap: usize) -> Result<StepSpec, Problem> {
    let timeout = match &raw.timeout {
        Some(t) => duration(&format!("{key}.timeout"), t)?,
        None => timeout,
    };
    let output_cap = match &raw.output_cap {
        Some(v) => size(&format!("{key}.output_cap"), v)?,
        None => output_cap,
    };
    if raw.name.trim().is_empty() {
        return Err((format!("{key}.name"), "a step needs a name".into()));
    }
    let action = match (raw.argv, raw.http) {
        (Some(_), Some(_)) => return Err((key.to_owned(), "a step has either `argv` or `http`, not both".into())),
        (Some(argv), None) if argv.is_empty() => return Err((format!("{key}.argv"), "argv is empty".into())),
        (Some(argv), None) => ActionSpec::Argv(argv),
        (None, Some(h)) => {
            let method = h.method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                return Err((
                    format!("{key}.http.method"),
                    format!("`{}` is not GET, POST, PUT, PATCH or DELETE", h.method),
                ));
            }
            ActionSpec::Http(HttpSpec {
                method,
                url: h.url,
                headers: h.headers.into_iter().collect(),
                body: h.body,
                expect: h.expect,
            })
        }
        (None, None) => ActionSpec::None,
    };
    let kind = match raw.kind.as_str() {
        "run" | "verify" if matches!(action, ActionSpec::None) => {
            return Err((key.to_owned(), format!("a `{}` step needs `argv` or `http`", raw.kind)));
        }
        "run" => StepKind::Run,
        "verify" => StepKind::Verify {
            interval: match &raw.interval {
                Some(i) => duration(&format!("{key}.interval"), i)?,
                None => Duration::from_secs(5),
            },
        },
        "pause" => {
            if !matches!(action, ActionSpec::None) {
                return Err((key.to_owned(), "a `pause` step runs nothing".into()));
            }
            match &raw.duration {
                Some(d) => StepKind::Pause(duration(&format!("{key}.duration"), d)?),
                None => return Err((format!("{key}.duration"), "a `pause` step needs a duration".into())),
            }
        }
        other => return Err((format!("{key}.kind"), format!("unknown kind `{other}` (run, verify, pause)"))),
    };
    if raw.interval.is_some() && !matches!(kind, StepKind::Verify { .. }) {
        return Err((format!("{key}.interval"), "only verify steps repeat".into()));
    }
    if raw.duration.is_some() && !matches!(kind, StepKind::Pause(_)) {
        return Err((format!("{key}.duration"), "only pause steps have a duration".into()));
    }
    Ok(StepSpec { name: raw.name, kind, action, timeout, output_cap })
}

impl RunSpec {
    /// Whether a run in `env` (of this kind) waits for approval, and from whom.
    pub fn approval_for(&self, env: Option<&str>, rollback: bool) -> Option<&ApprovalSpec> {
        let a = self.approval.as_ref()?;
        if rollback && !a.rollback {
            return None;
        }
        if a.environments.is_empty() || env.is_some_and(|e| a.environments.iter().any(|x| x == e)) {
            Some(a)
        } else {
            None
        }
    }
}
