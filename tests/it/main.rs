//! The integration test binary: the real `opsclaw` binary and library
//! against temp SQLite databases, PostgreSQL when `OPSCLAW_TEST_PG_URL` is
//! set, and a real Prometheus Alertmanager when `OPSCLAW_TEST_ALERTMANAGER`
//! names its binary; ops commands run the real scripts in `tests/ops/`.
//! Everything runs on 127.0.0.1; nothing sleeps to wait,
//! every wait is on a condition with a deadline.

mod alert_store;
mod alertmanager;
mod alerts;
mod answers;
mod chat;
mod cli;
mod crash;
mod fake_elastic;
mod fake_feishu;
mod fake_feishu_ws;
mod fake_llm;
mod fake_loki;
mod fake_telegram;
mod feishu;
mod feishu_ws;
mod harness;
mod http;
mod kb;
mod logs;
mod logs_elastic;
mod logs_files;
mod logs_loki;
mod ops;
mod outbox;
mod replicas;
mod run_store;
mod served;
mod store;
mod telegram;
