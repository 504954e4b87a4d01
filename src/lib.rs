//! opsclaw: a ChatOps bot for on-call and platform teams.
//!
//! One chat message travels one way: a platform adapter turns it into an
//! [`event::Event`], the [`pipeline::inbox`] persists and deduplicates it, the
//! pure [`router`] turns it into a [`router::Route`], [`policy`] decides who may
//! do it, a [`handler`] returns [`reply::Reply`] values, and the durable
//! [`pipeline::outbox`] hands them to the platform sender. `ARCHITECTURE.md`
//! has the module map and the invariants.

pub mod action;
pub mod alert;
pub mod app;
pub mod card;
pub mod clock;
pub mod command;
pub mod config;
pub mod event;
pub mod handler;
pub mod http;
pub mod i18n;
pub mod kb;
pub mod logs;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod platform;
pub mod policy;
pub mod replica;
pub mod reply;
pub mod router;
pub mod status;
pub mod store;
