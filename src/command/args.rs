//! Turning the text after a command name into typed argument values.
//!
//! The lexer is lazy: it reads one word (or quoted phrase) at a time, so a
//! trailing `text` argument can take the rest of the message verbatim, with
//! its apostrophes and quotes untouched. Quotes are only quotes at the start
//! of a word: `"..."`, `'...'`, `“...”`, `‘...’` and `「...」`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ArgKind, ArgSpec, CommandSpec};

/// A parsed, validated argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    Str(String),
    Int(i64),
    Duration(Duration),
    Flag(bool),
}

/// The bound arguments of one invocation, by argument name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args(BTreeMap<String, ArgValue>);

impl Args {
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(ArgValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name) {
            Some(ArgValue::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.0.get(name) {
            Some(ArgValue::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.0.get(name), Some(ArgValue::Flag(true)))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArgValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn insert(&mut self, name: &str, value: ArgValue) {
        self.0.insert(name.to_owned(), value);
    }
}

/// Why the arguments were refused; each variant has a catalog message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    Missing { arg: String },
    TooMany { value: String },
    Pattern { arg: String, value: String, pattern: String },
    Choice { arg: String, value: String, choices: Vec<String> },
    Integer { arg: String, value: String, range: String },
    Duration { arg: String, value: String },
    TooLong { arg: String, max: usize },
    UnknownFlag { flag: String },
    FlagNeedsValue { flag: String },
    UnterminatedQuote,
}

/// Binds `input` (the text after the command name) to `spec`'s arguments.
pub fn bind(spec: &CommandSpec, input: &str) -> Result<Args, ArgError> {
    let positional: Vec<&ArgSpec> = spec.args.iter().filter(|a| a.positional()).collect();
    let mut values = BTreeMap::new();
    // What a trailing `words` argument has gathered so far.
    let mut words: Vec<String> = Vec::new();
    let mut next_pos = 0;
    let mut lexer = Lexer { rest: input };
    let mut options_done = false;
    loop {
        while next_pos < positional.len() && values.contains_key(&positional[next_pos].name) {
            next_pos += 1;
        }
        if let Some(arg) = positional.get(next_pos).filter(|a| matches!(a.kind, ArgKind::Text)) {
            let rest = lexer.rest.trim();
            if !rest.is_empty() {
                values.insert(arg.name.clone(), check_value(arg, rest)?);
            }
            break;
        }
        let Some(token) = lexer.next_token()? else { break };
        if !token.quoted && !options_done && token.text == "--" {
            options_done = true;
            continue;
        }
        if let Some(option) = token.text.strip_prefix("--").filter(|o| !token.quoted && !options_done && !o.is_empty())
        {
            let (name, inline) = match option.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (option, None),
            };
            let arg = spec
                .args
                .iter()
                .find(|a| a.name == name)
                .ok_or_else(|| ArgError::UnknownFlag { flag: name.to_owned() })?;
            let text = match (&arg.kind, inline) {
                (_, Some(v)) => v,
                (ArgKind::Flag, None) => "true".to_owned(),
                (_, None) => match lexer.next_token()? {
                    Some(t) => t.text,
                    None => return Err(ArgError::FlagNeedsValue { flag: name.to_owned() }),
                },
            };
            values.insert(arg.name.clone(), check_value(arg, &text)?);
            continue;
        }
        let Some(arg) = positional.get(next_pos) else {
            return Err(ArgError::TooMany { value: token.text });
        };
        if matches!(arg.kind, ArgKind::Words) {
            words.push(token.text);
            continue;
        }
        values.insert(arg.name.clone(), check_value(arg, &token.text)?);
        next_pos += 1;
    }
    if let Some(arg) = positional.get(next_pos).filter(|a| matches!(a.kind, ArgKind::Words) && !words.is_empty()) {
        values.insert(arg.name.clone(), check_value(arg, &words.join(" "))?);
    }
    for arg in &spec.args {
        if values.contains_key(&arg.name) {
            continue;
        }
        match (&arg.default, &arg.kind) {
            (Some(default), _) => {
                values.insert(arg.name.clone(), default.clone());
            }
            (None, ArgKind::Flag) => {
                values.insert(arg.name.clone(), ArgValue::Flag(false));
            }
            (None, _) if arg.required => return Err(ArgError::Missing { arg: arg.name.clone() }),
            (None, _) => {}
        }
    }
    Ok(Args(values))
}

/// Validates one raw value against its argument's kind.
pub fn check_value(arg: &ArgSpec, text: &str) -> Result<ArgValue, ArgError> {
    if text.chars().count() > arg.max_len {
        return Err(ArgError::TooLong { arg: arg.name.clone(), max: arg.max_len });
    }
    match &arg.kind {
        ArgKind::Word { pattern: Some(re) } if !re.is_match(text) => {
            Err(ArgError::Pattern { arg: arg.name.clone(), value: text.to_owned(), pattern: re.as_str().to_owned() })
        }
        ArgKind::Word { .. } | ArgKind::Text | ArgKind::Words => Ok(ArgValue::Str(text.to_owned())),
        ArgKind::Int { min, max } => {
            let range = || match (min, max) {
                (Some(a), Some(b)) => format!("{a}..{b}"),
                (Some(a), None) => format!("{a}.."),
                (None, Some(b)) => format!("..{b}"),
                (None, None) => "..".to_owned(),
            };
            let n: i64 = text.parse().map_err(|_| ArgError::Integer {
                arg: arg.name.clone(),
                value: text.to_owned(),
                range: range(),
            })?;
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                return Err(ArgError::Integer { arg: arg.name.clone(), value: text.to_owned(), range: range() });
            }
            Ok(ArgValue::Int(n))
        }
        ArgKind::Duration => humantime::parse_duration(text)
            .map(ArgValue::Duration)
            .map_err(|_| ArgError::Duration { arg: arg.name.clone(), value: text.to_owned() }),
        ArgKind::Choice(choices) => {
            choices.iter().find(|c| c.eq_ignore_ascii_case(text)).map(|c| ArgValue::Str(c.clone())).ok_or_else(|| {
                ArgError::Choice { arg: arg.name.clone(), value: text.to_owned(), choices: choices.clone() }
            })
        }
        ArgKind::Flag => match text {
            "true" | "yes" | "on" => Ok(ArgValue::Flag(true)),
            "false" | "no" | "off" => Ok(ArgValue::Flag(false)),
            _ => Err(ArgError::Choice {
                arg: arg.name.clone(),
                value: text.to_owned(),
                choices: vec!["true".into(), "false".into()],
            }),
        },
    }
}

struct Token {
    text: String,
    quoted: bool,
}

struct Lexer<'a> {
    rest: &'a str,
}

const QUOTES: [(char, char); 5] = [('"', '"'), ('\'', '\''), ('“', '”'), ('‘', '’'), ('「', '」')];

impl Lexer<'_> {
    fn next_token(&mut self) -> Result<Option<Token>, ArgError> {
        self.rest = self.rest.trim_start();
        let Some(first) = self.rest.chars().next() else { return Ok(None) };
        if let Some(&(open, close)) = QUOTES.iter().find(|(open, _)| *open == first) {
            let body = &self.rest[open.len_utf8()..];
            let end = body.find(close).ok_or(ArgError::UnterminatedQuote)?;
            let text = body[..end].to_owned();
            self.rest = &body[end + close.len_utf8()..];
            return Ok(Some(Token { text, quoted: true }));
        }
        let end = self.rest.find(char::is_whitespace).unwrap_or(self.rest.len());
        let text = self.rest[..end].to_owned();
        self.rest = &self.rest[end..];
        Ok(Some(Token { text, quoted: false }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandSet;

    const DEPLOY: &str = r#"
name = "deploy"
summary = { en = "x", zh-CN = "x" }
handler = "ping"
[[args]]
name = "app"
kind = "word"
required = true
pattern = "[a-z][a-z0-9-]*"
[[args]]
name = "version"
kind = "word"
required = true
pattern = "[0-9]+\\.[0-9]+\\.[0-9]+"
[[args]]
name = "env"
kind = "choice"
choices = ["staging", "prod"]
default = "staging"
[[args]]
name = "force"
kind = "flag"
[[args]]
name = "timeout"
kind = "duration"
default = "10m"
[[args]]
name = "replicas"
kind = "int"
min = 1
max = 50
[[args]]
name = "note"
kind = "text"
"#;

    fn spec() -> std::sync::Arc<CommandSpec> {
        let set = CommandSet::from_files([("deploy.toml".to_owned(), DEPLOY.to_owned())]).unwrap();
        set.get("deploy").unwrap().clone()
    }

    fn check(input: &str, expected: Result<&[(&str, ArgValue)], ArgError>) {
        let got = bind(&spec(), input);
        match expected {
            Ok(pairs) => {
                let got = got.unwrap_or_else(|e| panic!("{input:?}: {e:?}"));
                for (name, value) in pairs {
                    assert_eq!(got.0.get(*name), Some(value), "{input:?} arg {name}");
                }
            }
            Err(e) => assert_eq!(got, Err(e), "{input:?}"),
        }
    }

    fn s(v: &str) -> ArgValue {
        ArgValue::Str(v.to_owned())
    }

    #[test]
    fn binds_positionals_defaults_and_flags() {
        check(
            "payments 1.4.2",
            Ok(&[
                ("app", s("payments")),
                ("env", s("staging")),
                ("force", ArgValue::Flag(false)),
                ("timeout", ArgValue::Duration(Duration::from_secs(600))),
            ]),
        );
        check("payments 1.4.2 PROD --force", Ok(&[("env", s("prod")), ("force", ArgValue::Flag(true))]));
        check("--env prod payments 1.4.2", Ok(&[("env", s("prod")), ("app", s("payments"))]));
        check("payments 1.4.2 --timeout=90s", Ok(&[("timeout", ArgValue::Duration(Duration::from_secs(90)))]));
        check("payments 1.4.2 --replicas 3", Ok(&[("replicas", ArgValue::Int(3))]));
    }

    #[test]
    fn trailing_text_is_verbatim() {
        check(
            "payments 1.4.2 prod 10m 3 it's the \"hotfix\" --force",
            Ok(&[("note", s("it's the \"hotfix\" --force")), ("force", ArgValue::Flag(false))]),
        );
    }

    #[test]
    fn quotes_group_words() {
        check("“payments” '1.4.2' 「prod」", Ok(&[("app", s("payments")), ("env", s("prod"))]));
        check("payments \"1.4.2", Err(ArgError::UnterminatedQuote));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        check("payments", Err(ArgError::Missing { arg: "version".into() }));
        check(
            "payments; 1.4.2",
            Err(ArgError::Pattern {
                arg: "app".into(),
                value: "payments;".into(),
                pattern: "^(?:[a-z][a-z0-9-]*)$".into(),
            }),
        );
        check(
            "$(reboot) 1.4.2",
            Err(ArgError::Pattern {
                arg: "app".into(),
                value: "$(reboot)".into(),
                pattern: "^(?:[a-z][a-z0-9-]*)$".into(),
            }),
        );
        check(
            "payments 1.4.2 dev",
            Err(ArgError::Choice {
                arg: "env".into(),
                value: "dev".into(),
                choices: vec!["staging".into(), "prod".into()],
            }),
        );
        check("payments 1.4.2 --colour red", Err(ArgError::UnknownFlag { flag: "colour".into() }));
        check("payments 1.4.2 --timeout", Err(ArgError::FlagNeedsValue { flag: "timeout".into() }));
        check("payments 1.4.2 --timeout soon", Err(ArgError::Duration { arg: "timeout".into(), value: "soon".into() }));
        check(
            "payments 1.4.2 --replicas 99",
            Err(ArgError::Integer { arg: "replicas".into(), value: "99".into(), range: "1..50".into() }),
        );
        let long = "a".repeat(300);
        check(&format!("{long} 1.4.2"), Err(ArgError::TooLong { arg: "app".into(), max: 256 }));
    }

    #[test]
    fn double_dash_ends_options() {
        let set = CommandSet::from_files([(
            "echo.toml".to_owned(),
            "name = \"echo\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n\
             [[args]]\nname = \"word\"\nkind = \"word\"\n"
                .to_owned(),
        )])
        .unwrap();
        let spec = set.get("echo").unwrap();
        assert_eq!(bind(spec, "-- --force").unwrap().str("word"), Some("--force"));
        assert_eq!(bind(spec, "a b"), Err(ArgError::TooMany { value: "b".into() }));
    }

    const LOGS: &str = "name = \"logs\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n\
        [[args]]\nname = \"service\"\nkind = \"word\"\nrequired = true\n\
        [[args]]\nname = \"query\"\nkind = \"words\"\n\
        [[args]]\nname = \"since\"\nkind = \"duration\"\noption = true\n\
        [[args]]\nname = \"limit\"\nkind = \"int\"\noption = true\ndefault = 20\n";

    #[test]
    fn words_gather_every_bare_word_and_options_still_bind() {
        let set = CommandSet::from_files([("logs.toml".to_owned(), LOGS.to_owned())]).unwrap();
        let spec = set.get("logs").unwrap();
        let args = bind(spec, "payments connection refused --since 30m \"upstream 502\"").unwrap();
        assert_eq!(args.str("service"), Some("payments"));
        assert_eq!(args.str("query"), Some("connection refused upstream 502"));
        assert_eq!(args.duration("since"), Some(Duration::from_secs(1800)));
        assert_eq!(args.int("limit"), Some(20));
        // An option is never bound by position: the words take everything.
        let args = bind(spec, "payments 30m").unwrap();
        assert_eq!((args.str("query"), args.duration("since")), (Some("30m"), None));
        assert_eq!(bind(spec, "payments").unwrap().str("query"), None);
        assert_eq!(spec.usage(), "/logs <service> [query…] [--since DURATION] [--limit N]");
    }

    #[test]
    fn a_positional_after_words_is_refused() {
        let file = "name = \"x\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"ping\"\n\
            [[args]]\nname = \"query\"\nkind = \"words\"\n[[args]]\nname = \"more\"\nkind = \"word\"\n";
        let errors = CommandSet::from_files([("x.toml".to_owned(), file.to_owned())]).unwrap_err();
        assert!(errors[0].message.contains("follows a `words` argument"), "{errors:?}");
    }
}
