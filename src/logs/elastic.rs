//! The `elasticsearch` backend.

use std::time::Duration;

use async_trait::async_trait;

use super::config::ElasticConfig;
use super::{Found, LogError, LogSource, Search};

pub struct Elastic {
    _config: ElasticConfig,
    _timeout: Duration,
    _http: reqwest::Client,
}

impl Elastic {
    pub fn new(config: ElasticConfig, timeout: Duration, http: reqwest::Client) -> Self {
        Self { _config: config, _timeout: timeout, _http: http }
    }
}

#[async_trait]
impl LogSource for Elastic {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn search(&self, _search: &Search) -> Result<Found, LogError> {
        Err(LogError::Unavailable("not built yet".into()))
    }
}
