//! A fake's HTTP server on 127.0.0.1 (a free port), stopped when dropped.

use std::net::SocketAddr;

use axum::Router;

pub struct Served {
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves `app`; `what` names the fake if serving fails.
    pub async fn start(app: Router, what: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let server =
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap_or_else(|e| panic!("{what}: {e}")) });
        Self { addr, server }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}
