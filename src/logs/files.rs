//! The `files` backend.

use std::time::Duration;

use async_trait::async_trait;

use super::config::FilesConfig;
use super::{Found, LogError, LogSource, Search};

pub struct Files {
    _config: FilesConfig,
    _timeout: Duration,
}

impl Files {
    pub fn new(config: FilesConfig, timeout: Duration) -> Self {
        Self { _config: config, _timeout: timeout }
    }
}

#[async_trait]
impl LogSource for Files {
    fn kind(&self) -> &'static str {
        "files"
    }

    async fn search(&self, _search: &Search) -> Result<Found, LogError> {
        Err(LogError::Unavailable("not built yet".into()))
    }
}
