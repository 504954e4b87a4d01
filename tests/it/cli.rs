//! `opsclaw check-config` and `opsclaw migrate`: the example passes; mistakes are all listed.

use std::process::Command;

use super::harness::BIN;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN).arg("check-config").arg(path).output().expect("run opsclaw");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_example_config_is_accepted() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    let (ok, out) = check(&example);
    assert!(ok, "{out}");
    assert!(out.ends_with(": ok\n"), "{out}");
}

#[test]
fn the_compose_config_is_accepted_with_its_environment() {
    let compose = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/config.toml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&compose)
        .env("OPSCLAW_DATABASE_URL", "postgres://opsclaw:pw@postgres:5432/opsclaw")
        .env("TELEGRAM_BOT_TOKEN", "123:abc")
        .env("OPSCLAW_ALERTMANAGER_HOOK_TOKEN", "hook-token")
        .output()
        .expect("run opsclaw");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_config_problem_is_listed_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[access]\nallowed_chats = [\"irc:#ops\"]\ndefault_roles = [\"Ops Team\"]\n[pipeline]\ninbox_retention = \"1h\"\n")
        .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    for key in ["access.allowed_chats[0]", "access.default_roles[0]", "pipeline.inbox_retention"] {
        assert!(out.contains(&format!("bad.toml: {key}: ")), "missing {key} in:\n{out}");
    }
}

#[test]
fn broken_command_files_and_cards_are_listed_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let commands = dir.path().join("commands");
    let cards = dir.path().join("cards");
    std::fs::create_dir_all(&commands).unwrap();
    std::fs::create_dir_all(&cards).unwrap();
    std::fs::write(
        commands.join("deploy.toml"),
        "name = \"Deploy\"\nsummary = { en = \"x\", zh-CN = \"x\" }\nhandler = \"shell\"\n",
    )
    .unwrap();
    std::fs::write(cards.join("status.toml"), "title = \"{{ t('missing.key') }}\"\ncolor = \"blue\"\n").unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "commands_dir = \"commands\"\ncards_dir = \"cards\"\n").unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    for needle in [
        "deploy.toml: name: ",
        "deploy.toml: handler: unknown handler `shell`",
        "status.toml: sample: ",
        "help.toml: -: this template is required",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "data_dir = \"state\"\n").unwrap();
    let out = Command::new(BIN).args(["migrate", "--config"]).arg(&path).output().expect("run opsclaw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("state/opsclaw.db").exists());
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_database_refuses_to_start() {
    use super::harness::{Proc, write_config};
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[kb]\nexample = false\n");
    let args = ["run", "--config", config.to_str().unwrap()];
    let mut first = Proc::spawn(&args, dir.path());
    first.expect_stderr("opsclaw ready").await;

    let second = Proc::spawn(&args, dir.path());
    let stderr = second.refused_stderr().await;
    assert!(stderr.contains("another opsclaw process is using"), "{stderr}");
    assert!(stderr.contains("use PostgreSQL"), "{stderr}");

    // The claim ends with its process, so the next start works.
    assert!(first.terminate().await.success());
    let mut again = Proc::spawn(&args, dir.path());
    again.expect_stderr("opsclaw ready").await;
    assert!(again.terminate().await.success());
}

#[tokio::test]
async fn backup_copies_the_sqlite_database_while_the_bot_runs() {
    use super::harness::{Proc, write_config};
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[kb]\nexample = false\n");
    let mut bot = Proc::spawn(&["run", "--config", config.to_str().unwrap()], dir.path());
    bot.expect_stderr("opsclaw ready").await;

    let out = dir.path().join("copy.db");
    let backup = |out: &std::path::Path| {
        Command::new(BIN)
            .args(["backup", "--config", config.to_str().unwrap(), out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let done = backup(&out);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    // The copy is a whole database: it opens, and its schema is migrated.
    let copy = opsclaw::store::Store::connect(&format!("sqlite://{}", out.display())).await.unwrap();
    assert_eq!(copy.count_alerts().await.unwrap(), 0);
    copy.migrate().await.expect("nothing left to migrate in the copy");
    // An existing file is never overwritten.
    let again = backup(&out);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; choose a new file"));
    assert!(bot.terminate().await.success());
}
