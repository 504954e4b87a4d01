//! Rendering for Telegram. A card is one HTML message (every value escaped;
//! the markdown body turned into Telegram's few HTML tags) with an inline
//! keyboard whose callback data is the action token. Text replies are sent as
//! plain text (no parse mode, so nothing in them is markup), split at line
//! boundaries under Telegram's 4096-character limit.

use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use crate::card::{ButtonStyle, Card, Color};

/// Telegram's limit for a message's text, counted after markup is parsed.
/// The unit is not documented; UTF-16 units are the larger count, so we use them.
pub const MAX_TEXT: usize = 4096;

/// The card as HTML, cut down (body first, then fields) to fit one message.
pub fn card_html(card: &Card, truncated_notice: &str) -> String {
    let full = html(card, &card.body, card.fields.len(), None);
    if visible_len(&full) <= MAX_TEXT {
        return full;
    }
    let mut body_chars = card.body.chars().count();
    let mut n_fields = card.fields.len();
    loop {
        body_chars = body_chars * 3 / 4;
        if body_chars == 0 && n_fields > 0 {
            n_fields -= (n_fields / 4).max(1);
        }
        let body: String = card.body.chars().take(body_chars).collect();
        let rendered = html(card, &body, n_fields, Some(truncated_notice));
        if visible_len(&rendered) <= MAX_TEXT || (body_chars == 0 && n_fields == 0) {
            return rendered;
        }
    }
}

/// One button per token, two to a row; dangerous ones are marked.
pub fn keyboard(card: &Card) -> Option<InlineKeyboardMarkup> {
    if card.buttons.is_empty() {
        return None;
    }
    let rows = card
        .buttons
        .chunks(2)
        .map(|row| {
            row.iter()
                .map(|b| {
                    let label = match b.style {
                        ButtonStyle::Danger => format!("⚠️ {}", b.label),
                        _ => b.label.clone(),
                    };
                    InlineKeyboardButton::callback(label, b.target.as_str())
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    Some(InlineKeyboardMarkup::new(rows))
}

fn html(card: &Card, body: &str, n_fields: usize, truncated_notice: Option<&str>) -> String {
    let mut out = format!("{} <b>{}</b>\n", dot(card.color), escape(&clip(&card.title, MAX_LINE)));
    let fields = &card.fields[..n_fields.min(card.fields.len())];
    if !fields.is_empty() {
        out.push('\n');
    }
    for f in fields {
        out.push_str(&format!("<b>{}:</b> {}\n", escape(&f.label), escape(&f.value)));
    }
    if !body.trim().is_empty() {
        out.push('\n');
        out.push_str(&markdown(body.trim()));
        out.push('\n');
    }
    if let Some(notice) = truncated_notice {
        out.push_str(&format!("\n<i>{}</i>\n", escape(notice)));
    }
    if let Some(footer) = &card.footer {
        out.push_str(&format!("\n<i>{}</i>\n", escape(&clip(footer, MAX_LINE))));
    }
    out.trim_end().to_owned()
}

/// Title and footer are kept whole by the cutting above, so each is capped
/// here: a card whose title alone filled the message could never be sent.
const MAX_LINE: usize = 512;

fn clip(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]).into(),
        None => text.into(),
    }
}

fn dot(color: Color) -> &'static str {
    match color {
        Color::Red => "🔴",
        Color::Orange => "🟠",
        Color::Yellow => "🟡",
        Color::Green => "🟢",
        Color::Blue => "🔵",
        Color::Grey => "⚪",
        Color::Purple => "🟣",
    }
}

/// Escapes text for Telegram HTML, attribute values included.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The card body's markdown subset as Telegram HTML: fenced code blocks,
/// `# headings`, `- lists`, `**bold**`, `*italic*` / `_italic_`, `` `code` ``
/// and `[links](https://…)`. Anything unmatched stays literal text.
fn markdown(md: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            out.push_str(if in_code { "</pre>\n" } else { "<pre>" });
            in_code = !in_code;
            continue;
        }
        if in_code {
            out.push_str(&escape(line));
            out.push('\n');
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(heading) = trimmed.strip_prefix('#') {
            out.push_str(&format!("<b>{}</b>\n", inline(heading.trim_start_matches('#').trim())));
        } else if let Some(item) = trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* ")) {
            out.push_str(&format!("• {}\n", inline(item)));
        } else {
            out.push_str(&inline(line));
            out.push('\n');
        }
    }
    if in_code {
        out.push_str("</pre>\n");
    }
    out.trim_end().to_owned()
}

fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some((html, after)) =
            code(rest).or_else(|| strong(rest)).or_else(|| emphasis(rest)).or_else(|| link(rest))
        {
            out.push_str(&html);
            rest = after;
            continue;
        }
        let c = rest.chars().next().expect("rest is not empty");
        out.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `delim` … `delim` at the start of `text`, with something in between.
fn delimited<'a>(text: &'a str, delim: &str) -> Option<(&'a str, &'a str)> {
    let inner = text.strip_prefix(delim)?;
    let end = inner.find(delim)?;
    (end > 0).then(|| (&inner[..end], &inner[end + delim.len()..]))
}

fn code(text: &str) -> Option<(String, &str)> {
    delimited(text, "`").map(|(inner, rest)| (format!("<code>{}</code>", escape(inner)), rest))
}

fn strong(text: &str) -> Option<(String, &str)> {
    delimited(text, "**").map(|(inner, rest)| (format!("<b>{}</b>", inline(inner)), rest))
}

fn emphasis(text: &str) -> Option<(String, &str)> {
    ["*", "_"].iter().find_map(|d| {
        let (inner, rest) = delimited(text, d)?;
        // `a * b` is not emphasis, nor is `snake_case_name` (closed inside a word).
        let closes_in_word = rest.chars().next().is_some_and(char::is_alphanumeric);
        (!inner.starts_with(' ') && !inner.ends_with(' ') && !closes_in_word)
            .then(|| (format!("<i>{}</i>", inline(inner)), rest))
    })
}

fn link(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('[')?;
    let close = inner.find("](")?;
    let (label, after) = (&inner[..close], &inner[close + 2..]);
    let end = after.find(')')?;
    let url = &after[..end];
    if !(url.starts_with("https://") || url.starts_with("http://")) || label.is_empty() {
        return None;
    }
    Some((format!("<a href=\"{}\">{}</a>", escape(url), escape(label)), &after[end + 1..]))
}

/// What Telegram counts against the limit: the text with tags removed and
/// entities decoded, in UTF-16 units.
pub fn visible_len(html: &str) -> usize {
    let mut n = 0;
    let mut in_tag = false;
    let mut chars = html.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '&' => {
                // One character per entity; skip to its `;`.
                if let Some(end) = html[i..].find(';') {
                    for _ in 0..end {
                        chars.next();
                    }
                }
                n += 1;
            }
            c => n += c.len_utf16(),
        }
    }
    n
}

/// Splits plain text into messages of at most `limit` UTF-16 units, at line
/// boundaries where possible; a single longer line is cut between characters.
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for line in text.split_inclusive('\n') {
        let len: usize = line.encode_utf16().count();
        if current_len + len > limit && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            current_len = 0;
        }
        if len > limit {
            for c in line.chars() {
                if current_len + c.len_utf16() > limit {
                    parts.push(std::mem::take(&mut current));
                    current_len = 0;
                }
                current.push(c);
                current_len += c.len_utf16();
            }
        } else {
            current.push_str(line);
            current_len += len;
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    // Telegram refuses empty messages; a part that is only a newline says nothing.
    parts.retain(|p| !p.trim().is_empty());
    if parts.is_empty() {
        parts.push("…".to_owned());
    }
    parts
}

/// A plain text followed by each person as an inline mention (a
/// `tg://user?id=` link entity, which notifies them), with entity offsets in
/// UTF-16 units. A person whose id is not a Telegram user id is named only.
pub fn mention(text: &str, people: &[crate::reply::Mention]) -> (String, Vec<teloxide::types::MessageEntity>) {
    let mut out: String = text.chars().take(3500).collect();
    let mut entities = Vec::new();
    for person in people {
        out.push(' ');
        let offset = out.encode_utf16().count();
        let shown = format!("@{}", person.name);
        let length = shown.encode_utf16().count();
        out.push_str(&shown);
        if let Ok(id) = person.user.parse::<u64>() {
            entities.push(teloxide::types::MessageEntity::text_mention_id(teloxide::types::UserId(id), offset, length));
        }
    }
    (out, entities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ActionToken;
    use crate::card::{Button, Field};

    fn card(body: &str) -> Card {
        Card {
            title: "<Disk> & \"full\"".into(),
            color: Color::Red,
            fields: vec![Field { label: "host".into(), value: "db-1 <prod>".into(), short: true }],
            body: body.into(),
            buttons: vec![
                Button {
                    label: "Ack".into(),
                    style: ButtonStyle::Primary,
                    confirm: None,
                    target: ActionToken::generate(),
                },
                Button {
                    label: "Roll back".into(),
                    style: ButtonStyle::Danger,
                    confirm: Some("sure?".into()),
                    target: ActionToken::generate(),
                },
                Button {
                    label: "Logs".into(),
                    style: ButtonStyle::Default,
                    confirm: None,
                    target: ActionToken::generate(),
                },
            ],
            footer: Some("opsclaw".into()),
        }
    }

    #[test]
    fn cards_escape_everything_dynamic() {
        let html =
            card_html(&card("**bold** <script>alert(1)</script> `a<b` [docs](https://x.test/?a=1&b=\"2\")"), "cut");
        assert!(html.starts_with("🔴 <b>&lt;Disk&gt; &amp; &quot;full&quot;</b>"), "{html}");
        assert!(html.contains("<b>host:</b> db-1 &lt;prod&gt;"), "{html}");
        assert!(html.contains("<b>bold</b> &lt;script&gt;alert(1)&lt;/script&gt; <code>a&lt;b</code>"), "{html}");
        assert!(html.contains("<a href=\"https://x.test/?a=1&amp;b=&quot;2&quot;\">docs</a>"), "{html}");
        assert!(!html.contains("cut"));
    }

    #[test]
    fn markdown_subset() {
        assert_eq!(
            markdown("# Title\n- one\n- *two*\n```\nx < y\n```"),
            "<b>Title</b>\n• one\n• <i>two</i>\n<pre>x &lt; y\n</pre>"
        );
        assert_eq!(inline("snake_case_name and 2 * 3 * 4"), "snake_case_name and 2 * 3 * 4");
        assert_eq!(inline("[x](javascript:alert(1))"), "[x](javascript:alert(1))");
        assert_eq!(inline("unclosed **bold and `code"), "unclosed **bold and `code");
    }

    #[test]
    fn keyboards_carry_tokens_two_per_row() {
        let c = card("");
        let kb = keyboard(&c).unwrap();
        assert_eq!(kb.inline_keyboard.len(), 2);
        assert_eq!(kb.inline_keyboard[0][1].text, "⚠️ Roll back");
        let json = serde_json::to_value(&kb).unwrap();
        assert_eq!(json["inline_keyboard"][0][0]["callback_data"], c.buttons[0].target.as_str());
        assert!(c.buttons[0].target.as_str().len() <= 64);
        assert!(keyboard(&Card { buttons: vec![], ..c }).is_none());
    }

    #[test]
    fn oversized_cards_are_cut_with_a_notice() {
        let html = card_html(&card(&"word <& ".repeat(2000)), "truncated");
        assert!(visible_len(&html) <= MAX_TEXT, "{}", visible_len(&html));
        assert!(html.contains("<i>truncated</i>"));
    }

    #[test]
    fn visible_length_ignores_tags_and_counts_entities_once() {
        assert_eq!(visible_len("<b>a&amp;b</b> 🔥"), 6);
    }

    #[test]
    fn text_splits_at_lines_in_order() {
        let text: String = (0..1000).map(|i| format!("line {i:04} of the long reply\n")).collect();
        let parts = split_text(&text, MAX_TEXT);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= MAX_TEXT));
        assert!(parts.iter().all(|p| p.ends_with('\n')), "cut at line ends");
        assert_eq!(parts.concat(), text);
        // One line longer than the limit is cut between characters, surrogate pairs intact.
        let long = "🔥".repeat(3000);
        let parts = split_text(&long, MAX_TEXT);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.concat(), long);
        assert_eq!(split_text("   ", MAX_TEXT), ["…"]);
    }

    #[test]
    fn mentions_are_link_entities_at_utf16_offsets() {
        let people = [
            crate::reply::Mention { name: "张三".into(), user: "4242".into() },
            crate::reply::Mention { name: "nobody".into(), user: String::new() },
        ];
        let (text, entities) = mention("🔔 #1 磁盘满 On call:", &people);
        assert_eq!(text, "🔔 #1 磁盘满 On call: @张三 @nobody");
        // 🔔 is two UTF-16 units: "🔔 #1 磁盘满 On call: " is 19 units.
        assert_eq!(entities.len(), 1, "someone without a Telegram id is only named");
        assert_eq!((entities[0].offset, entities[0].length), (19, 3));
        assert!(
            matches!(&entities[0].kind, teloxide::types::MessageEntityKind::TextLink { url } if url.as_str().ends_with("id=4242"))
        );
    }

    #[test]
    fn a_title_or_footer_too_long_for_a_message_is_clipped() {
        let mut card = card("body");
        card.title = "T".repeat(10_000);
        card.footer = Some("F".repeat(10_000));
        let html = card_html(&card, "(cut)");
        assert!(visible_len(&html) <= MAX_TEXT, "{}", visible_len(&html));
        assert!(html.contains(&format!("{}…", "T".repeat(MAX_LINE))));
    }
}
