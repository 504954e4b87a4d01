//! A run's plan: the command file's steps rendered with the validated
//! arguments, once, when the run is requested. The preview card shows the
//! plan and the runner executes exactly it, so what approvers saw is what
//! runs. Secrets are not in the plan: a `{{ secrets.NAME }}` renders as a
//! marker that is replaced by the value only when the step starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};

use super::spec::{ActionSpec, RunSpec, StepKind, StepSpec};
use crate::command::{ArgValue, Args};

/// Brackets a secret's name in a rendered plan. Control characters cannot
/// reach the plan from chat (arguments with them are refused), so the marker
/// is unambiguous.
const SECRET_MARK: char = '\u{1}';

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlannedStep>,
    /// What undoes this run; empty when nothing can.
    pub rollback: Vec<PlannedStep>,
    /// A failed verify step starts the rollback at once.
    pub auto_rollback: bool,
    pub workdir: PathBuf,
    pub env: Vec<String>,
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub name: String,
    pub kind: PlannedKind,
    pub action: PlannedAction,
    pub timeout_ms: u64,
    pub output_cap: usize,
    /// `run.set_env`, rendered for this step.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlannedKind {
    Run,
    Verify { interval_ms: u64 },
    Pause { ms: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PlannedAction {
    Argv { argv: Vec<String> },
    Http { method: String, url: String, headers: Vec<(String, String)>, body: Option<String>, expect: Vec<u16> },
    None,
}

/// What the templates see besides the arguments.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    pub requester: &'a str,
    pub current_version: Option<&'a str>,
    pub opsclaw: &'a Path,
    pub data_dir: &'a Path,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("argument `{arg}` contains a control character")]
    ControlCharacter { arg: String },
    #[error("{what}: {message}")]
    Render { what: String, message: String },
}

fn arg_value(value: &ArgValue) -> Value {
    match value {
        ArgValue::Str(s) => Value::from(s.as_str()),
        ArgValue::Int(n) => Value::from(*n),
        ArgValue::Duration(d) => Value::from(humantime::format_duration(*d).to_string()),
        ArgValue::Flag(b) => Value::from(*b),
    }
}

/// Refuses argument values that could smuggle a marker or a line break into a step.
pub fn check_args(args: &Args) -> Result<(), PlanError> {
    for (name, value) in args.iter() {
        if let ArgValue::Str(s) = value
            && s.chars().any(char::is_control)
        {
            return Err(PlanError::ControlCharacter { arg: name.to_owned() });
        }
    }
    Ok(())
}

/// The template context: arguments, the run's variables, and secret markers.
fn context(spec: &RunSpec, args: &Args, vars: &Vars<'_>, target: &str, previous: Option<&str>) -> Value {
    let mut map: BTreeMap<String, Value> = args.iter().map(|(k, v)| (k.to_owned(), arg_value(v))).collect();
    map.insert("requester".into(), Value::from(vars.requester));
    map.insert("target".into(), Value::from(target));
    map.insert("current_version".into(), Value::from(vars.current_version.unwrap_or("")));
    map.insert("opsclaw".into(), Value::from(vars.opsclaw.display().to_string()));
    map.insert("data_dir".into(), Value::from(vars.data_dir.display().to_string()));
    if let Some(previous) = previous {
        map.insert("previous_version".into(), Value::from(previous));
    }
    let secrets: BTreeMap<&str, String> =
        spec.secrets.iter().map(|s| (s.as_str(), format!("{SECRET_MARK}{s}{SECRET_MARK}"))).collect();
    map.insert("secrets".into(), Value::from_serialize(&secrets));
    Value::from_serialize(&map)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Renders the lock key.
pub fn target(spec: &RunSpec, args: &Args, vars: &Vars<'_>) -> Result<String, PlanError> {
    let env = environment();
    let ctx = context(spec, args, vars, "", None);
    env.render_str(&spec.target, ctx)
        .map(|t| t.trim().to_owned())
        .map_err(|e| PlanError::Render { what: "run.target".into(), message: e.to_string() })
}

/// Renders every step; rollback steps see `previous_version` (the version
/// the run replaces). Without rollback steps, a deployment is undone by
/// running its steps again with the previous version.
pub fn render(spec: &RunSpec, args: &Args, vars: &Vars<'_>, target: &str, workdir: PathBuf) -> Result<Plan, PlanError> {
    let env = environment();
    let ctx = context(spec, args, vars, target, None);
    let steps = render_steps(&env, spec, &spec.steps, &ctx, "steps")?;
    let rollback = match (vars.current_version, spec.rollback.is_empty(), &spec.history) {
        (Some(previous), false, _) => {
            let ctx = context(spec, args, vars, target, Some(previous));
            render_steps(&env, spec, &spec.rollback, &ctx, "rollback")?
        }
        (Some(previous), true, Some(history)) => {
            let mut again = Args::default();
            for (k, v) in args.iter() {
                let v = if k == history.version { ArgValue::Str(previous.to_owned()) } else { v.clone() };
                again.insert(k, v);
            }
            let ctx = context(spec, &again, vars, target, Some(previous));
            render_steps(&env, spec, &spec.steps, &ctx, "steps")?
        }
        // Nothing was deployed before (or nothing is known of it): nothing to return to,
        // unless the rollback steps do not need to know (`kubectl rollout undo`).
        (None, false, _) if !uses_previous(&spec.rollback) => {
            let ctx = context(spec, args, vars, target, Some(""));
            render_steps(&env, spec, &spec.rollback, &ctx, "rollback")?
        }
        _ => Vec::new(),
    };
    Ok(Plan {
        steps,
        rollback,
        auto_rollback: spec.auto_rollback,
        workdir,
        env: spec.env.clone(),
        secrets: spec.secrets.clone(),
    })
}

fn uses_previous(steps: &[StepSpec]) -> bool {
    let texts = steps.iter().flat_map(|s| match &s.action {
        ActionSpec::Argv(argv) => argv.clone(),
        ActionSpec::Http(h) => {
            let mut t = vec![h.url.clone()];
            t.extend(h.headers.iter().map(|(_, v)| v.clone()));
            t.extend(h.body.clone());
            t
        }
        ActionSpec::None => Vec::new(),
    });
    texts.into_iter().any(|t| t.contains("previous_version"))
}

fn render_steps(
    env: &Environment<'_>,
    spec: &RunSpec,
    steps: &[StepSpec],
    ctx: &Value,
    section: &str,
) -> Result<Vec<PlannedStep>, PlanError> {
    let set_env = spec
        .set_env
        .iter()
        .map(|(name, value)| {
            env.render_str(value, ctx.clone())
                .map(|v| (name.clone(), v))
                .map_err(|e| PlanError::Render { what: format!("run.set_env.{name}"), message: e.to_string() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let r = |what: &str, text: &str| {
            env.render_str(text, ctx.clone())
                .map_err(|e| PlanError::Render { what: format!("run.{section}[{i}].{what}"), message: e.to_string() })
        };
        let action = match &step.action {
            ActionSpec::Argv(argv) => {
                PlannedAction::Argv { argv: argv.iter().map(|a| r("argv", a)).collect::<Result<_, _>>()? }
            }
            ActionSpec::Http(h) => {
                let url = r("http.url", &h.url)?;
                match reqwest::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(PlanError::Render {
                            what: format!("run.{section}[{i}].http.url"),
                            message: format!("`{url}` is not an http(s) URL"),
                        });
                    }
                }
                PlannedAction::Http {
                    method: h.method.clone(),
                    url,
                    headers: h.headers.iter().map(|(k, v)| Ok((k.clone(), r("http.headers", v)?))).collect::<Result<
                        _,
                        PlanError,
                    >>(
                    )?,
                    body: h.body.as_deref().map(|b| r("http.body", b)).transpose()?,
                    expect: h.expect.clone(),
                }
            }
            ActionSpec::None => PlannedAction::None,
        };
        let kind = match step.kind {
            StepKind::Run => PlannedKind::Run,
            StepKind::Verify { interval } => PlannedKind::Verify { interval_ms: interval.as_millis() as u64 },
            StepKind::Pause(d) => PlannedKind::Pause { ms: d.as_millis() as u64 },
        };
        out.push(PlannedStep {
            name: step.name.clone(),
            kind,
            action,
            timeout_ms: step.timeout.as_millis() as u64,
            output_cap: step.output_cap,
            env: set_env.clone(),
        });
    }
    Ok(out)
}

/// A rendered string as people see it: secrets by name.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split(SECRET_MARK);
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str(&format!("${{secret:{part}}}"));
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// A rendered string with the secrets' values, for the step itself.
pub fn with_secrets(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    if !text.contains(SECRET_MARK) {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split(SECRET_MARK).enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        } else {
            out.push_str(values.get(part).ok_or_else(|| format!("secret `{part}` is not set in the environment"))?);
        }
    }
    Ok(out)
}

impl PlannedStep {
    /// The step as the preview shows it: the argv quoted where needed, or the request line.
    pub fn display(&self) -> String {
        match &self.action {
            PlannedAction::Argv { argv } => argv.iter().map(|a| quote(&shown(a))).collect::<Vec<_>>().join(" "),
            PlannedAction::Http { method, url, .. } => format!("{method} {}", shown(url)),
            PlannedAction::None => match self.kind {
                PlannedKind::Pause { ms } => {
                    format!("pause {}", humantime::format_duration(std::time::Duration::from_millis(ms)))
                }
                _ => String::new(),
            },
        }
    }
}

/// Shell-style quoting for display only (nothing here is ever run by a shell).
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,{}$".contains(c));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_markers_until_the_step_runs() {
        let text = format!("Bearer {SECRET_MARK}TOKEN{SECRET_MARK}");
        assert_eq!(shown(&text), "Bearer ${secret:TOKEN}");
        let values = BTreeMap::from([("TOKEN".to_owned(), "abc".to_owned())]);
        assert_eq!(with_secrets(&text, &values).unwrap(), "Bearer abc");
        assert!(with_secrets(&text, &BTreeMap::new()).unwrap_err().contains("TOKEN"));
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let step = PlannedStep {
            name: "x".into(),
            kind: PlannedKind::Run,
            action: PlannedAction::Argv { argv: vec!["echo".into(), "a b".into(), "it's".into(), "v1.2".into()] },
            timeout_ms: 1,
            output_cap: 1,
            env: vec![],
        };
        assert_eq!(step.display(), "echo 'a b' 'it'\\''s' v1.2");
    }
}
