//! The event pipeline between adapters and platform senders:
//! [`inbox`] persists and deduplicates, [`dispatch`] runs handlers in
//! per-chat order, [`outbox`] delivers replies durably. [`journal`]
//! group-commits their writes; [`lanes`] gives each key its own ordered queue.

pub mod dispatch;
pub mod inbox;
pub mod journal;
pub mod lanes;
pub mod outbox;
pub mod rate;
