//! A run's card: the `run` template filled from the stored run, its plan and
//! (while it executes here) its live progress, with the buttons its state allows.

use minijinja::{Value, context};

use super::Progress;
use super::plan::{Plan, PlannedKind};
use crate::action::{Action, Grant};
use crate::card::{CardDraft, CardId, CardSet, CardTemplateError};
use crate::clock::{format_duration, format_ms};
use crate::command::CommandSet;
use crate::i18n::Locale;
use crate::store::RunView;

/// Lines of stored output a finished run's card shows.
const FINAL_TAIL: usize = 15;
/// Characters of one output line a card shows (lines may be 4 KiB; a card is not the place).
const LINE_CHARS: usize = 240;

fn clip(line: &str) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

pub fn color(state: &str) -> &'static str {
    match state {
        "pending" => "yellow",
        "running" => "blue",
        "succeeded" => "green",
        "failed" => "red",
        "interrupted" => "orange",
        _ => "grey",
    }
}

pub fn render(
    cards: &CardSet,
    commands: &CommandSet,
    locale: Locale,
    run: &RunView,
    progress: Option<&Progress>,
    rollbacks: &[RunView],
    now_ms: i64,
) -> Result<CardDraft, CardTemplateError> {
    let plan: Option<Plan> = serde_json::from_str(&run.plan).ok();
    let mut grants: Vec<(&str, Grant)> = Vec::new();
    let requester_only = |action: Action| Grant { action, role: None, only: vec![run.requester.clone()] };
    match run.state.as_str() {
        // Approvers' roles are checked by the handler, which records refusals in the audit log.
        "pending" if run.approvals_needed > 0 => {
            grants.push(("approve", Grant::new(Action::RunApprove { run: run.id }, None)));
            grants.push(("reject", Grant::new(Action::RunReject { run: run.id }, None)));
            grants.push(("cancel", requester_only(Action::RunCancel { run: run.id })));
        }
        "pending" => {
            grants.push(("start", requester_only(Action::RunStart { run: run.id })));
            grants.push(("cancel", requester_only(Action::RunCancel { run: run.id })));
        }
        "succeeded" | "failed" | "interrupted" => {
            let undone = rollbacks.iter().any(|r| r.is_active() || r.state == "succeeded");
            let can = run.kind == "run" && plan.as_ref().is_some_and(|p| !p.rollback.is_empty()) && !undone;
            if let (true, Some(command)) = (can, commands.get(&run.command)) {
                grants.push(("rollback", Grant::new(Action::RunRollback { run: run.id }, command.role.clone())));
            }
        }
        _ => {}
    }
    cards.render(CardId::RUN, locale, &values(run, plan.as_ref(), progress, rollbacks, now_ms), grants)
}

pub fn values(
    run: &RunView,
    plan: Option<&Plan>,
    progress: Option<&Progress>,
    rollbacks: &[RunView],
    now_ms: i64,
) -> Value {
    let args: Vec<Value> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&run.args)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            context! { name => name, value => value }
        })
        .collect();
    let finished_step = |i: usize, name: &str| -> &'static str {
        let current = run.step.as_deref() == Some(name);
        match run.state.as_str() {
            "succeeded" => "ok",
            "failed" | "interrupted" if current => "failed",
            "failed" | "interrupted" => {
                // Steps before the one that failed ran; those after it did not.
                let failed_at =
                    plan.and_then(|p| p.steps.iter().position(|s| Some(s.name.as_str()) == run.step.as_deref()));
                if failed_at.is_some_and(|f| i < f) { "ok" } else { "waiting" }
            }
            _ => "waiting",
        }
    };
    let steps: Vec<Value> = plan
        .map(|p| {
            p.steps
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let state = match progress.and_then(|p| p.steps.get(i)) {
                        Some(state) => serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)),
                        None => Some(finished_step(i, &s.name).to_owned()),
                    };
                    context! {
                        name => s.name,
                        display => s.display(),
                        kind => match s.kind { PlannedKind::Run => "run", PlannedKind::Verify { .. } => "verify", PlannedKind::Pause { .. } => "pause" },
                        state => state,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let rollback_steps: Vec<Value> = plan
        .map(|p| p.rollback.iter().map(|s| context! { name => s.name, display => s.display() }).collect())
        .unwrap_or_default();
    let tail: Vec<String> = match progress {
        Some(p) => p.tail.iter().map(|l| clip(l)).collect(),
        None => {
            let out = run.output.as_deref().unwrap_or("");
            let lines: Vec<&str> = out.lines().collect();
            lines[lines.len().saturating_sub(FINAL_TAIL)..].iter().map(|l| clip(l)).collect()
        }
    };
    let duration = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => Some(format_duration(std::time::Duration::from_millis((f - s).max(0) as u64))),
        (Some(s), None) => Some(format_duration(std::time::Duration::from_millis((now_ms - s).max(0) as u64))),
        _ => None,
    };
    let rolled_back_by = rollbacks.first().map(|r| context! { id => r.id, state => r.state });
    context! {
        id => run.id,
        command => run.command,
        kind => run.kind,
        args => args,
        target => run.target,
        app => run.app,
        env => run.env,
        version => run.version,
        from_version => run.from_version,
        requester => run.requester,
        approvals => run.approvals.iter().map(|(who, _)| who.clone()).collect::<Vec<_>>(),
        needed => run.approvals_needed,
        approver_role => run.approver_role,
        expires => run.expires_at.map(format_ms),
        state => run.state,
        color => color(&run.state),
        steps => steps,
        rollback_steps => rollback_steps,
        auto_rollback => plan.is_some_and(|p| p.auto_rollback),
        tail => tail,
        note => progress.and_then(|p| p.note.clone()),
        current_step => run.step,
        error => run.error,
        exit_code => run.exit_code,
        closed_by => run.closed_by,
        duration => duration,
        rollback_of => run.rollback_of,
        rolled_back_by => rolled_back_by,
        updated => format_ms(now_ms),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{ChatRef, PlatformKind};
    use crate::i18n::Catalog;
    use crate::ops::plan::{PlannedAction, PlannedStep};

    fn run(state: &str, needed: i64) -> RunView {
        let step = |name: &str, kind| PlannedStep {
            name: name.into(),
            kind,
            action: PlannedAction::Argv { argv: vec!["deploy".into(), "1.2.0".into()] },
            timeout_ms: 1000,
            output_cap: 1000,
            env: vec![],
        };
        let plan = Plan {
            steps: vec![step("deploy", PlannedKind::Run), step("verify", PlannedKind::Verify { interval_ms: 10 })],
            rollback: vec![step("undo", PlannedKind::Run)],
            auto_rollback: true,
            workdir: ".".into(),
            env: vec![],
            secrets: vec![],
        };
        RunView {
            id: 7,
            event_id: "e".into(),
            command: "deploy".into(),
            kind: "run".into(),
            target: "demo/local".into(),
            app: Some("demo".into()),
            env: Some("local".into()),
            version: Some("1.2.0".into()),
            from_version: Some("1.1.0".into()),
            rollback_of: None,
            args: r#"{"app":"demo","version":"1.2.0"}"#.into(),
            plan: serde_json::to_string(&plan).unwrap(),
            requester: "alice".into(),
            requester_id: "console:alice".into(),
            chat: ChatRef::new(PlatformKind::Console, "local"),
            thread: None,
            approvals_needed: needed,
            approver_role: (needed > 0).then(|| "approver".into()),
            state: state.into(),
            step: Some("verify".into()),
            exit_code: Some(1),
            output: Some("a\nb\n".into()),
            output_digest: Some("00".into()),
            error: Some("exited with code 1".into()),
            closed_by: Some("bob".into()),
            expires_at: Some(1),
            created_at: 0,
            started_at: Some(0),
            finished_at: Some(5000),
            approvals: vec![("bob".into(), 1)],
        }
    }

    #[test]
    fn every_state_renders_in_every_locale_with_its_buttons() {
        let catalog = Arc::new(Catalog::embedded().unwrap());
        let cards = CardSet::embedded(catalog).unwrap();
        let commands = CommandSet::embedded().unwrap();
        let states = ["pending", "running", "succeeded", "failed", "rejected", "cancelled", "expired", "interrupted"];
        for locale in Locale::ALL {
            for state in states {
                for needed in [0, 1] {
                    let card = render(&cards, &commands, locale, &run(state, needed), None, &[], 10_000)
                        .unwrap_or_else(|e| panic!("{state} in {locale}: {e}"));
                    let n = card.buttons.len();
                    match (state, needed) {
                        ("pending", 1) => assert_eq!(n, 3, "{state}"),
                        ("pending", 0) => assert_eq!(n, 2, "{state}"),
                        ("succeeded" | "failed" | "interrupted", _) => assert_eq!(n, 1, "{state}"),
                        _ => assert_eq!(n, 0, "{state}"),
                    }
                    assert!(card.body.contains("deploy 1.2.0"), "{}", card.body);
                }
            }
        }
    }
}
