//! The knowledge base in chat: `/kb QUERY` (search), `/kb add TITLE` (save a
//! note, written below the title or replied to; role-protected and audited),
//! `/ask QUESTION` and free text addressed to the bot (answered from relevant
//! passages only, never a guess).

use minijinja::{Value, context};

use super::ops::text;
use super::{Ctx, HandlerError};
use crate::card::CardId;
use crate::clock::format_ms;
use crate::event::EventKind;
use crate::i18n::Msg;
use crate::kb::service::{AnswerState, MAX_TITLE_CHARS, NoteError, Sources};
use crate::kb::{KbError, MAX_QUERY_CHARS};
use crate::reply::{CardKey, CardMode, Reply};
use crate::store::{AuditEntry, PendingAnswer, RunOp};

/// Hits on a `/kb` card.
const KB_HITS: usize = 5;

fn too_long(ctx: &Ctx<'_>) -> Vec<Reply> {
    text(ctx, Msg::KbQueryTooLong, &[("max", &MAX_QUERY_CHARS.to_string())])
}

/// `/kb QUERY` or `/kb add TITLE…`.
pub async fn kb(ctx: &Ctx<'_>, input: &str) -> Result<Vec<Reply>, HandlerError> {
    let input = input.trim();
    let (word, rest) = input.split_once(char::is_whitespace).unwrap_or((input, ""));
    if word.eq_ignore_ascii_case("add") {
        return add(ctx, rest).await;
    }
    let knowledge = &ctx.bot.kb;
    let hits = match knowledge.search(input, KB_HITS).await {
        Ok(hits) => hits,
        Err(KbError::QueryTooLong) => return Ok(too_long(ctx)),
        Err(e) => return Err(e.into()),
    };
    let hits: Vec<Value> = hits
        .iter()
        .map(|h| {
            context! { title => h.title, heading => h.heading, snippet => h.snippet, root => h.root, path => h.path, url => h.url }
        })
        .collect();
    let values = context! { query => crate::kb::answer::excerpt(input, 100), hits => hits, documents => knowledge.kb.documents() };
    let card = ctx.bot.cards.render(CardId::KB, ctx.locale, &values, Vec::new())?;
    Ok(vec![Reply::card(ctx.event, CardKey::new(format!("kb:{}", ctx.event.id)), card, CardMode::New)])
}

/// `/ask QUESTION`, or a question sent to the bot as plain text.
pub async fn ask(ctx: &Ctx<'_>, question: &str) -> Result<Vec<Reply>, HandlerError> {
    let knowledge = &ctx.bot.kb;
    let sources = match knowledge.sources(question).await {
        Ok(Sources::Relevant(sources)) => sources,
        Ok(Sources::Nothing { closest }) => {
            let q = crate::kb::answer::excerpt(question, 100);
            if closest.is_empty() {
                return Ok(text(ctx, Msg::AnswerNothing, &[("question", &q)]));
            }
            let docs = closest.iter().map(|h| format!("{} ({}/{})", h.title, h.root, h.path)).collect::<Vec<_>>();
            return Ok(text(ctx, Msg::AnswerNothingClosest, &[("question", &q), ("docs", &docs.join("; "))]));
        }
        Err(KbError::QueryTooLong) => return Ok(too_long(ctx)),
        Err(e) => return Err(e.into()),
    };
    let key = CardKey::new(format!("ask:{}", ctx.event.id));
    if knowledge.llm.is_none() {
        let card = knowledge.answer_card(ctx.locale, question, &sources, AnswerState::Extractive)?;
        return Ok(vec![Reply::card(ctx.event, key, card, CardMode::New)]);
    }
    let card = knowledge.answer_card(ctx.locale, question, &sources, AnswerState::Writing(""))?;
    let to = PendingAnswer {
        key,
        chat: ctx.event.chat.clone(),
        reply_to: ctx.event.message_id.clone(),
        thread: ctx.event.thread.clone(),
        locale: ctx.locale,
        question: question.to_owned(),
    };
    knowledge.start_answer(to, sources, card).await?;
    Ok(Vec::new())
}

/// `/kb add TITLE` with the content on the following lines or, when there are
/// none, the text of the message it replies to. Lines of its own win, and the
/// quote is not added to them: in a Feishu thread every message counts as a
/// reply to the thread's first one, which the user did not mean to save.
async fn add(ctx: &Ctx<'_>, input: &str) -> Result<Vec<Reply>, HandlerError> {
    let knowledge = &ctx.bot.kb;
    let by = super::ops::who(ctx);
    if let Err(denial) = ctx.bot.policy.check_role(ctx.principal, Some(&knowledge.add_role)) {
        super::ops::audit_refusal(ctx, "kb add", None, "denied", format!("{denial:?}")).await?;
        return Err(HandlerError::CommandDenied { command: "kb add".into(), denial });
    }
    let (title, content) = input.split_once('\n').unwrap_or((input, ""));
    let (title, content) = (title.trim(), content.trim());
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Ok(text(ctx, Msg::KbAddUsage, &[]));
    }
    let quoted = match &ctx.event.kind {
        EventKind::Message { quoted, .. } => quoted.as_ref(),
        EventKind::Action { .. } => None,
    };
    let content = match quoted {
        _ if !content.is_empty() => content.to_owned(),
        None => return Ok(text(ctx, Msg::KbAddUsage, &[])),
        // Read only now, not by the adapter: the platform is acked before any handler runs.
        Some(quoted) => match ctx.bot.reader.quoted_text(&ctx.event.chat, quoted).await {
            Ok(Some(quoted_text)) => quoted_text,
            Ok(None) => return Ok(text(ctx, Msg::KbAddQuoteEmpty, &[])),
            Err(e) => return Err(HandlerError::Quoted(e)),
        },
    };
    let at = format_ms(ctx.bot.clock.now_ms());
    let (result, reply) = match knowledge.add_note(title, &content, ctx.principal.key(), &at).await {
        Ok(name) => {
            let shown = format!("{}/{name}", knowledge.notes_shown);
            ("saved", Ok((shown.clone(), text(ctx, Msg::KbAddDone, &[("title", title), ("path", &shown)]))))
        }
        Err(NoteError::Exists(name)) => ("exists", Ok((name.clone(), text(ctx, Msg::KbAddExists, &[("path", &name)])))),
        Err(e) => {
            tracing::error!(error = %e, "saving a knowledge base note failed");
            ("failed", Err(e.to_string()))
        }
    };
    let entry = AuditEntry {
        actor: by.key,
        actor_id: by.id,
        action: "add".into(),
        command: "kb".into(),
        target: reply.as_ref().ok().map(|(path, _)| path.clone()),
        result: result.into(),
        chat: by.chat,
        message_id: by.message,
        detail: Some(match &reply {
            Ok(_) => title.to_owned(),
            Err(e) => format!("{title}: {e}"),
        }),
        ..AuditEntry::default()
    };
    ctx.bot.runs.write(RunOp::Audit(Box::new(entry))).await?;
    match reply {
        Ok((_, reply)) => Ok(reply),
        Err(e) => Ok(text(ctx, Msg::KbAddFailed, &[("error", &e)])),
    }
}
