//! Rendering for Feishu: a platform-neutral [`Card`] becomes card JSON 2.0
//! (header color, markdown, fields, buttons whose callback value carries the
//! action token, confirm dialogs), kept under the 30 KB message limit with a
//! visible truncation notice. Text replies are sent as `post` messages made of
//! plain `text` elements, so user-supplied text can never become an
//! `<at user_id="all">` mention.

use serde_json::{Value, json};

use crate::card::{ButtonStyle, Card, Color};

/// Feishu's limit for card and post bodies is 30 KB; keep a margin for the envelope.
pub const MAX_CARD_BYTES: usize = 28 * 1024;

/// The card as the `content` string of an `interactive` message.
pub fn render_card(card: &Card, truncated_notice: &str) -> String {
    let full = card_json(card, &card.body, card.fields.len(), None).to_string();
    if full.len() <= MAX_CARD_BYTES {
        return full;
    }
    // Shrink the body first, then drop fields from the end, until it fits.
    let mut body_chars = card.body.chars().count();
    let mut n_fields = card.fields.len();
    loop {
        let overflow = card_json(card, "", n_fields, Some(truncated_notice)).to_string().len();
        let body: String = if overflow >= MAX_CARD_BYTES {
            String::new()
        } else {
            // Each char may escape to several bytes in JSON; step down until it fits.
            body_chars = body_chars.min(MAX_CARD_BYTES - overflow);
            card.body.chars().take(body_chars).collect()
        };
        let rendered = card_json(card, &body, n_fields, Some(truncated_notice)).to_string();
        if rendered.len() <= MAX_CARD_BYTES {
            return rendered;
        }
        if body_chars > 0 {
            body_chars = body_chars * 3 / 4;
        } else if n_fields > 0 {
            n_fields -= (n_fields / 4).max(1);
        } else {
            return card_json(card, "", 0, Some(truncated_notice)).to_string();
        }
    }
}

fn card_json(card: &Card, body: &str, n_fields: usize, truncated_notice: Option<&str>) -> Value {
    let mut elements = Vec::new();
    let fields = &card.fields[..n_fields.min(card.fields.len())];
    let mut i = 0;
    while i < fields.len() {
        // Two consecutive short fields share a row.
        if fields[i].short && fields.get(i + 1).is_some_and(|f| f.short) {
            let column = |f: &crate::card::Field| {
                json!({"tag": "column", "width": "weighted", "weight": 1, "elements": [
                    {"tag": "markdown", "content": format!("**{}**\n{}", escape(&f.label), escape(&f.value))}
                ]})
            };
            elements.push(json!({"tag": "column_set", "columns": [column(&fields[i]), column(&fields[i + 1])]}));
            i += 2;
        } else {
            let f = &fields[i];
            elements
                .push(json!({"tag": "markdown", "content": format!("**{}:** {}", escape(&f.label), escape(&f.value))}));
            i += 1;
        }
    }
    if !body.trim().is_empty() {
        if !elements.is_empty() {
            elements.push(json!({"tag": "hr"}));
        }
        elements.push(json!({"tag": "markdown", "content": escape(body.trim())}));
    }
    if let Some(notice) = truncated_notice {
        elements.push(json!({"tag": "markdown", "content": format!("_{}_", escape(notice)), "text_size": "notation"}));
    }
    if !card.buttons.is_empty() {
        let columns: Vec<Value> = card
            .buttons
            .iter()
            .map(|b| {
                let kind = match b.style {
                    ButtonStyle::Default => "default",
                    ButtonStyle::Primary => "primary",
                    ButtonStyle::Danger => "danger",
                };
                let mut button = json!({
                    "tag": "button",
                    "text": {"tag": "plain_text", "content": b.label},
                    "type": kind,
                    "behaviors": [{"type": "callback", "value": {"t": b.target.as_str()}}],
                });
                if let Some(confirm) = &b.confirm {
                    button["confirm"] = json!({
                        "title": {"tag": "plain_text", "content": b.label},
                        "text": {"tag": "plain_text", "content": confirm},
                    });
                }
                json!({"tag": "column", "width": "auto", "elements": [button]})
            })
            .collect();
        elements.push(json!({"tag": "column_set", "flex_mode": "flow", "columns": columns}));
    }
    if let Some(footer) = &card.footer {
        elements.push(json!({"tag": "markdown", "content": escape(footer), "text_size": "notation"}));
    }
    json!({
        "schema": "2.0",
        "config": {"update_multi": true, "summary": {"content": card.title}},
        "header": {"title": {"tag": "plain_text", "content": card.title}, "template": template(card.color)},
        "body": {"elements": elements},
    })
}

fn template(color: Color) -> &'static str {
    match color {
        Color::Blue => "blue",
        Color::Green => "green",
        Color::Yellow => "yellow",
        Color::Orange => "orange",
        Color::Red => "red",
        Color::Grey => "grey",
        Color::Purple => "purple",
    }
}

/// Card markdown treats `<…>` as markup (`<at id=all>`, `<font>`); values
/// written by users must not be able to mention everyone or restyle the card.
fn escape(text: &str) -> String {
    text.replace('<', "&#60;").replace('>', "&#62;")
}

/// Text as one or more `post` message contents, each under the size limit,
/// split at line boundaries. Every line is a plain `text` element.
pub fn render_text(text: &str) -> Vec<String> {
    let mut posts = Vec::new();
    let mut lines: Vec<Value> = Vec::new();
    let mut size = 0;
    for line in text.lines() {
        // A single line longer than the limit is cut into pieces.
        let mut pieces: Vec<String> = Vec::new();
        let mut current = String::new();
        for ch in line.chars() {
            if current.len() + ch.len_utf8() > MAX_CARD_BYTES / 2 {
                pieces.push(std::mem::take(&mut current));
            }
            current.push(ch);
        }
        pieces.push(current);
        for piece in pieces {
            let element = json!([{"tag": "text", "text": piece}]);
            let element_size = element.to_string().len() + 1;
            if size + element_size > MAX_CARD_BYTES && !lines.is_empty() {
                posts.push(post(std::mem::take(&mut lines)));
                size = 0;
            }
            size += element_size;
            lines.push(element);
        }
    }
    if !lines.is_empty() || posts.is_empty() {
        posts.push(post(lines));
    }
    posts
}

/// A short text as a `post` whose last line mentions each person with an
/// `at` element, which notifies them. The text is cut to stay under the limit.
pub fn render_mention(text: &str, people: &[crate::reply::Mention]) -> String {
    let mut text: String = text.to_owned();
    if text.len() > MAX_CARD_BYTES / 2 {
        let mut end = MAX_CARD_BYTES / 2;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    let mut lines: Vec<Value> = text.lines().map(|line| json!([{"tag": "text", "text": line}])).collect();
    let ats: Vec<Value> = people.iter().map(|p| json!({"tag": "at", "user_id": p.user, "user_name": p.name})).collect();
    if !ats.is_empty() {
        lines.push(Value::Array(ats));
    }
    post(lines)
}

fn post(lines: Vec<Value>) -> String {
    json!({"zh_cn": {"title": "", "content": lines}}).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::action::ActionToken;
    use crate::card::{Button, CardOf, Field};

    fn sample() -> Card {
        CardOf {
            title: "[FIRING] api p99 latency".into(),
            color: Color::Red,
            fields: vec![
                Field { label: "Service".into(), value: "web-api".into(), short: true },
                Field { label: "Since".into(), value: "10:02 UTC".into(), short: true },
                Field { label: "Summary".into(), value: "p99 > 2s <at id=all></at>".into(), short: false },
            ],
            body: "**Runbook:** [latency](https://runbooks.example/latency)".into(),
            buttons: vec![
                Button {
                    label: "Ack".into(),
                    style: ButtonStyle::Primary,
                    confirm: None,
                    target: ActionToken::from_wire("tok-ack"),
                },
                Button {
                    label: "Roll back".into(),
                    style: ButtonStyle::Danger,
                    confirm: Some("Reverts to v41".into()),
                    target: ActionToken::from_wire("tok-rb"),
                },
            ],
            footer: Some("Updated 10:05".into()),
        }
    }

    /// Compares with `tests/fixtures/feishu/<name>.json`; set OPSCLAW_BLESS=1 to rewrite it.
    fn golden(name: &str, rendered: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feishu").join(format!("{name}.json"));
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(rendered).unwrap()).unwrap() + "\n";
        if std::env::var_os("OPSCLAW_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &pretty).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(pretty, expected, "rendering changed; rerun with OPSCLAW_BLESS=1 if intended");
    }

    #[test]
    fn card_matches_golden_file() {
        golden("alert_card", &render_card(&sample(), "truncated"));
    }

    #[test]
    fn user_text_cannot_mention_everyone() {
        let rendered = render_card(&sample(), "truncated");
        assert!(!rendered.contains("<at"), "{rendered}");
        let post = render_text("pong: <at user_id=\"all\"></at>");
        let value: Value = serde_json::from_str(&post[0]).unwrap();
        assert_eq!(value["zh_cn"]["content"][0][0], json!({"tag": "text", "text": "pong: <at user_id=\"all\"></at>"}));
    }

    #[test]
    fn oversized_cards_are_truncated_with_a_notice() {
        let mut card = sample();
        card.body = "日志行 log line\n".repeat(4000);
        let rendered = render_card(&card, "Truncated: the card was over 30 KB.");
        assert!(rendered.len() <= MAX_CARD_BYTES, "{}", rendered.len());
        assert!(rendered.contains("Truncated: the card was over 30 KB."));
        assert!(rendered.contains("tok-ack"), "buttons survive truncation");
        card.fields =
            (0..2000).map(|i| Field { label: format!("f{i}"), value: "x".repeat(30), short: false }).collect();
        let rendered = render_card(&card, "Truncated");
        assert!(rendered.len() <= MAX_CARD_BYTES);
    }

    #[test]
    fn long_text_splits_at_lines_in_order() {
        let text: String = (0..3000).map(|i| format!("line {i:04} of the output\n")).collect();
        let posts = render_text(&text);
        assert!(posts.len() > 1);
        let mut all = Vec::new();
        for post in &posts {
            assert!(post.len() <= MAX_CARD_BYTES + 64);
            let value: Value = serde_json::from_str(post).unwrap();
            for line in value["zh_cn"]["content"].as_array().unwrap() {
                all.push(line[0]["text"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(all.len(), 3000);
        assert_eq!(all[2999], "line 2999 of the output");
        assert_eq!(render_text("").len(), 1);
    }

    #[test]
    fn mentions_end_the_post_with_at_elements() {
        let people = [crate::reply::Mention { name: "alice".into(), user: "ou_1".into() }];
        let post: Value = serde_json::from_str(&render_mention("line one\nline two", &people)).unwrap();
        let content = &post["zh_cn"]["content"];
        assert_eq!(content.as_array().unwrap().len(), 3);
        assert_eq!(content[1][0], json!({"tag": "text", "text": "line two"}));
        assert_eq!(content[2][0], json!({"tag": "at", "user_id": "ou_1", "user_name": "alice"}));
    }
}
