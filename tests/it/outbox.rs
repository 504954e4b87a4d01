//! The outbox against a scripted remote platform: retries with backoff,
//! retry-after on one chat without holding up another, permanent rejections,
//! and order within a chat. The pipeline is the real one (`app::start`); only
//! the far side of `ChatPlatform` is scripted, as a remote API would behave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opsclaw::app;
use opsclaw::clock::Clock;
use opsclaw::config::Config;
use opsclaw::event::{ChatKind, ChatRef, Event, EventId, EventKind, PlatformKind, Sender, UserId};
use opsclaw::platform::{Channels, ChatPlatform, Content, Outbound, PlatformError, Rate, SendLimits, Sent};

use super::harness::wait_until;

/// What the remote side answers to each text, attempt by attempt.
#[derive(Default)]
struct Remote {
    /// Answers to give, by reply text, in order; after they run out, success.
    script: Mutex<HashMap<String, Vec<PlatformError>>>,
    /// Every attempt: (chat, text, succeeded).
    attempts: Mutex<Vec<(String, String, bool)>>,
}

#[async_trait]
impl ChatPlatform for Remote {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Console
    }

    fn limits(&self) -> SendLimits {
        SendLimits { per_chat: Rate { per_second: 1000.0, burst: 100 }, per_group: None, global: None }
    }

    async fn send(&self, msg: &Outbound<'_>) -> Result<Sent, PlatformError> {
        let Content::Text(text) = msg.content else { panic!("only texts in this test") };
        let answer = self
            .script
            .lock()
            .unwrap()
            .get_mut(text)
            .and_then(|answers| if answers.is_empty() { None } else { Some(answers.remove(0)) });
        self.attempts.lock().unwrap().push((msg.chat.id.to_string(), text.to_owned(), answer.is_none()));
        match answer {
            Some(error) => Err(error),
            None => Ok(Sent { message_id: None }),
        }
    }
}

impl Remote {
    fn delivered(&self) -> Vec<(String, String)> {
        let attempts = self.attempts.lock().unwrap();
        attempts.iter().filter(|(_, _, ok)| *ok).map(|(c, t, _)| (c.clone(), t.clone())).collect()
    }

    fn attempts_of(&self, text: &str) -> usize {
        self.attempts.lock().unwrap().iter().filter(|(_, t, _)| t == text).count()
    }
}

fn ping(n: u32, chat: &str, text: &str) -> Event {
    Event {
        id: EventId::new(PlatformKind::Console, &format!("outbox-test:{n}")),
        chat: ChatRef::new(PlatformKind::Console, chat),
        chat_kind: ChatKind::Direct,
        sender: Sender { id: UserId::new("you"), display_name: "you".into() },
        message_id: None,
        thread: None,
        received_at_ms: 0,
        kind: EventKind::Message { text: format!("/ping {text}"), mentions_bot: false, quoted: None },
    }
}

#[tokio::test]
async fn retries_rate_limits_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = \"{}\"\n[access]\nallowed_chats = [\"console:*\"]\n\
         [pipeline]\nmax_attempts = 3\nretry_base = \"10ms\"\nretry_max = \"40ms\"\n",
        dir.path().display()
    );
    let config = Config::parse(&config, "test", dir.path(), &|_| None).unwrap();
    let remote = Arc::new(Remote::default());
    {
        let mut script = remote.script.lock().unwrap();
        let flaky = PlatformError::Retryable("503".into());
        script.insert("pong: flaky".into(), vec![flaky.clone(), flaky.clone()]);
        script.insert("pong: doomed".into(), vec![flaky.clone(), flaky.clone(), flaky]);
        script.insert("pong: refused".into(), vec![PlatformError::Rejected("card too large".into())]);
        script
            .insert("pong: slow down".into(), vec![PlatformError::RateLimited { retry_after: Duration::from_secs(3) }]);
    }
    let running = app::start(&config, vec![remote.clone()], Channels::default(), Clock::new()).await.unwrap();

    // Chat a: two failures then success, then the next reply in order.
    // Chat b: three failures (gives up), a rejection, then a reply that goes through.
    // Chat c: told to wait 3 s; chat a and b must not wait for it.
    for (n, chat, text) in [
        (1, "c", "slow down"),
        (2, "a", "flaky"),
        (3, "a", "after flaky"),
        (4, "b", "doomed"),
        (5, "b", "refused"),
        (6, "b", "after refused"),
        (7, "c", "after slow"),
    ] {
        running.inbox.submit(ping(n, chat, text)).await.unwrap();
    }

    wait_until("chats a and b are done", || async {
        let delivered = remote.delivered();
        delivered.contains(&("a".into(), "pong: after flaky".into()))
            && delivered.contains(&("b".into(), "pong: after refused".into()))
    })
    .await;
    assert!(
        !remote.delivered().iter().any(|(chat, _)| chat == "c"),
        "chat c is still waiting out its retry-after while a and b finished"
    );
    wait_until("chat c is delivered after its retry-after", || async {
        remote.delivered().contains(&("c".into(), "pong: after slow".into()))
    })
    .await;

    let delivered = remote.delivered();
    let of = |chat: &str| delivered.iter().filter(|(c, _)| c == chat).map(|(_, t)| t.as_str()).collect::<Vec<_>>();
    assert_eq!(of("a"), ["pong: flaky", "pong: after flaky"], "retried in place, order kept");
    assert_eq!(of("b"), ["pong: after refused"], "the doomed and refused replies are given up");
    assert_eq!(of("c"), ["pong: slow down", "pong: after slow"]);
    assert_eq!(remote.attempts_of("pong: flaky"), 3);
    assert_eq!(remote.attempts_of("pong: doomed"), 3, "max_attempts = 3");
    assert_eq!(remote.attempts_of("pong: refused"), 1, "a rejection is not retried");
    // The platform sees a reply before the lane records it as sent.
    wait_until("every row is recorded as finished", || async {
        running.store.outbox_pending_count().await.unwrap() == 0
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Rows held in a lane longer than the sweep's age (10 s) are seen by the
/// sweep while a lane still holds them; each must still be delivered once.
#[tokio::test]
async fn the_sweep_never_delivers_a_row_a_lane_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("data_dir = \"{}\"\n[access]\nallowed_chats = [\"console:*\"]\n", dir.path().display());
    let config = Config::parse(&config, "test", dir.path(), &|_| None).unwrap();
    let remote = Arc::new(Remote::default());
    remote
        .script
        .lock()
        .unwrap()
        .insert("pong: held".into(), vec![PlatformError::RateLimited { retry_after: Duration::from_secs(11) }]);
    let running = app::start(&config, vec![remote.clone()], Channels::default(), Clock::new()).await.unwrap();
    running.inbox.submit(ping(1, "s", "held")).await.unwrap();
    running.inbox.submit(ping(2, "s", "behind")).await.unwrap();
    wait_until("both replies are delivered", || async {
        let delivered = remote.delivered();
        delivered.contains(&("s".into(), "pong: held".into()))
            && delivered.contains(&("s".into(), "pong: behind".into()))
    })
    .await;
    // Give the next sweeps (every second) a chance to misbehave before counting.
    let settle = tokio::time::Instant::now() + Duration::from_millis(2500);
    wait_until("two more sweeps have run", || async { tokio::time::Instant::now() >= settle }).await;
    assert_eq!(remote.delivered(), [("s".into(), "pong: held".into()), ("s".into(), "pong: behind".into())]);
    wait_until("both rows are recorded as sent", || async { running.store.outbox_pending_count().await.unwrap() == 0 })
        .await;
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}
