//! The `journald` backend.

use std::time::Duration;

use async_trait::async_trait;

use super::config::JournaldConfig;
use super::{Found, LogError, LogSource, Search};

pub struct Journald {
    _config: JournaldConfig,
    _timeout: Duration,
}

impl Journald {
    pub fn new(config: JournaldConfig, timeout: Duration) -> Self {
        Self { _config: config, _timeout: timeout }
    }
}

#[async_trait]
impl LogSource for Journald {
    fn kind(&self) -> &'static str {
        "journald"
    }

    async fn search(&self, _search: &Search) -> Result<Found, LogError> {
        Err(LogError::Unavailable("not built yet".into()))
    }
}
