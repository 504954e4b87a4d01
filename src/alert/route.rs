//! Routing: which chats get an alert group's card. Rules are tried in order;
//! the first whose matchers all hold and whose time window is open wins,
//! unless it says `continue`, in which case later rules may add chats.

use std::collections::BTreeMap;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use regex::Regex;

use crate::event::ChatRef;

/// One label condition, written as Alertmanager writes them:
/// `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    op: MatchOp,
}

#[derive(Debug, Clone)]
enum MatchOp {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let name_end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let (name, rest) = s.split_at(name_end);
        if name.is_empty() {
            return Err(format!("`{s}`: a matcher starts with a label name, e.g. severity=\"critical\""));
        }
        let (op, value) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.trim_start().strip_prefix(op).map(|v| (*op, v.trim())))
            .ok_or_else(|| format!("`{s}`: expected =, !=, =~ or !~ after `{name}`"))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("`{s}`: the value must be in double quotes"))?
            .to_owned();
        // Anchored like Alertmanager's: the whole value must match.
        let regex = |v: &str| Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("`{s}`: {e}"));
        let op = match op {
            "=" => MatchOp::Equal(value),
            "!=" => MatchOp::NotEqual(value),
            "=~" => MatchOp::Regex(regex(&value)?),
            _ => MatchOp::NotRegex(regex(&value)?),
        };
        Ok(Self { name: name.to_owned(), op })
    }

    /// A missing label counts as the empty string, as in Alertmanager.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match &self.op {
            MatchOp::Equal(v) => value == v,
            MatchOp::NotEqual(v) => value != v,
            MatchOp::Regex(r) => r.is_match(value),
            MatchOp::NotRegex(r) => !r.is_match(value),
        }
    }
}

/// When a rule applies: some weekdays, a time of day range (may wrap past
/// midnight), in a time zone.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    pub days: Vec<Weekday>,
    pub from: Time,
    pub to: Time,
    pub tz: TimeZone,
}

impl TimeWindow {
    /// `days` like `["mon-fri", "sun"]` (empty: every day); `hours` like `09:00-18:00`; `tz` an IANA name.
    pub fn parse(days: &[String], hours: Option<&str>, tz: Option<&str>) -> Result<Self, String> {
        let mut out = Vec::new();
        for spec in days {
            let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
            let (a, b) = (weekday(a)?, weekday(b)?);
            let mut d = a;
            loop {
                if !out.contains(&d) {
                    out.push(d);
                }
                if d == b {
                    break;
                }
                d = d.next();
            }
        }
        let (from, to) = match hours {
            None => (Time::midnight(), Time::midnight()),
            Some(h) => {
                let (a, b) = h.split_once('-').ok_or_else(|| format!("hours `{h}` must look like 09:00-18:00"))?;
                let parse = |t: &str| -> Result<Time, String> {
                    let t = t.trim();
                    // 24:00 is the end of the day.
                    if t == "24:00" {
                        return Ok(Time::midnight());
                    }
                    t.parse::<Time>().map_err(|e| format!("`{t}` is not a time of day (HH:MM): {e}"))
                };
                (parse(a)?, parse(b)?)
            }
        };
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone `{name}`: {e}"))?,
        };
        Ok(Self { days: out, from, to, tz })
    }

    pub fn contains(&self, now_ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(now_ms) else { return false };
        let local = ts.to_zoned(self.tz.clone());
        let time = local.time();
        let (day, in_hours) = if self.from == self.to {
            (local.weekday(), true)
        } else if self.from < self.to {
            (local.weekday(), time >= self.from && time < self.to)
        } else if time >= self.from {
            // A window past midnight belongs to the day it started.
            (local.weekday(), true)
        } else {
            (local.weekday().previous(), time < self.to)
        };
        in_hours && (self.days.is_empty() || self.days.contains(&day))
    }
}

fn weekday(s: &str) -> Result<Weekday, String> {
    Ok(match s.trim().to_ascii_lowercase().get(..3).unwrap_or("") {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return Err(format!("`{s}` is not a weekday (mon, tue, …, sun)")),
    })
}

#[derive(Debug, Clone)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    pub window: Option<TimeWindow>,
    pub chats: Vec<ChatRef>,
    /// Keep trying later rules after this one matched.
    pub continue_matching: bool,
}

/// The chats for a group whose alerts carry `labels`, at `now_ms`, without repeats.
pub fn chats_for(routes: &[Route], labels: &BTreeMap<String, String>, now_ms: i64) -> Vec<ChatRef> {
    let mut chats: Vec<ChatRef> = Vec::new();
    for route in routes {
        if !route.matchers.iter().all(|m| m.matches(labels)) {
            continue;
        }
        if route.window.as_ref().is_some_and(|w| !w.contains(now_ms)) {
            continue;
        }
        for chat in &route.chats {
            if !chats.contains(chat) {
                chats.push(chat.clone());
            }
        }
        if !route.continue_matching {
            break;
        }
    }
    chats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PlatformKind;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn matchers_follow_alertmanager_semantics() {
        let l = labels(&[("severity", "critical"), ("team", "db")]);
        for (m, expected) in [
            (r#"severity="critical""#, true),
            (r#"severity = "critical""#, true),
            (r#"severity!="critical""#, false),
            (r#"team=~"db|infra""#, true),
            (r#"team=~"d""#, false), // anchored
            (r#"team!~"web.*""#, true),
            (r#"env="""#, true), // missing label is ""
            (r#"env!="""#, false),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&l), expected, "{m}");
        }
        for bad in [r#"="x""#, "severity critical", "severity=critical", r#"x=~"(""#] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn time_windows_honour_days_hours_zone_and_midnight() {
        let office = TimeWindow::parse(&["mon-fri".into()], Some("09:00-18:00"), Some("Asia/Shanghai")).unwrap();
        // 2026-11-23 is a Monday. 02:00Z is 10:00 in Shanghai.
        assert!(office.contains(ms("2026-11-23T02:00:00Z")));
        assert!(!office.contains(ms("2026-11-23T11:00:00Z"))); // 19:00 local
        assert!(!office.contains(ms("2026-11-22T02:00:00Z"))); // Sunday
        let night = TimeWindow::parse(&["fri".into()], Some("22:00-06:00"), None).unwrap();
        assert!(night.contains(ms("2026-11-27T23:00:00Z"))); // Friday 23:00
        assert!(night.contains(ms("2026-11-28T05:00:00Z"))); // Saturday 05:00 belongs to Friday's night
        assert!(!night.contains(ms("2026-11-28T07:00:00Z")));
        assert!(!night.contains(ms("2026-11-26T23:00:00Z"))); // Thursday
        let weekend = TimeWindow::parse(&["sat-sun".into()], None, None).unwrap();
        assert_eq!(weekend.days, [Weekday::Saturday, Weekday::Sunday]);
        assert!(TimeWindow::parse(&["someday".into()], None, None).is_err());
        assert!(TimeWindow::parse(&[], Some("9-18"), None).is_err());
        assert!(TimeWindow::parse(&[], None, Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn first_matching_route_wins_unless_it_continues() {
        let chat = |id: &str| ChatRef::new(PlatformKind::Console, id);
        let route = |m: &[&str], chats: &[&str], cont: bool| Route {
            matchers: m.iter().map(|m| Matcher::parse(m).unwrap()).collect(),
            window: None,
            chats: chats.iter().map(|c| chat(c)).collect(),
            continue_matching: cont,
        };
        let routes = vec![
            route(&[r#"severity="critical""#], &["pager", "ops"], true),
            route(&[r#"team="db""#], &["db", "ops"], false),
            route(&[], &["catch-all"], false),
        ];
        let got = chats_for(&routes, &labels(&[("severity", "critical"), ("team", "db")]), 0);
        assert_eq!(got, [chat("pager"), chat("ops"), chat("db")]);
        assert_eq!(chats_for(&routes, &labels(&[("team", "web")]), 0), [chat("catch-all")]);
    }
}
