//! The knowledge base as the bot uses it: searches off the async runtime,
//! questions answered from relevant passages only, answers written by the
//! model streamed into their card (and written again after a crash cut them
//! off), and notes saved from chat.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use minijinja::{Value, context};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::answer;
use super::llm::{Llm, LlmError};
use super::{Hit, Kb, KbError};
use crate::card::{CardDraft, CardId, CardSet, CardTemplateError};
use crate::clock::Clock;
use crate::i18n::{Catalog, Locale, Msg};
use crate::pipeline::dispatch::prepare;
use crate::pipeline::journal::JournalError;
use crate::pipeline::outbox::Outbox;
use crate::policy::Role;
use crate::reply::{CardMode, Reply, ReplyBody};
use crate::store::{AnswerOp, PendingAnswer, Write};

/// How often a streamed answer's card is updated: about once a second is
/// within every platform's edit limits (Feishu 5/s per message, Telegram ~1/s per chat).
const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// A second or third source must score at least this share of the best one's.
const FURTHER_SOURCE: f32 = 0.6;
/// The notes root's name in hits, when it is not inside a configured root.
pub const NOTES: &str = "notes";
/// Longest note title; the file name is made from it.
pub const MAX_TITLE_CHARS: usize = 120;

pub struct Knowledge {
    pub kb: Arc<Kb>,
    pub llm: Option<Llm>,
    /// Below this [`Kb::relevance`] a passage does not answer a question.
    pub relevance: f32,
    /// Where `/kb add` writes (a directory that is also a root) and who may.
    pub notes: PathBuf,
    /// The notes directory as hits name it (`notes`, or `<root>/<dir>` inside a root).
    pub notes_shown: String,
    pub add_role: Role,
    outbox: Arc<Outbox>,
    cards: Arc<CardSet>,
    catalog: Arc<Catalog>,
    clock: Clock,
    updates: AtomicU64,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// What retrieval found for a question.
pub enum Sources {
    /// Passages that answer it, best first.
    Relevant(Vec<Hit>),
    /// Nothing relevant enough; these documents came closest.
    Nothing { closest: Vec<Hit> },
}

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("a note {0} already exists")]
    Exists(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Kb(#[from] KbError),
}

/// Everything [`Knowledge::new`] needs besides the index.
pub struct KnowledgeParts {
    pub llm: Option<Llm>,
    pub relevance: f32,
    pub notes: PathBuf,
    pub notes_shown: String,
    pub add_role: Role,
    pub outbox: Arc<Outbox>,
    pub cards: Arc<CardSet>,
    pub catalog: Arc<Catalog>,
    pub clock: Clock,
}

impl Knowledge {
    pub fn new(kb: Arc<Kb>, p: KnowledgeParts) -> Self {
        Self {
            kb,
            llm: p.llm,
            relevance: p.relevance,
            notes: p.notes,
            notes_shown: p.notes_shown,
            add_role: p.add_role,
            outbox: p.outbox,
            cards: p.cards,
            catalog: p.catalog,
            clock: p.clock,
            updates: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// [`Kb::search`], off the async runtime.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, KbError> {
        let (kb, query) = (self.kb.clone(), query.to_owned());
        tokio::task::spawn_blocking(move || kb.search(&query, limit)).await.expect("knowledge search panicked")
    }

    /// The passages that answer `question`: the best documents whose best
    /// passage is relevant enough, at most [`answer::SOURCES`].
    pub async fn sources(&self, question: &str) -> Result<Sources, KbError> {
        let (kb, q, bar) = (self.kb.clone(), question.to_owned(), self.relevance);
        tokio::task::spawn_blocking(move || {
            let hits = kb.search(&q, answer::SOURCES)?;
            let scored: Vec<(f32, Hit)> = hits.into_iter().map(|h| (kb.relevance(&q, &h), h)).collect();
            if let Some(best) = scored.iter().find(|(r, _)| *r >= bar).map(|(_, h)| h.score) {
                // A further source must be relevant too, and not far behind the best.
                let keep = |(r, h): &(f32, Hit)| *r >= bar && h.score >= FURTHER_SOURCE * best;
                let mut sources: Vec<Hit> = scored.into_iter().filter(keep).map(|(_, h)| h).collect();
                // Whoever asks at 3 a.m. needs what to do: the best document's
                // passage that says so goes along (first, when that is the question).
                if let Some(action) = kb.action_passage(&sources[0], &q)? {
                    let at = if answer::asks_what_to_do(&q) { 0 } else { 1 };
                    sources.insert(at, action);
                    sources.truncate(answer::SOURCES);
                }
                return Ok(Sources::Relevant(sources));
            }
            // Documents sharing none of the question's topic words are not even close.
            Ok(Sources::Nothing { closest: scored.into_iter().filter(|(r, _)| *r > 0.0).map(|(_, h)| h).collect() })
        })
        .await
        .expect("knowledge search panicked")
    }

    /// The runbook for an alert ([`Kb::runbook`]), off the async runtime.
    pub async fn runbook(&self, url: Option<String>, names: Vec<String>, text: String) -> Option<Hit> {
        let (kb, bar) = (self.kb.clone(), self.relevance);
        let found = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            kb.runbook(url.as_deref(), &names, &text, bar)
        })
        .await
        .expect("runbook lookup panicked");
        found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "runbook lookup failed");
            None
        })
    }

    /// The answer card for `sources` in one of its states.
    pub fn answer_card(
        &self,
        locale: Locale,
        question: &str,
        sources: &[Hit],
        state: AnswerState<'_>,
    ) -> Result<CardDraft, CardTemplateError> {
        let (state, text, reason) = match state {
            AnswerState::Extractive => ("extractive", answer::extractive(sources), None),
            AnswerState::Writing(text) => ("writing", answer::clean(text, sources.len()), None),
            AnswerState::Model(text) => ("model", answer::clean(text, sources.len()), None),
            AnswerState::Fallback(error) => ("fallback", answer::extractive(sources), Some(self.why(locale, error))),
        };
        let sources: Vec<Value> = sources
            .iter()
            .map(|h| context! { title => h.title, heading => h.heading, root => h.root, path => h.path, url => h.url })
            .collect();
        let values = context! {
            question => answer::excerpt(question, 200),
            state => state,
            answer => text,
            reason => reason,
            model => self.llm.as_ref().map(|l| l.model().to_owned()),
            sources => sources,
        };
        self.cards.render(CardId::ANSWER, locale, &values, Vec::new())
    }

    fn why(&self, locale: Locale, error: &LlmError) -> String {
        let msg = match error {
            LlmError::Timeout(_) => Msg::AnswerWhyTimeout,
            LlmError::RateLimited { .. } => Msg::AnswerWhyRateLimited,
            LlmError::Empty => Msg::AnswerWhyEmpty,
            LlmError::Stopped => Msg::AnswerWhyStopped,
            LlmError::Status { .. } | LlmError::Transport(_) | LlmError::Garbage(_) => Msg::AnswerWhyError,
        };
        self.catalog.text(locale, msg, &[])
    }

    /// Posts the answer card as "writing" and has the model write the answer
    /// into it in the background: updated about once a second while the text
    /// grows, then the final answer, or the passages with a note when the
    /// model fails, is slow or is rate limited. The first card is durable
    /// before this returns, so no update can overtake it, and so is the
    /// answer's pending row: a crash before the final card leaves it for
    /// [`Knowledge::resume`].
    pub async fn start_answer(
        self: &Arc<Self>,
        to: PendingAnswer,
        sources: Vec<Hit>,
        writing: CardDraft,
    ) -> Result<(), JournalError> {
        self.post(&to, writing, CardMode::New, Some(AnswerOp::Start(to.clone()))).await?;
        self.spawn_answer(to, sources);
        Ok(())
    }

    /// Writes again the answers a crash cut off (their "writing" card was
    /// posted, their final one never queued): retrieval again, then the model
    /// into the same card; an answer that no longer finds its passages ends
    /// with the closest ones and the note that it was interrupted.
    pub async fn resume(self: &Arc<Self>, pending: Vec<PendingAnswer>) {
        for to in pending {
            tracing::info!(key = %to.key, "writing an answer a restart cut off");
            let sources = match self.sources(&to.question).await {
                Ok(Sources::Relevant(sources)) if self.llm.is_some() => sources,
                Ok(Sources::Relevant(sources)) | Ok(Sources::Nothing { closest: sources }) => {
                    self.finish(&to, &sources, Err(LlmError::Stopped)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, key = %to.key, "retrieval for a pending answer failed");
                    self.finish(&to, &[], Err(LlmError::Stopped)).await;
                    continue;
                }
            };
            self.spawn_answer(to, sources);
        }
    }

    /// The model writes the answer in a tracked task, which queues the final card.
    fn spawn_answer(self: &Arc<Self>, to: PendingAnswer, sources: Vec<Hit>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let written = me.write_answer(&to, &sources).await;
            me.finish(&to, &sources, written).await;
        });
    }

    /// Queues the final card: the model's answer, or the passages and why not.
    async fn finish(&self, to: &PendingAnswer, sources: &[Hit], written: Result<String, LlmError>) {
        let card = match &written {
            Ok(text) => self.answer_card(to.locale, &to.question, sources, AnswerState::Model(text)),
            Err(error) => {
                tracing::warn!(%error, "the model did not answer; showing the passages");
                self.answer_card(to.locale, &to.question, sources, AnswerState::Fallback(error))
            }
        };
        let done = Some(AnswerOp::Finish(to.key.clone()));
        let posted = match card {
            Ok(card) => self.post(to, card, CardMode::Update, done).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = posted {
            tracing::error!(error = %e, key = %to.key, "queueing the final answer failed");
        }
    }

    async fn write_answer(&self, to: &PendingAnswer, sources: &[Hit]) -> Result<String, LlmError> {
        let llm = self.llm.as_ref().expect("start_answer is only called with a model");
        let (tx, mut rx) = watch::channel(String::new());
        let messages = answer::prompt(&to.question, sources);
        let completion = llm.complete(&messages, move |text| {
            let _ = tx.send(text.to_owned());
        });
        tokio::pin!(completion);
        let mut tick = tokio::time::interval(UPDATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = &mut completion => return result,
                _ = tick.tick() => {
                    if rx.has_changed().unwrap_or(false) {
                        let text = rx.borrow_and_update().clone();
                        let card = self.answer_card(to.locale, &to.question, sources, AnswerState::Writing(&text));
                        match card {
                            Ok(card) => if let Err(e) = self.post(to, card, CardMode::Update, None).await {
                                tracing::warn!(error = %e, "queueing an answer update failed; the next one replaces it");
                            },
                            Err(e) => tracing::error!(error = %e, "rendering an answer update failed"),
                        }
                    }
                }
                () = self.stop.cancelled() => return Err(LlmError::Stopped),
            }
        }
    }

    /// Queues `card` for the answer, with `op` in the same write when the
    /// answer starts or ends.
    async fn post(
        &self,
        to: &PendingAnswer,
        card: CardDraft,
        mode: CardMode,
        op: Option<AnswerOp>,
    ) -> Result<(), JournalError> {
        let reply = Reply {
            chat: to.chat.clone(),
            reply_to: to.reply_to.clone(),
            thread: to.thread.clone(),
            body: ReplyBody::Card { key: to.key.clone(), card, mode },
        };
        // New: once per answer (a replayed event does not post it twice); updates: each its own.
        let prefix = match mode {
            CardMode::New => format!("{}:0", to.key),
            CardMode::Update => {
                format!("{}:{}:{}", to.key, self.clock.now_ms(), self.updates.fetch_add(1, Ordering::Relaxed))
            }
        };
        let (deliveries, tokens) = prepare(&prefix, vec![reply], self.clock.now_ms(), Duration::from_secs(86_400));
        let write = match op {
            Some(op) => Write::Answer { op, deliveries: deliveries.clone(), tokens },
            None => Write::Enqueue { deliveries: deliveries.clone(), tokens },
        };
        self.outbox.commit(write, deliveries).await
    }

    /// Saves a note under the notes root as `<slug>.md` with front matter and
    /// indexes it at once. An existing file is never overwritten.
    pub async fn add_note(&self, title: &str, content: &str, author: &str, at: &str) -> Result<String, NoteError> {
        let name = format!("{}.md", slug(title));
        let path = self.notes.join(&name);
        let text = format!(
            "---\ntitle: {}\nauthor: {}\ncreated: {at}\n---\n\n# {}\n\n{}\n",
            title.replace('\n', " "),
            author.replace('\n', " "),
            title.replace('\n', " "),
            content.trim()
        );
        let kb = self.kb.clone();
        let notes = self.notes.clone();
        tokio::task::spawn_blocking(move || -> Result<String, NoteError> {
            std::fs::create_dir_all(&notes)?;
            let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(NoteError::Exists(name)),
                Err(e) => return Err(e.into()),
            };
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()?;
            kb.sync()?;
            Ok(name)
        })
        .await
        .expect("saving a note panicked")
    }

    /// Stops streaming answers: each gets its final card (the passages, with
    /// a note) queued before this returns, so the outbox can still send them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What the answer card shows.
pub enum AnswerState<'a> {
    /// The passages themselves (no model configured).
    Extractive,
    /// The model's text so far.
    Writing(&'a str),
    Model(&'a str),
    /// The model failed: the passages, and why.
    Fallback(&'a LlmError),
}

/// A file name from a title: letters and digits (any script) kept, the rest
/// turned into single dashes, at most 80 characters.
fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.chars().count() >= 80 {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() { "note".to_owned() } else { out.to_owned() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slug("Redis: failover (manual)!"), "redis-failover-manual");
        assert_eq!(super::slug("磁盘 满了"), "磁盘-满了");
        assert_eq!(super::slug("../../etc/passwd"), "etc-passwd");
        assert_eq!(super::slug("!!!"), "note");
    }
}
