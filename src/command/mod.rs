//! Command files (`commands/*.toml`): one file per chat command, loaded and
//! checked at startup into a [`CommandSet`]. The router looks commands up here
//! and binds their typed arguments with [`args::bind`]; `/help` and the
//! platforms' command menus are generated from the same data.
//!
//! This module knows nothing about chats or platforms: it turns files into
//! validated specs and text into typed argument values.

pub mod args;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;

use crate::i18n::Locale;
use crate::policy::Role;

pub use args::{ArgError, ArgValue, Args};

/// The handlers compiled into the binary that a command file can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Help,
    Ping,
    Whoami,
    Status,
    Alerts,
    Ack,
    Silence,
    Alert,
    Oncall,
    /// An ops command: its file's `[run]` section says what runs.
    Run,
    Rollback,
    History,
    Audit,
    Kb,
    Ask,
    Logs,
}

impl Builtin {
    const ALL: [(&'static str, Builtin); 16] = [
        ("help", Self::Help),
        ("ping", Self::Ping),
        ("whoami", Self::Whoami),
        ("status", Self::Status),
        ("alerts", Self::Alerts),
        ("ack", Self::Ack),
        ("silence", Self::Silence),
        ("alert", Self::Alert),
        ("oncall", Self::Oncall),
        ("run", Self::Run),
        ("rollback", Self::Rollback),
        ("history", Self::History),
        ("audit", Self::Audit),
        ("kb", Self::Kb),
        ("ask", Self::Ask),
        ("logs", Self::Logs),
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, b)| *b)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, b)| *b == self).map(|(n, _)| *n).expect("every builtin is listed")
    }
}

/// Text given in every supported language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Localized {
    pub en: String,
    #[serde(rename = "zh-CN")]
    pub zh_cn: String,
}

impl Localized {
    pub fn get(&self, locale: Locale) -> &str {
        match locale {
            Locale::En => &self.en,
            Locale::ZhCn => &self.zh_cn,
        }
    }
}

/// A validated command.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: String,
    pub aliases: Vec<String>,
    pub summary: Localized,
    pub role: Option<Role>,
    pub handler: Builtin,
    pub args: Vec<ArgSpec>,
    /// What an ops command (`handler = "run"`) runs.
    pub run: Option<Arc<crate::ops::spec::RunSpec>>,
    /// The file it came from, for error messages.
    pub source: String,
}

impl CommandSpec {
    /// Commands whose refusals belong in the audit log.
    pub fn is_ops(&self) -> bool {
        matches!(self.handler, Builtin::Run | Builtin::Rollback)
    }

    /// `/deploy <app> <version> [env] [--force]`
    pub fn usage(&self) -> String {
        let mut out = format!("/{}", self.name);
        for arg in &self.args {
            let shown = match (&arg.kind, arg.required) {
                (ArgKind::Flag, _) => format!(" [--{}]", arg.name),
                (_, _) if arg.option => format!(" [--{} {}]", arg.name, arg.kind.placeholder()),
                (ArgKind::Text | ArgKind::Words, true) => format!(" <{}…>", arg.name),
                (ArgKind::Text | ArgKind::Words, false) => format!(" [{}…]", arg.name),
                (_, true) => format!(" <{}>", arg.name),
                (_, false) => format!(" [{}]", arg.name),
            };
            out.push_str(&shown);
        }
        out
    }
}

/// Command names are unique in a set, so the name identifies the spec.
impl PartialEq for CommandSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for CommandSpec {}

#[derive(Debug)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    pub required: bool,
    pub default: Option<ArgValue>,
    pub help: Option<Localized>,
    /// Longest accepted value, in characters.
    pub max_len: usize,
    /// Given only as `--name VALUE`, never by position (flags always are).
    pub option: bool,
}

impl ArgSpec {
    /// Whether a bare word can bind to this argument by its position.
    pub fn positional(&self) -> bool {
        !self.option && !matches!(self.kind, ArgKind::Flag)
    }
}

#[derive(Debug)]
pub enum ArgKind {
    /// One word (or a quoted phrase), optionally matching an anchored pattern.
    Word {
        pattern: Option<Regex>,
    },
    /// The rest of the message, verbatim. Only the last argument.
    Text,
    /// Every remaining bare word (or quoted phrase), joined by a space;
    /// `--options` among them still bind. Only the last positional argument.
    Words,
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Duration,
    Choice(Vec<String>),
    /// A `--name` switch without a value.
    Flag,
}

impl ArgKind {
    /// What an option's value looks like in a usage line.
    fn placeholder(&self) -> &'static str {
        match self {
            ArgKind::Int { .. } => "N",
            ArgKind::Duration => "DURATION",
            ArgKind::Choice(_) => "CHOICE",
            _ => "VALUE",
        }
    }
}

/// All commands, looked up by name or alias (case-insensitive).
#[derive(Debug, Default)]
pub struct CommandSet {
    commands: Vec<Arc<CommandSpec>>,
    by_name: HashMap<String, usize>,
}

/// One problem in one command file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct CommandFileError {
    pub file: String,
    pub key: String,
    pub message: String,
}

const DEFAULT_MAX_LEN: usize = 256;

/// The command files shipped in `commands/`, used when no directory is configured.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("ack.toml", include_str!("../../commands/ack.toml")),
    ("alert.toml", include_str!("../../commands/alert.toml")),
    ("alerts.toml", include_str!("../../commands/alerts.toml")),
    ("ask.toml", include_str!("../../commands/ask.toml")),
    ("audit.toml", include_str!("../../commands/audit.toml")),
    ("deploy.toml", include_str!("../../commands/deploy.toml")),
    ("help.toml", include_str!("../../commands/help.toml")),
    ("history.toml", include_str!("../../commands/history.toml")),
    ("kb.toml", include_str!("../../commands/kb.toml")),
    ("logs.toml", include_str!("../../commands/logs.toml")),
    ("oncall.toml", include_str!("../../commands/oncall.toml")),
    ("ping.toml", include_str!("../../commands/ping.toml")),
    ("rollback.toml", include_str!("../../commands/rollback.toml")),
    ("silence.toml", include_str!("../../commands/silence.toml")),
    ("status.toml", include_str!("../../commands/status.toml")),
    ("whoami.toml", include_str!("../../commands/whoami.toml")),
];

impl CommandSet {
    pub fn embedded() -> Result<Self, Vec<CommandFileError>> {
        Self::from_files(EMBEDDED.iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())))
    }

    /// Loads every `*.toml` in `dir`, sorted by name.
    pub fn from_dir(dir: &Path) -> Result<Self, Vec<CommandFileError>> {
        let files = read_toml_dir(dir)
            .map_err(|message| vec![CommandFileError { file: dir.display().to_string(), key: "-".into(), message }])?;
        Self::from_files(files)
    }

    /// Parses and validates files given as `(name, contents)`; every problem is returned.
    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Result<Self, Vec<CommandFileError>> {
        let mut errors = Vec::new();
        let mut set = CommandSet::default();
        for (file, source) in files {
            let raw: RawCommand = match toml::from_str(&source) {
                Ok(raw) => raw,
                Err(e) => {
                    errors.push(CommandFileError {
                        file,
                        key: e.span().map_or("-".into(), |s| format!("bytes {}..{}", s.start, s.end)),
                        message: e.message().to_owned(),
                    });
                    continue;
                }
            };
            let Some(spec) = validate(raw, &file, &mut errors) else { continue };
            let idx = set.commands.len();
            for name in std::iter::once(&spec.name).chain(&spec.aliases) {
                let lower = name.to_lowercase();
                if let Some(&other) = set.by_name.get(&lower) {
                    errors.push(CommandFileError {
                        file: file.clone(),
                        key: "name".into(),
                        message: format!("`{name}` is already used by {}", set.commands[other].source),
                    });
                } else {
                    set.by_name.insert(lower, idx);
                }
            }
            set.commands.push(Arc::new(spec));
        }
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    pub fn get(&self, name_or_alias: &str) -> Option<&Arc<CommandSpec>> {
        self.by_name.get(&name_or_alias.to_lowercase()).map(|&i| &self.commands[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<CommandSpec>> {
        self.commands.iter()
    }

    /// The known name or alias closest to `name`, if any is close enough to be a typo.
    pub fn closest(&self, name: &str) -> Option<&str> {
        let lower = name.to_lowercase();
        self.by_name
            .keys()
            .map(|known| (strsim::damerau_levenshtein(&lower, known), known))
            .filter(|(d, known)| *d <= 2 && *d < known.chars().count())
            .min()
            .map(|(_, known)| self.commands[self.by_name[known]].name.as_str())
    }
}

/// Reads `(file name, contents)` of every `*.toml` directly in `dir`, sorted.
pub fn read_toml_dir(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read directory: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((path.display().to_string(), text));
        }
    }
    files.sort();
    Ok(files)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    summary: Localized,
    role: Option<String>,
    handler: String,
    #[serde(default)]
    args: Vec<RawArg>,
    run: Option<crate::ops::spec::RawRun>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: String,
    kind: String,
    #[serde(default)]
    required: bool,
    default: Option<toml::Value>,
    pattern: Option<String>,
    choices: Option<Vec<String>>,
    min: Option<i64>,
    max: Option<i64>,
    max_len: Option<usize>,
    #[serde(default)]
    option: bool,
    help: Option<Localized>,
}

fn valid_name(name: &str) -> bool {
    // Telegram's rule for bot commands, which is the strictest of our platforms.
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn validate(raw: RawCommand, file: &str, errors: &mut Vec<CommandFileError>) -> Option<CommandSpec> {
    let before = errors.len();
    let mut err = |key: &str, message: String| {
        errors.push(CommandFileError { file: file.to_owned(), key: key.to_owned(), message })
    };
    for (key, name) in std::iter::once(("name", &raw.name)).chain(raw.aliases.iter().map(|a| ("aliases", a))) {
        if !valid_name(name) {
            err(key, format!("`{name}` must be 1-32 characters of a-z, 0-9 and _, starting with a letter"));
        }
    }
    let handler = Builtin::parse(&raw.handler);
    if handler.is_none() {
        let known: Vec<_> = Builtin::ALL.iter().map(|(n, _)| *n).collect();
        err("handler", format!("unknown handler `{}` (known: {})", raw.handler, known.join(", ")));
    }
    let role = match raw.role.as_deref().map(Role::parse) {
        None => None,
        Some(Ok(role)) => Some(role),
        Some(Err(message)) => {
            err("role", message);
            None
        }
    };
    let n_args = raw.args.len();
    let mut args = Vec::with_capacity(n_args);
    let mut seen_optional_positional = false;
    for (i, raw_arg) in raw.args.into_iter().enumerate() {
        let key = format!("args[{i}]");
        match validate_arg(raw_arg, i + 1 == n_args) {
            Ok(arg) => {
                let positional = arg.positional();
                if positional && args.iter().any(|a: &ArgSpec| matches!(a.kind, ArgKind::Words)) {
                    err(&key, format!("`{}` follows a `words` argument, which takes every remaining word", arg.name));
                }
                if positional && arg.required && seen_optional_positional {
                    err(&key, format!("required argument `{}` follows an optional one", arg.name));
                }
                seen_optional_positional |= positional && !arg.required;
                if args.iter().any(|a: &ArgSpec| a.name == arg.name) {
                    err(&key, format!("duplicate argument name `{}`", arg.name));
                }
                args.push(arg);
            }
            Err((field, message)) => err(&format!("{key}.{field}"), message),
        }
    }
    let run = match (handler, raw.run) {
        (Some(Builtin::Run), Some(run)) => match crate::ops::spec::validate(run, &raw.name, &args) {
            Ok(spec) => Some(Arc::new(spec)),
            Err(problems) => {
                for (key, message) in problems {
                    err(&key, message);
                }
                None
            }
        },
        (Some(Builtin::Run), None) => {
            err("run", "handler `run` needs a [run] section with its steps".into());
            None
        }
        (_, Some(_)) => {
            err("run", "only commands with handler = \"run\" have a [run] section".into());
            None
        }
        (_, None) => None,
    };
    if errors.len() > before {
        return None;
    }
    Some(CommandSpec {
        name: raw.name,
        aliases: raw.aliases,
        summary: raw.summary,
        role,
        handler: handler.expect("checked above"),
        args,
        run,
        source: file.to_owned(),
    })
}

fn validate_arg(raw: RawArg, is_last: bool) -> Result<ArgSpec, (&'static str, String)> {
    if !valid_name(&raw.name) {
        return Err(("name", format!("`{}` must be a-z, 0-9 and _, starting with a letter", raw.name)));
    }
    let unused = |field: &'static str, present: bool, kind: &str| {
        if present { Err((field, format!("`{field}` does not apply to kind `{kind}`"))) } else { Ok(()) }
    };
    let kind = match raw.kind.as_str() {
        "word" => {
            unused("choices", raw.choices.is_some(), "word")?;
            let pattern = match &raw.pattern {
                None => None,
                // Anchored so a pattern means "the whole value matches", never "contains".
                Some(p) => Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| ("pattern", e.to_string()))?),
            };
            ArgKind::Word { pattern }
        }
        "text" => {
            if !is_last {
                return Err(("kind", "`text` takes the rest of the message, so it must be the last argument".into()));
            }
            unused("pattern", raw.pattern.is_some(), "text")?;
            ArgKind::Text
        }
        "words" => {
            unused("pattern", raw.pattern.is_some(), "words")?;
            ArgKind::Words
        }
        "int" => ArgKind::Int { min: raw.min, max: raw.max },
        "duration" => ArgKind::Duration,
        "choice" => match raw.choices {
            Some(c) if !c.is_empty() => ArgKind::Choice(c),
            _ => return Err(("choices", "a `choice` argument needs a non-empty `choices` list".into())),
        },
        "flag" => {
            if raw.required {
                return Err(("required", "a flag cannot be required".into()));
            }
            ArgKind::Flag
        }
        other => {
            return Err(("kind", format!("unknown kind `{other}` (word, words, text, int, duration, choice, flag)")));
        }
    };
    if raw.option && matches!(kind, ArgKind::Flag | ArgKind::Text | ArgKind::Words) {
        return Err(("option", format!("`option` does not apply to kind `{}`", raw.kind)));
    }
    let max_len = raw.max_len.unwrap_or(match kind {
        ArgKind::Text | ArgKind::Words => 4096,
        _ => DEFAULT_MAX_LEN,
    });
    let mut spec = ArgSpec {
        name: raw.name,
        kind,
        required: raw.required,
        default: None,
        help: raw.help,
        max_len,
        option: raw.option,
    };
    if let Some(value) = raw.default {
        if spec.required {
            return Err(("default", "a required argument cannot have a default".into()));
        }
        let text = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        let parsed = args::check_value(&spec, &text).map_err(|e| ("default", format!("{e:?}")))?;
        spec.default = Some(parsed);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<CommandSet, Vec<CommandFileError>> {
        CommandSet::from_files(files.iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())))
    }

    #[test]
    fn embedded_commands_load() {
        let set = CommandSet::embedded().expect("embedded command files are valid");
        for name in ["help", "ping", "status", "whoami"] {
            assert!(set.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn embedded_list_matches_the_directory() {
        let on_disk = read_toml_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands"))).unwrap();
        let mut names: Vec<_> =
            on_disk.iter().map(|(p, _)| Path::new(p).file_name().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        let embedded: Vec<_> = EMBEDDED.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(names, embedded, "add new command files to command::EMBEDDED");
    }

    #[test]
    fn every_problem_is_reported_with_file_and_key() {
        let bad = r#"
name = "Bad Name"
summary = { en = "x", zh-CN = "x" }
handler = "nope"
[[args]]
name = "rest"
kind = "text"
[[args]]
name = "n"
kind = "int"
required = true
"#;
        let errors = load(&[("bad.toml", bad)]).unwrap_err();
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"name"), "{errors:?}");
        assert!(keys.contains(&"handler"), "{errors:?}");
        assert!(keys.contains(&"args[0].kind"), "{errors:?}");
        assert!(errors.iter().all(|e| e.file == "bad.toml"));
    }

    #[test]
    fn unknown_keys_and_duplicate_names_are_rejected() {
        let a = "name = \"a\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n";
        let b = "name = \"b\"\naliases = [\"a\"]\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n";
        let errors = load(&[("a.toml", a), ("b.toml", b)]).unwrap_err();
        assert!(errors[0].message.contains("already used by a.toml"), "{errors:?}");
        let typo = "name = \"a\"\nsumary = 1\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n";
        let errors = load(&[("t.toml", typo)]).unwrap_err();
        assert!(errors[0].message.contains("sumary"), "{errors:?}");
    }

    #[test]
    fn a_bad_default_is_reported() {
        let f = "name = \"a\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n\
                 [[args]]\nname = \"env\"\nkind = \"choice\"\nchoices = [\"prod\"]\ndefault = \"dev\"\n";
        let errors = load(&[("a.toml", f)]).unwrap_err();
        assert_eq!(errors[0].key, "args[0].default");
    }

    #[test]
    fn the_example_ops_commands_load_with_the_builtins() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/commands"));
        let examples = read_toml_dir(dir).unwrap();
        assert_eq!(examples.len(), 4);
        // They replace the bundled demo /deploy.
        let builtins =
            EMBEDDED.iter().filter(|(n, _)| *n != "deploy.toml").map(|(n, s)| ((*n).to_owned(), (*s).to_owned()));
        let set = CommandSet::from_files(builtins.chain(examples)).unwrap_or_else(|e| panic!("{e:#?}"));
        for name in ["deploy", "canary", "compose_deploy", "hook_deploy"] {
            assert!(set.get(name).and_then(|c| c.run.as_ref()).is_some(), "{name}");
        }
    }

    #[test]
    fn ops_commands_refuse_unconstrained_arguments_and_chat_chosen_programs() {
        let base = "name = \"x\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"run\"\n\
                    [[args]]\nname = \"v\"\nkind = \"word\"\nrequired = true\n\
                    [[args]]\nname = \"why\"\nkind = \"text\"\n[run]\n";
        let cases = [
            ("[[run.steps]]\nname = \"a\"\nargv = [\"echo\", \"{{ v }}\"]\n", "needs a `pattern`"),
            ("[[run.steps]]\nname = \"a\"\nargv = [\"{{ v }}\"]\n", "the program may only use"),
            ("[[run.steps]]\nname = \"a\"\nargv = [\"echo\", \"{{ why }}\"]\n", "free text"),
            ("[[run.steps]]\nname = \"a\"\nargv = [\"echo\", \"{{ nope }}\"]\n", "unknown variable"),
            ("[[run.steps]]\nname = \"a\"\nargv = [\"echo\", \"{{ previous_version }}\"]\n", "only known in rollback"),
            ("[[run.steps]]\nname = \"a\"\nargv = [\"echo\", \"{{ secrets.T }}\"]\n", "not listed in run.secrets"),
            ("[[run.steps]]\nname = \"a\"\nkind = \"pause\"\n", "needs a duration"),
            ("auto_rollback = true\n[[run.steps]]\nname = \"a\"\nargv = [\"true\"]\n", "needs [[run.rollback]]"),
            ("", "at least one step"),
        ];
        for (run, expected) in cases {
            let errors = load(&[("x.toml", &format!("{base}{run}"))]).unwrap_err();
            assert!(errors.iter().any(|e| e.message.contains(expected)), "{run}: {errors:?}");
        }
    }

    #[test]
    fn closest_finds_typos_only() {
        let set = CommandSet::embedded().unwrap();
        assert_eq!(set.closest("stauts"), Some("status"));
        assert_eq!(set.closest("hepl"), Some("help"));
        assert_eq!(set.closest("depoly"), Some("deploy"));
        assert_eq!(set.closest("restart"), None);
    }
}
