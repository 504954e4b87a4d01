//! The `[kb]` section: where runbooks are, what may be written from chat,
//! and the optional model that writes answers.
//!
//! ```toml
//! [kb]
//! example = false                 # the runbooks built into opsclaw (default: only when no roots)
//! watch = true                    # re-index when files change
//! add_root = "runbooks/from-chat" # where /kb add writes (default: <data_dir>/kb-notes)
//! add_role = "editor"             # who may /kb add
//!
//! [[kb.roots]]
//! path = "runbooks"
//! url = "https://git.example.com/ops/runbooks/-/blob/main"
//! include = ["**/*.md"]
//! exclude = ["drafts/**"]
//!
//! [kb.llm]
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o-mini"
//! api_key_env = "OPENAI_API_KEY"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::Role;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKb {
    example: Option<bool>,
    watch: Option<bool>,
    add_root: Option<PathBuf>,
    add_role: Option<String>,
    relevance: Option<f32>,
    #[serde(default)]
    roots: Vec<RawRoot>,
    llm: Option<RawLlm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    path: PathBuf,
    url: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    base_url: String,
    model: String,
    api_key_env: Option<String>,
    timeout: Option<String>,
    max_time: Option<String>,
    max_tokens: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct KbConfig {
    pub roots: Vec<RootConfig>,
    pub example: bool,
    pub watch: bool,
    /// Where `/kb add` writes; `None`: `<data_dir>/kb-notes`.
    pub add_root: Option<PathBuf>,
    pub add_role: Role,
    /// Below this [`crate::kb::Kb::relevance`] a passage does not answer a question.
    pub relevance: f32,
    pub llm: Option<LlmConfig>,
}

#[derive(Debug, Clone)]
pub struct RootConfig {
    /// As written in the config: the root's name in hits.
    pub name: String,
    pub path: PathBuf,
    pub url: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Up to `/v1`: `{base_url}/chat/completions` is called.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Longest wait for the first token, and between tokens.
    pub timeout: Duration,
    /// Longest a whole answer may take.
    pub max_time: Duration,
    pub max_tokens: u32,
}

/// The default relevance bar, measured with `cargo bench --bench kb`: most
/// right answers score 0.6 and up, off-topic questions (`benches/kb_offtopic_*.tsv`,
/// session 22) mostly under 0.35, 5 of 102 over it.
pub const DEFAULT_RELEVANCE: f32 = 0.35;

pub fn validate(
    raw: RawKb,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(String, String),
) -> KbConfig {
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let mut roots: Vec<RootConfig> = Vec::new();
    for (i, r) in raw.roots.into_iter().enumerate() {
        let key = format!("kb.roots[{i}]");
        let name = r.path.display().to_string();
        let path = resolve(r.path);
        if !path.is_dir() {
            err(format!("{key}.path"), format!("`{}` is not a directory", path.display()));
        }
        for glob in r.include.iter().chain(&r.exclude) {
            if let Err(e) = globset::Glob::new(glob) {
                err(format!("{key}.include/exclude"), format!("`{glob}`: {e}"));
            }
        }
        if let Some(url) = &r.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            err(format!("{key}.url"), format!("`{url}` is not an http(s) address"));
        }
        if roots.iter().any(|o| o.name == name) {
            err(format!("{key}.path"), format!("`{name}` is listed twice"));
        }
        roots.push(RootConfig { name, path, url: r.url, include: r.include, exclude: r.exclude });
    }
    let add_role = raw.add_role.as_deref().unwrap_or("editor");
    let add_role = Role::parse(add_role).unwrap_or_else(|m| {
        err("kb.add_role".into(), m);
        Role::parse("editor").expect("a valid role")
    });
    let relevance = raw.relevance.unwrap_or(DEFAULT_RELEVANCE);
    if !(0.0..=1.0).contains(&relevance) {
        err("kb.relevance".into(), "must be between 0 and 1".into());
    }
    let llm = raw.llm.map(|l| {
        let mut duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => default,
            Some(v) => humantime::parse_duration(&v).unwrap_or_else(|e| {
                err(format!("kb.llm.{key}"), format!("not a duration ({e}); write e.g. 20s"));
                default
            }),
        };
        let timeout = duration("timeout", l.timeout, Duration::from_secs(20));
        let max_time = duration("max_time", l.max_time, Duration::from_secs(90));
        if !(l.base_url.starts_with("http://") || l.base_url.starts_with("https://")) {
            err("kb.llm.base_url".into(), format!("`{}` is not an http(s) address", l.base_url));
        }
        if l.model.trim().is_empty() {
            err("kb.llm.model".into(), "must not be empty".into());
        }
        let api_key = l.api_key_env.and_then(|var| {
            let value = env(&var).filter(|v| !v.is_empty());
            if value.is_none() {
                err("kb.llm.api_key_env".into(), format!("environment variable `{var}` is not set"));
            }
            value
        });
        LlmConfig {
            base_url: l.base_url.trim_end_matches('/').to_owned(),
            model: l.model,
            api_key,
            timeout,
            max_time,
            max_tokens: l.max_tokens.unwrap_or(800),
        }
    });
    KbConfig {
        example: raw.example.unwrap_or(roots.is_empty()),
        roots,
        watch: raw.watch.unwrap_or(true),
        add_root: raw.add_root.map(resolve),
        add_role,
        relevance,
        llm,
    }
}
