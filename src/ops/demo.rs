//! `opsclaw demo-app`: the harmless stand-in for a deploy tool that the
//! bundled `/deploy` command runs in `opsclaw chat`. It "deploys" by writing
//! the version into `demo-app/<app>-<env>.version` under its working
//! directory (the data directory), printing progress as a real tool would,
//! and its health check fails for versions containing `broken`, so a failed
//! verify and the automatic rollback can be tried locally. It also writes
//! the pretend app's log (`demo-app/logs/<app>-<env>.log`, RFC 3339
//! timestamps and levels) for `/logs demo` to read.

use std::path::PathBuf;
use std::time::Duration;

fn state_file(app: &str, env: &str) -> PathBuf {
    PathBuf::from("demo-app").join(format!("{app}-{env}.version"))
}

/// Appends `lines` (level, message) to the app's log, each stamped now.
fn log(app: &str, env: &str, lines: &[(&str, String)]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = PathBuf::from("demo-app").join("logs");
    std::fs::create_dir_all(&dir)?;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{app}-{env}.log")))?;
    let mut text = String::new();
    for (level, message) in lines {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        text.push_str(&format!("{now} {level:<5} {app}[{env}] {message}\n"));
    }
    file.write_all(text.as_bytes())
}

/// Runs `action` (`deploy` or `verify`); returns the process exit code.
pub async fn run(action: &str, app: &str, env: &str, version: Option<&str>) -> anyhow::Result<u8> {
    let path = state_file(app, env);
    match action {
        "deploy" => {
            let version = version.ok_or_else(|| anyhow::anyhow!("deploy needs --version"))?;
            let before = std::fs::read_to_string(&path).unwrap_or_else(|_| "nothing".into());
            println!("deploying {app} {version} to {env} (replacing {})", before.trim());
            for (i, stage) in ["pulling image", "starting new instances", "shifting traffic", "stopping old instances"]
                .iter()
                .enumerate()
            {
                // Slow enough for the card's live progress to show each stage.
                tokio::time::sleep(Duration::from_millis(400)).await;
                println!("[{}/4] {stage}: {app}:{version}", i + 1);
            }
            std::fs::create_dir_all(path.parent().expect("a relative path with a directory"))?;
            std::fs::write(&path, format!("{version}\n"))?;
            log(
                app,
                env,
                &[
                    ("INFO", format!("starting {app} {version} (was {})", before.trim())),
                    ("INFO", format!("connecting to postgres://{app}:s3cr3t-demo@db.{env}:5432/{app}")),
                    ("INFO", "listening on :8080".to_owned()),
                    ("INFO", "GET /healthz 200 2ms".to_owned()),
                ],
            )?;
            println!("{app} {version} is live in {env}");
            Ok(0)
        }
        "verify" => {
            let live = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let live = live.trim();
            if live.contains("broken") {
                log(
                    app,
                    env,
                    &[
                        (
                            "ERROR",
                            format!(
                                "GET /healthz 500 31ms: {app} {live} cannot read its config: missing key `db.pool`"
                            ),
                        ),
                        ("WARN", "retrying config load in 1s".to_owned()),
                    ],
                )?;
                println!("health check of {app} {live} in {env}: HTTP 500 from /healthz");
                Ok(1)
            } else {
                log(app, env, &[("INFO", "GET /healthz 200 1ms".to_owned())])?;
                println!("health check of {app} {live} in {env}: ok");
                Ok(0)
            }
        }
        other => anyhow::bail!("unknown action `{other}` (deploy, verify)"),
    }
}
