//! A Markdown runbook as the index sees it: front matter (title, tags,
//! aliases), then passages split at headings, each with its breadcrumb
//! (`title > h2 > h3`). HTML comments and Hugo shortcodes are dropped (the
//! Chinese Kubernetes pages keep their English originals in comments);
//! headings inside code fences are code, not headings.

/// Longest passage; a longer section is split (at line ends) into several.
const MAX_PASSAGE: usize = 3000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub title: String,
    /// Front-matter aliases (e.g. alert names) and tags, and the file name in words.
    pub aliases: Vec<String>,
    /// Names an alert may call this runbook by, lower-cased: the front-matter
    /// aliases and the file name without extension.
    pub names: Vec<String>,
    pub passages: Vec<Passage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// `title > h2 > h3`
    pub heading: String,
    pub text: String,
}

/// Front matter: `---` lines around `key: value`, `key: [a, b]` and `- item` lists.
/// Returns (fields, the rest); a block that never closes is treated as text.
fn front_matter(source: &str) -> (Vec<(String, Vec<String>)>, &str) {
    let Some(rest) = source.strip_prefix("---\n").or_else(|| source.strip_prefix("---\r\n")) else {
        return (Vec::new(), source);
    };
    let Some(end) = rest.find("\n---").filter(|&e| rest[e + 4..].starts_with(['\n', '\r']) || rest.len() == e + 4)
    else {
        return (Vec::new(), source);
    };
    let block = &rest[..end];
    let body = rest[end + 4..].trim_start_matches(['\r', '\n']);
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        let unquote = |s: &str| s.trim().trim_matches(['"', '\'']).trim().to_owned();
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            // A list item belongs to the last top-level key.
            if line.starts_with([' ', '-'])
                && let Some((_, values)) = fields.last_mut()
            {
                values.push(unquote(item));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        let values = match value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            Some(list) => list.split(',').map(unquote).filter(|v| !v.is_empty()).collect(),
            None if value.is_empty() => Vec::new(),
            None => vec![unquote(value)],
        };
        fields.push((key.trim().to_ascii_lowercase(), values));
    }
    (fields, body)
}

/// Drops `<!-- … -->` and `{{< … >}}` / `{{% … %}}` (shortcode markers; what is between paired ones stays).
fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = [rest.find("<!--"), rest.find("{{<"), rest.find("{{%")].into_iter().flatten().min();
        let Some(start) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..start]);
        let close = if rest[start..].starts_with("<!--") {
            "-->"
        } else if rest[start..].starts_with("{{<") {
            ">}}"
        } else {
            "%}}"
        };
        match rest[start..].find(close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => break,
        }
    }
    out
}

/// `[text](url)` → `text`, `![alt](src)` → `alt`.
fn plain_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else { break };
        let Some(end) = rest[close..].find(')').map(|e| close + e) else { break };
        let before = rest[..open].strip_suffix('!').unwrap_or(&rest[..open]);
        out.push_str(before);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A heading's words: closing `#`s, links and Hugo anchors (`{#id}`) removed.
fn heading_text(raw: &str) -> String {
    let mut text = raw.trim().trim_end_matches('#').trim();
    if let Some(open) = text.rfind("{#")
        && text.ends_with('}')
    {
        text = text[..open].trim_end();
    }
    plain_links(text)
}

/// `NodeRAIDDiskFailure` / `disk-full` → words, for the aliases field.
fn stem_words(stem: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = stem.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '-' || c == '_' || c == '.' {
            out.push(' ');
            continue;
        }
        if i > 0 {
            let prev = chars[i - 1];
            let next = chars.get(i + 1).copied();
            if (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_uppercase() && c.is_uppercase() && next.is_some_and(char::is_lowercase))
            {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out
}

pub fn parse(file_stem: &str, source: &str) -> Doc {
    let (fields, body) = front_matter(source);
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let body = strip_markup(body);
    let mut aliases = field("aliases");
    let mut names: Vec<String> = aliases.iter().map(|a| a.to_lowercase()).collect();
    names.push(file_stem.to_lowercase());
    aliases.extend(field("tags"));
    aliases.push(file_stem.to_owned());
    aliases.push(stem_words(file_stem));

    let mut title = field("title").into_iter().next().unwrap_or_default();
    let mut h: [String; 3] = Default::default();
    let mut passages: Vec<Passage> = Vec::new();
    let mut current = String::new();
    let mut fence: Option<&str> = None;
    let mut first_h1_seen = false;
    let breadcrumb = |title: &str, h: &[String; 3]| {
        std::iter::once(title)
            .chain(h.iter().map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" > ")
    };
    let flush = |current: &mut String, heading: String, passages: &mut Vec<Passage>| {
        let text = current.trim();
        if !text.is_empty() {
            for chunk in chunks(text) {
                passages.push(Passage { heading: heading.clone(), text: chunk });
            }
        }
        current.clear();
    };
    let mut heading_now = String::new();
    for line in body.lines() {
        let trimmed = line.trim_start();
        if let Some(f) = fence {
            if trimmed.starts_with(f) {
                fence = None;
            }
            current.push_str(line);
            current.push('\n');
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(if trimmed.starts_with("```") { "```" } else { "~~~" });
            current.push_str(line);
            current.push('\n');
            continue;
        }
        let level = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
            let text = heading_text(&trimmed[level..]);
            if level == 1 && !first_h1_seen {
                first_h1_seen = true;
                if title.is_empty() {
                    title = text.clone();
                }
                if text == title {
                    // The page's own title: its text so far (and after) belongs to the title.
                    continue;
                }
            }
            if level <= 4 {
                flush(&mut current, heading_now.clone(), &mut passages);
                let slot = level.saturating_sub(2).min(2);
                if level == 1 {
                    h = Default::default();
                    h[0] = text;
                } else {
                    h[slot] = text;
                    for deeper in h.iter_mut().skip(slot + 1) {
                        deeper.clear();
                    }
                }
                heading_now = breadcrumb(&title, &h);
                continue;
            }
        }
        current.push_str(&plain_links(line));
        current.push('\n');
    }
    if title.is_empty() {
        title = stem_words(file_stem);
    }
    if heading_now.is_empty() {
        heading_now = title.clone();
    }
    flush(&mut current, heading_now, &mut passages);
    for p in &mut passages {
        if p.heading.is_empty() {
            p.heading = title.clone();
        }
    }
    if passages.is_empty() {
        passages.push(Passage { heading: title.clone(), text: String::new() });
    }
    aliases.retain(|a| !a.trim().is_empty());
    Doc { title, aliases, names, passages }
}

fn chunks(text: &str) -> Vec<String> {
    if text.len() <= MAX_PASSAGE {
        return vec![text.to_owned()];
    }
    let mut out = Vec::new();
    let mut chunk = String::new();
    for line in text.lines() {
        if chunk.len() + line.len() > MAX_PASSAGE && !chunk.is_empty() {
            out.push(std::mem::take(&mut chunk));
        }
        let mut line = line;
        while line.len() > MAX_PASSAGE {
            let mut cut = MAX_PASSAGE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(line[..cut].to_owned());
            line = &line[cut..];
        }
        chunk.push_str(line);
        chunk.push('\n');
    }
    if !chunk.trim().is_empty() {
        out.push(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_headings_and_breadcrumbs() {
        let src = "---\ntitle: \"Disk full\"\ntags: [disk, storage]\naliases:\n  - NodeFilesystemAlmostOutOfSpace\nweight: 2\n---\n\
                   # Disk full\n\nIntro text.\n\n## Diagnosis\n\nRun `df -h`.\n\n```sh\n# not a heading\ndu -sh /var\n```\n\n\
                   ### Logs {#logs}\n\nCheck [journald](https://x/y).\n<!-- hidden English original -->\n## Mitigation\n\n{{< note >}}Free space.{{< /note >}}\n";
        let doc = parse("disk-full", src);
        assert_eq!(doc.title, "Disk full");
        assert!(doc.aliases.contains(&"NodeFilesystemAlmostOutOfSpace".to_owned()), "{:?}", doc.aliases);
        assert!(doc.aliases.contains(&"disk".to_owned()) && doc.aliases.contains(&"disk full".to_owned()));
        let headings: Vec<_> = doc.passages.iter().map(|p| p.heading.as_str()).collect();
        assert_eq!(
            headings,
            ["Disk full", "Disk full > Diagnosis", "Disk full > Diagnosis > Logs", "Disk full > Mitigation"]
        );
        assert!(doc.passages[1].text.contains("# not a heading"), "{:?}", doc.passages[1]);
        assert_eq!(doc.passages[2].text.trim(), "Check journald.");
        assert_eq!(doc.passages[3].text.trim(), "Free space.");
    }

    #[test]
    fn broken_front_matter_and_no_title() {
        let doc = parse("NodeRAIDDiskFailure", "---\ntitle: x\nno end\n\nSome text");
        assert_eq!(doc.title, "Node RAID Disk Failure");
        assert!(doc.passages[0].text.contains("Some text"));
        let long = "word ".repeat(2000);
        let doc = parse("long", &long);
        assert!(doc.passages.len() >= 3 && doc.passages.iter().all(|p| p.text.len() <= MAX_PASSAGE + 1));
    }
}
