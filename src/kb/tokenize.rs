//! One analyzer for Chinese and English text: runs of Han characters are cut
//! into words by jieba (search mode, so long words also yield their parts);
//! everything else is split into letters-and-digits words, with CamelCase and
//! dotted or dashed names also split into their parts (`NodeRAIDDiskFailure`
//! also gives `node`, `raid`, `disk`, `failure`), and so are a few words ops
//! write run together (`crashlooping` also gives `crash`, `looping`). Words
//! are then lower-cased and stemmed (English), so "restarting" finds "restarts".

use std::sync::LazyLock;

use jieba_rs::Jieba;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// The analyzer's name in the index's tokenizer manager.
pub const NAME: &str = "opsclaw";

/// jieba's dictionary without its rare words (frequency under 200) and
/// part-of-speech tags (`jieba-dict.NOTICE` says how it was made): about
/// 2 MiB resident instead of the whole one's 33 MB, so a Chinese question
/// keeps the process near DESIGN's 30 MB. The index and the query are cut
/// with the same words, and the words it leaves out are cut by jieba's HMM:
/// Chinese retrieval stays above its targets (`cargo bench --bench kb`,
/// BENCHMARKS.md). Changing it changes how text is cut, so `INDEX_FORMAT`
/// goes up with it.
const DICTIONARY: &str = include_str!("jieba-dict.txt");

/// Loaded on the first Han text the analyzer sees, which a knowledge base of
/// English runbooks never pays for.
static JIEBA: LazyLock<Jieba> =
    LazyLock::new(|| Jieba::with_dict(&mut DICTIONARY.as_bytes()).expect("the bundled dictionary parses"));

pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(Mixed)
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

#[derive(Clone)]
pub struct Mixed;

pub struct MixedStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for Mixed {
    type TokenStream<'a> = MixedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MixedStream {
        MixedStream { tokens: split(text), next: 0 }
    }
}

impl TokenStream for MixedStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

pub fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{2A6DF}')
}

#[derive(PartialEq)]
enum Class {
    Han,
    Word,
    Other,
}

fn class(c: char) -> Class {
    if is_han(c) {
        Class::Han
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Other
    }
}

fn push(tokens: &mut Vec<Token>, text: &str, from: usize, to: usize, position: usize) {
    tokens.push(Token {
        offset_from: from,
        offset_to: to,
        position,
        text: text[from..to].to_owned(),
        position_length: 1,
    });
}

fn split(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut position = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let kind = class(c);
        if kind == Class::Other {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, next)) = chars.peek() {
            if class(next) != kind {
                break;
            }
            end = i + next.len_utf8();
            chars.next();
        }
        match kind {
            Class::Han => {
                for word in JIEBA.cut_for_search(&text[start..end], true) {
                    push(&mut tokens, text, start + word.byte_start, start + word.byte_end, position);
                    position += 1;
                }
            }
            Class::Word => {
                push(&mut tokens, text, start, end, position);
                let word = &text[start..end];
                let mut parts = Vec::new();
                for (from, to) in camel_parts(word) {
                    match run_together(&word[from..to]) {
                        Some(pieces) => {
                            let mut at = from;
                            for piece in pieces {
                                parts.push((at, at + piece.len()));
                                at += piece.len();
                            }
                        }
                        None => parts.push((from, to)),
                    }
                }
                if parts.len() > 1 {
                    for (from, to) in parts {
                        push(&mut tokens, text, start + from, start + to, position);
                    }
                }
                position += 1;
            }
            Class::Other => unreachable!("skipped above"),
        }
    }
    tokens
}

/// Words ops write both run together and apart, at their joints:
/// "crashlooping" (Alertmanager Cluster Crashlooping) is "crash looping" (Kube
/// Pod Crash Looping), and "crashloopbackoff" typed in lower case is
/// Kubernetes' CrashLoopBackOff.
const RUN_TOGETHER: &[&[&str]] = &[&["crash", "looping"], &["crash", "loop"], &["crash", "loop", "back", "off"]];

/// The pieces of `word` when it is one of [`RUN_TOGETHER`], in any case.
/// The length is compared first: most words are not, and cost no allocation.
fn run_together(word: &str) -> Option<&'static [&'static str]> {
    RUN_TOGETHER.iter().copied().find(|pieces| {
        pieces.iter().map(|p| p.len()).sum::<usize>() == word.len() && word.eq_ignore_ascii_case(&pieces.concat())
    })
}

/// `NodeRAIDDiskFailure` → Node, RAID, Disk, Failure; `k8s` stays whole.
fn camel_parts(word: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let mut parts = Vec::new();
    let mut from = 0;
    for i in 1..chars.len() {
        let (prev, cur) = (chars[i - 1].1, chars[i].1);
        let next = chars.get(i + 1).map(|(_, c)| *c);
        let boundary = (prev.is_lowercase() && cur.is_uppercase())
            || (prev.is_uppercase() && cur.is_uppercase() && next.is_some_and(char::is_lowercase));
        if boundary {
            parts.push((from, chars[i].0));
            from = chars[i].0;
        }
    }
    parts.push((from, word.len()));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            out.push(t.text.clone());
        }
        out
    }

    #[test]
    fn english_is_lower_cased_stemmed_and_camel_case_is_split() {
        assert_eq!(terms("Restarting pods"), ["restart", "pod"]);
        let t = terms("NodeRAIDDiskFailure fired");
        for part in ["noderaiddiskfailur", "node", "raid", "disk", "failur", "fire"] {
            assert!(t.contains(&part.to_owned()), "{part} not in {t:?}");
        }
        assert_eq!(terms("k8s: (\"*-\")"), ["k8s"]);
    }

    #[test]
    fn a_run_together_word_also_gives_its_parts() {
        for (text, part) in [("AlertmanagerClusterCrashlooping", "loop"), ("crashloopbackoff", "back")] {
            let t = terms(text);
            assert!(t.contains(&"crash".to_owned()) && t.contains(&part.to_owned()), "{t:?}");
        }
        assert_eq!(terms("crashed"), ["crash"]);
    }

    #[test]
    fn chinese_is_cut_into_words_next_to_english() {
        let t = terms("磁盘满了怎么处理 kubectl");
        assert!(t.contains(&"磁盘".to_owned()), "{t:?}");
        assert!(t.contains(&"处理".to_owned()), "{t:?}");
        assert!(t.contains(&"kubectl".to_owned()), "{t:?}");
    }
}
