//! Card templates (`cards/*.toml`): platform-neutral TOML whose strings are
//! minijinja templates. `t('key', name=value)` inside a template reads the
//! message catalog in the chat's locale. Every template is compiled and
//! rendered with its own `[sample]` context in every locale at startup, so a
//! broken template stops the boot instead of the first alert.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, State, Value};
use serde::Deserialize;

use super::{Button, ButtonStyle, CardDraft, CardOf, Color, Field};
use crate::action::{Action, Grant};
use crate::i18n::{Catalog, Locale};

/// A template's name: its file stem (`cards/status.toml` is `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardId(&'static str);

impl CardId {
    pub const HELP: CardId = CardId("help");
    pub const HELP_COMMAND: CardId = CardId("help_command");
    pub const STATUS: CardId = CardId("status");
    pub const WHOAMI: CardId = CardId("whoami");
    pub const ALERT: CardId = CardId("alert");
    pub const ALERTS: CardId = CardId("alerts");
    pub const ALERT_HISTORY: CardId = CardId("alert_history");
    pub const ALERT_DIGEST: CardId = CardId("alert_digest");
    pub const ONCALL: CardId = CardId("oncall");
    pub const RUN: CardId = CardId("run");
    pub const RUN_HISTORY: CardId = CardId("run_history");
    pub const AUDIT: CardId = CardId("audit");
    pub const KB: CardId = CardId("kb");
    pub const ANSWER: CardId = CardId("answer");
    pub const LOGS: CardId = CardId("logs");
    /// Templates the built-in handlers render; a template set without them is refused.
    pub const REQUIRED: [CardId; 15] = [
        Self::HELP,
        Self::HELP_COMMAND,
        Self::STATUS,
        Self::WHOAMI,
        Self::ALERT,
        Self::ALERTS,
        Self::ALERT_HISTORY,
        Self::ALERT_DIGEST,
        Self::ONCALL,
        Self::RUN,
        Self::RUN_HISTORY,
        Self::AUDIT,
        Self::KB,
        Self::ANSWER,
        Self::LOGS,
    ];

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// The card templates shipped in `cards/`, used when no directory is configured.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("alert.toml", include_str!("../../cards/alert.toml")),
    ("alert_digest.toml", include_str!("../../cards/alert_digest.toml")),
    ("alert_history.toml", include_str!("../../cards/alert_history.toml")),
    ("alerts.toml", include_str!("../../cards/alerts.toml")),
    ("answer.toml", include_str!("../../cards/answer.toml")),
    ("audit.toml", include_str!("../../cards/audit.toml")),
    ("help.toml", include_str!("../../cards/help.toml")),
    ("help_command.toml", include_str!("../../cards/help_command.toml")),
    ("kb.toml", include_str!("../../cards/kb.toml")),
    ("logs.toml", include_str!("../../cards/logs.toml")),
    ("oncall.toml", include_str!("../../cards/oncall.toml")),
    ("run.toml", include_str!("../../cards/run.toml")),
    ("run_history.toml", include_str!("../../cards/run_history.toml")),
    ("status.toml", include_str!("../../cards/status.toml")),
    ("whoami.toml", include_str!("../../cards/whoami.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum CardTemplateError {
    #[error("{file}: {key}: {message}")]
    File { file: String, key: String, message: String },
    #[error("card template `{id}`: {message}")]
    Render { id: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    title: String,
    color: String,
    #[serde(default)]
    body: String,
    footer: Option<String>,
    #[serde(default)]
    fields: Vec<RawField>,
    #[serde(default)]
    buttons: Vec<RawButton>,
    #[serde(default)]
    sample: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    label: String,
    value: String,
    #[serde(default)]
    short: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawButton {
    id: String,
    label: String,
    #[serde(default = "default_style")]
    style: String,
    confirm: Option<String>,
}

fn default_style() -> String {
    "default".to_owned()
}

struct Template {
    fields: Vec<bool>,
    buttons: Vec<(String, ButtonStyle, bool)>,
    has_footer: bool,
}

/// All card templates, compiled.
pub struct CardSet {
    env: Environment<'static>,
    templates: BTreeMap<String, Template>,
}

impl std::fmt::Debug for CardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSet").field("templates", &self.templates.keys().collect::<Vec<_>>()).finish()
    }
}

impl CardSet {
    pub fn embedded(catalog: Arc<Catalog>) -> Result<Self, Vec<CardTemplateError>> {
        Self::from_files(catalog, EMBEDDED.iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())))
    }

    pub fn from_dir(catalog: Arc<Catalog>, dir: &Path) -> Result<Self, Vec<CardTemplateError>> {
        let files = crate::command::read_toml_dir(dir).map_err(|message| {
            vec![CardTemplateError::File { file: dir.display().to_string(), key: "-".into(), message }]
        })?;
        Self::from_files(catalog, files)
    }

    pub fn from_files(
        catalog: Arc<Catalog>,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Vec<CardTemplateError>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env.add_function("t", move |state: &State, key: String, kwargs: Kwargs| -> Result<String, minijinja::Error> {
            let locale = state.lookup("locale").and_then(|v| v.as_str().and_then(Locale::parse)).unwrap_or(Locale::En);
            let owned: Vec<(String, String)> = kwargs
                .args()
                .map(|k| (k.to_owned(), kwargs.get::<Value>(k).map(|v| v.to_string()).unwrap_or_default()))
                .collect();
            let args: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            catalog.lookup(locale, &key, &args).ok_or_else(|| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("unknown message key `{key}`"))
            })
        });
        let mut set = CardSet { env, templates: BTreeMap::new() };
        let mut errors = Vec::new();
        let mut samples = Vec::new();
        for (file, source) in files {
            let id = Path::new(&file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let raw: RawCard = match toml::from_str(&source) {
                Ok(raw) => raw,
                Err(e) => {
                    errors.push(CardTemplateError::File { file, key: "-".into(), message: e.to_string() });
                    continue;
                }
            };
            let mut problems: Vec<(String, String)> = Vec::new();
            let mut sources: Vec<(String, String)> =
                vec![("title".into(), raw.title), ("color".into(), raw.color), ("body".into(), raw.body)];
            let has_footer = raw.footer.is_some();
            if let Some(footer) = raw.footer {
                sources.push(("footer".into(), footer));
            }
            let mut fields = Vec::new();
            for (i, f) in raw.fields.into_iter().enumerate() {
                sources.push((format!("fields[{i}].label"), f.label));
                sources.push((format!("fields[{i}].value"), f.value));
                fields.push(f.short);
            }
            let mut buttons = Vec::new();
            for (i, b) in raw.buttons.into_iter().enumerate() {
                let style = match b.style.as_str() {
                    "default" => ButtonStyle::Default,
                    "primary" => ButtonStyle::Primary,
                    "danger" => ButtonStyle::Danger,
                    other => {
                        problems.push((
                            format!("buttons[{i}].style"),
                            format!("unknown style `{other}` (default, primary, danger)"),
                        ));
                        continue;
                    }
                };
                if buttons.iter().any(|(id, _, _)| *id == b.id) {
                    problems.push((format!("buttons[{i}].id"), format!("duplicate button id `{}`", b.id)));
                }
                sources.push((format!("buttons[{i}].label"), b.label));
                let has_confirm = b.confirm.is_some();
                if let Some(confirm) = b.confirm {
                    sources.push((format!("buttons[{i}].confirm"), confirm));
                }
                buttons.push((b.id, style, has_confirm));
            }
            for (key, text) in sources {
                if let Err(e) = set.env.add_template_owned(format!("{id}/{key}"), text) {
                    problems.push((key, e.to_string()));
                }
            }
            // A template with problems is not also rendered: its errors are already listed.
            if problems.is_empty() {
                samples.push((id.clone(), file.clone(), raw.sample));
            }
            for (key, message) in problems {
                errors.push(CardTemplateError::File { file: file.clone(), key, message });
            }
            set.templates.insert(id, Template { fields, buttons, has_footer });
        }
        for required in CardId::REQUIRED {
            if !set.templates.contains_key(required.as_str()) {
                errors.push(CardTemplateError::File {
                    file: format!("{}.toml", required.as_str()),
                    key: "-".into(),
                    message: "this template is required by a built-in handler".into(),
                });
            }
        }
        // Each sample renders in every locale with every button bound, so a
        // missing message key or a bad color fails here, not on a live card.
        for (id, file, sample) in samples {
            let ctx = Value::from_serialize(&sample);
            let button_ids: Vec<String> = set.templates[&id].buttons.iter().map(|(b, _, _)| b.clone()).collect();
            for locale in Locale::ALL {
                let grants = button_ids.iter().map(|b| (b.as_str(), Grant::new(Action::RefreshStatus, None))).collect();
                if let Err(e) = set.render_named(&id, locale, &ctx, grants) {
                    errors.push(CardTemplateError::File {
                        file: file.clone(),
                        key: "sample".into(),
                        message: format!("rendering with [sample] in {locale} failed: {e}"),
                    });
                }
            }
        }
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    /// Renders template `id` with `ctx` in `locale`. Buttons of the template
    /// appear only when `grants` binds their id, so a handler shows exactly the
    /// actions that apply; fields whose value renders empty are left out.
    pub fn render(
        &self,
        id: CardId,
        locale: Locale,
        ctx: &Value,
        grants: Vec<(&str, Grant)>,
    ) -> Result<CardDraft, CardTemplateError> {
        self.render_named(id.as_str(), locale, ctx, grants)
    }

    fn render_named(
        &self,
        id: &str,
        locale: Locale,
        ctx: &Value,
        mut grants: Vec<(&str, Grant)>,
    ) -> Result<CardDraft, CardTemplateError> {
        let template = self
            .templates
            .get(id)
            .ok_or_else(|| CardTemplateError::Render { id: id.to_owned(), message: "no such template".into() })?;
        let ctx = minijinja::context! { locale => locale.as_str(), ..ctx.clone() };
        let render = |key: &str| -> Result<String, CardTemplateError> {
            let name = format!("{id}/{key}");
            let tmpl = self.env.get_template(&name).map_err(|e| render_error(id, e))?;
            Ok(tmpl.render(&ctx).map_err(|e| render_error(id, e))?.trim().to_owned())
        };
        let color_text = render("color")?;
        let color = Color::parse(&color_text).ok_or_else(|| CardTemplateError::Render {
            id: id.to_owned(),
            message: format!("color `{color_text}` is not one of blue, green, yellow, orange, red, grey, purple"),
        })?;
        let mut fields = Vec::new();
        for (i, short) in template.fields.iter().enumerate() {
            let value = render(&format!("fields[{i}].value"))?;
            if !value.is_empty() {
                fields.push(Field { label: render(&format!("fields[{i}].label"))?, value, short: *short });
            }
        }
        let mut buttons = Vec::new();
        for (i, (button_id, style, has_confirm)) in template.buttons.iter().enumerate() {
            let Some(pos) = grants.iter().position(|(b, _)| b == button_id) else { continue };
            let (_, grant) = grants.swap_remove(pos);
            let confirm = if *has_confirm { Some(render(&format!("buttons[{i}].confirm"))?) } else { None };
            buttons.push(Button {
                label: render(&format!("buttons[{i}].label"))?,
                style: *style,
                confirm,
                target: grant,
            });
        }
        if let Some((unknown, _)) = grants.first() {
            return Err(CardTemplateError::Render {
                id: id.to_owned(),
                message: format!("the handler bound button `{unknown}`, which the template does not define"),
            });
        }
        let footer = if template.has_footer { Some(render("footer")?).filter(|f| !f.is_empty()) } else { None };
        Ok(CardOf { title: render("title")?, color, fields, body: render("body")?, buttons, footer })
    }
}

fn render_error(id: &str, e: minijinja::Error) -> CardTemplateError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    CardTemplateError::Render { id: id.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Arc<Catalog> {
        Arc::new(Catalog::embedded().unwrap())
    }

    fn with_extra(extra: (&str, &str)) -> Result<CardSet, Vec<CardTemplateError>> {
        let files = EMBEDDED
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .chain(std::iter::once((extra.0.to_owned(), extra.1.to_owned())));
        CardSet::from_files(catalog(), files)
    }

    #[test]
    fn embedded_templates_load_and_render_in_both_locales() {
        let set = CardSet::embedded(catalog()).unwrap_or_else(|e| panic!("{e:?}"));
        let ctx = Value::from_serialize(serde_json::json!({
            "version": "9.9.9", "uptime": "1s", "channels": [], "inbox_pending": 0, "queued": 0, "outbox_pending": 0,
        }));
        for locale in Locale::ALL {
            let card = set
                .render(CardId::STATUS, locale, &ctx, vec![("refresh", Grant::new(Action::RefreshStatus, None))])
                .unwrap();
            assert_eq!(card.buttons.len(), 1);
            assert!(card.fields.iter().any(|f| f.value == "9.9.9"), "{card:?}");
        }
    }

    #[test]
    fn unbound_buttons_are_hidden_and_empty_fields_dropped() {
        let src = "title = \"T\"\ncolor = \"{{ c }}\"\n[[fields]]\nlabel = \"a\"\nvalue = \"{{ a }}\"\n\
                   [[buttons]]\nid = \"go\"\nlabel = \"Go\"\n[sample]\nc = \"red\"\n";
        let set = with_extra(("x.toml", src)).unwrap();
        let ctx = Value::from_serialize(serde_json::json!({"c": "green"}));
        let card = set.render_named("x", Locale::En, &ctx, vec![]).unwrap();
        assert_eq!(card.color, Color::Green);
        assert!(card.fields.is_empty() && card.buttons.is_empty());
    }

    #[test]
    fn broken_templates_fail_at_load_with_file_and_key() {
        let errors = with_extra(("x.toml", "title = \"{{ t('no.such.key') }}\"\ncolor = \"blue\"\n")).unwrap_err();
        assert!(
            errors.iter().any(|e| e.to_string().contains("x.toml: sample") && e.to_string().contains("no.such.key")),
            "{errors:?}"
        );
        let errors = with_extra(("y.toml", "title = \"{% if %}\"\ncolor = \"blue\"\n")).unwrap_err();
        assert!(errors.iter().any(|e| e.to_string().starts_with("y.toml: title")), "{errors:?}");
        let errors =
            with_extra(("z.toml", "title = \"x\"\ncolor = \"{{ c }}\"\n[sample]\nc = \"pink\"\n")).unwrap_err();
        assert!(errors.iter().any(|e| e.to_string().contains("pink")), "{errors:?}");
        let errors = with_extra(("w.toml", "title = \"x\"\ncolour = \"blue\"\ncolor = \"blue\"\n")).unwrap_err();
        assert!(errors.iter().any(|e| e.to_string().contains("colour")), "{errors:?}");
    }

    #[test]
    fn embedded_list_matches_the_directory() {
        let on_disk = crate::command::read_toml_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cards"))).unwrap();
        let names: Vec<_> =
            on_disk.iter().map(|(p, _)| Path::new(p).file_name().unwrap().to_string_lossy().into_owned()).collect();
        let embedded: Vec<_> = EMBEDDED.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(names, embedded, "add new card files to card::template::EMBEDDED");
    }
}
