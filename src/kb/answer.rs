//! From retrieved passages to an answer: the extractive answer (the passages
//! themselves, cut to size), the prompt that asks a model to answer from
//! them only, and the clean-up of what the model wrote.

use super::Hit;
use super::llm::Message;

/// How many passages answer a question.
pub const SOURCES: usize = 3;
/// Longest excerpt of one passage in an extractive answer.
const EXCERPT_CHARS: usize = 700;
/// Longest answer shown from a model (cards have size limits on every platform).
pub const MAX_ANSWER_CHARS: usize = 3000;

/// Whether `text` is Chinese (any Han character): answers follow the question's language.
pub fn is_chinese(text: &str) -> bool {
    text.chars().any(super::tokenize::is_han)
}

/// Whether `question` asks what to do (fix, resolve, 怎么办, 处理 …), not what
/// something means: then the passage that says what to do answers first.
pub fn asks_what_to_do(question: &str) -> bool {
    const ENGLISH: &[&str] = &[
        " fix ",
        " fixing ",
        " resolve ",
        " mitigate ",
        " remediate ",
        " repair ",
        " recover ",
        " what do i do ",
        " what should i do ",
        " what to do ",
        " solve ",
    ];
    const CHINESE: &[&str] = &["怎么办", "处理", "解决", "修复", "恢复", "怎么弄", "咋办", "如何应对"];
    let lower = question.to_lowercase();
    let words = format!(
        " {} ",
        lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
    );
    ENGLISH.iter().any(|w| words.contains(w)) || CHINESE.iter().any(|w| lower.contains(w))
}

/// The start of `text`, at most `max` characters, cut at a line end when one is near.
pub fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    let at = cut.rfind('\n').filter(|&i| i > cut.len() / 2).unwrap_or(cut.len());
    format!("{}…", cut[..at].trim_end())
}

/// The extractive answer: each passage under its numbered source.
pub fn extractive(sources: &[Hit]) -> String {
    sources
        .iter()
        .enumerate()
        .map(|(i, h)| format!("**[{}] {}**\n{}", i + 1, h.heading, excerpt(&h.text, EXCERPT_CHARS)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The messages that ask a model to answer `question` from `sources` only.
pub fn prompt(question: &str, sources: &[Hit]) -> Vec<Message> {
    let language = if is_chinese(question) { "Chinese (简体中文)" } else { "English" };
    let system = format!(
        "You are opsclaw, an assistant for on-call engineers. Answer the question using ONLY the numbered \
         runbook passages the user gives. Cite the passages you use as [1], [2] right after the sentence they \
         support. Do not add commands, names, numbers or steps that are not in the passages. If the passages do \
         not answer the question, say so in one sentence and stop. Be brief: short steps, commands in backticks. \
         Answer in {language}."
    );
    let mut user = String::new();
    for (i, h) in sources.iter().enumerate() {
        user.push_str(&format!("[{}] {} ({})\n{}\n\n", i + 1, h.heading, h.path, excerpt(&h.text, 2 * EXCERPT_CHARS)));
    }
    user.push_str("Question: ");
    user.push_str(question);
    vec![Message { role: "system", content: system }, Message { role: "user", content: user }]
}

/// A model's answer made safe to show: citations of passages that were not
/// given (`[7]` of three) removed, and the length capped.
pub fn clean(answer: &str, sources: usize) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(']') {
            let n: usize = after[..digits].parse().unwrap_or(0);
            if (1..=sources).contains(&n) {
                out.push_str(&rest[open..open + digits + 2]);
            }
            rest = &after[digits + 1..];
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    excerpt(&out, MAX_ANSWER_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(heading: &str, text: &str) -> Hit {
        Hit {
            root: "kb".into(),
            path: "a.md".into(),
            title: "A".into(),
            heading: heading.into(),
            score: 1.0,
            snippet: String::new(),
            url: None,
            text: text.into(),
            aliases: String::new(),
        }
    }

    #[test]
    fn citations_outside_the_sources_are_dropped() {
        assert_eq!(clean("Run df [1][2]. Also [7] and [x] and [0].", 2), "Run df [1][2]. Also  and [x] and .");
        assert_eq!(clean("清理日志 [1]。", 1), "清理日志 [1]。");
    }

    #[test]
    fn prompt_numbers_sources_and_names_the_language() {
        let sources = [hit("Disk > Fix", "Delete old logs."), hit("Disk > Check", "Run df -h.")];
        let m = prompt("磁盘满了怎么办", &sources);
        assert!(m[0].content.contains("Chinese"));
        assert!(
            m[1].content.contains("[1] Disk > Fix (a.md)\nDelete old logs.")
                && m[1].content.contains("[2] Disk > Check")
        );
        assert!(prompt("disk full?", &sources)[0].content.contains("English"));
        let text = extractive(&sources);
        assert!(text.starts_with("**[1] Disk > Fix**\nDelete old logs.") && text.contains("**[2] Disk > Check**"));
    }

    #[test]
    fn excerpts_cut_at_a_line() {
        let text = format!("{}\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(excerpt(&text, 100), format!("{}…", "a".repeat(60)));
        assert_eq!(excerpt("short", 100), "short");
    }

    #[test]
    fn questions_that_ask_what_to_do() {
        for q in ["disk full, how do I fix it?", "what should I do about etcd", "磁盘满了怎么处理", "pod 挂了怎么办"]
        {
            assert!(asks_what_to_do(q), "{q}");
        }
        for q in
            ["what does NodeFilesystemAlmostOutOfSpace mean", "how do I see the lag", "fixture loading", "证书过期原因"]
        {
            assert!(!asks_what_to_do(q), "{q}");
        }
    }
}
