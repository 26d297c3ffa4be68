//! Talking to a running Sluice's admin API (and writing its token file).

use std::path::PathBuf;

use serde_json::Value;

/// The token the helpers configure, under the name `ops`.
pub const TOKEN: &str = "test-admin-token-0123456789";

/// A token file for `--admin-token-file`, kept alive by the returned directory.
pub fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.tokens");
    std::fs::write(&path, format!("# test tokens\nops:{TOKEN}\n")).expect("write tokens");
    (dir, path)
}

/// An admin client of one instance.
pub struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    /// With the test token.
    pub fn new(http_addr: std::net::SocketAddr) -> Self {
        Self::with_token(http_addr, Some(TOKEN))
    }

    pub fn with_token(http_addr: std::net::SocketAddr, token: Option<&str>) -> Self {
        Self {
            base: format!("http://{http_addr}/admin"),
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        }
    }

    /// `method path` with an optional JSON body: the status and the JSON answer (or the text as a
    /// JSON string).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("admin answer");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }
}

/// `/rlconfig` as an admin sees it (runtime overrides in full).
pub async fn rlconfig(sluice: &crate::sluice::Sluice) -> String {
    reqwest::Client::new()
        .get(sluice.url("/rlconfig"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /rlconfig")
        .text()
        .await
        .expect("rlconfig text")
}
