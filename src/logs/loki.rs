//! The `loki` backend.

use std::time::Duration;

use async_trait::async_trait;

use super::config::LokiConfig;
use super::{Found, LogError, LogSource, Search};

pub struct Loki {
    _config: LokiConfig,
    _timeout: Duration,
    _http: reqwest::Client,
}

impl Loki {
    pub fn new(config: LokiConfig, timeout: Duration, http: reqwest::Client) -> Self {
        Self { _config: config, _timeout: timeout, _http: http }
    }
}

#[async_trait]
impl LogSource for Loki {
    fn kind(&self) -> &'static str {
        "loki"
    }

    async fn search(&self, _search: &Search) -> Result<Found, LogError> {
        Err(LogError::Unavailable("not built yet".into()))
    }
}
