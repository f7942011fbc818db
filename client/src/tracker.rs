//! A small client for the tracker's HTTP/JSON API: authentication, JSON in
//! and out, and tracker errors turned into one-line messages with exit codes.

use crate::{Exit, with_exit};
use serde::Deserialize as _;
use serde_json::Value;
use std::time::Duration;

/// Where the tracker is and which API key to use.
#[derive(Debug, Clone)]
pub struct Tracker {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Tracker {
    pub fn new(base: &str, key: Option<String>) -> anyhow::Result<Tracker> {
        let base = http_base("tracker", base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Tracker { base, key, http })
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the JSON answer, or an error carrying the
    /// tracker's code and detail.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.finish(&method, path, req).await
    }

    /// `method` `path` with `body` (an API request type), the answer as JSON.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Value> {
        let body = serde_json::to_value(body)?;
        self.call(method, path, Some(&body)).await
    }

    /// POST `body` (an API request type) to `path` and decode the answer as
    /// its API type; a malformed answer is an error naming the path.
    pub async fn post<A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<A> {
        let answer = self.send(reqwest::Method::POST, path, body).await?;
        serde_json::from_value(answer)
            .map_err(|e| anyhow::anyhow!("the tracker's answer to {path} is malformed: {e}"))
    }

    /// Posts raw bytes (a signed manifest).
    pub async fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(bytes);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        req = req.header("content-type", "application/octet-stream");
        self.finish(&reqwest::Method::POST, path, req).await
    }

    /// Fetches raw bytes.
    /// GET `path`, handing each piece of the body to `sink` as it arrives
    /// (bounded memory for bodies of any length); returns the bytes seen.
    pub async fn get_streamed(
        &self,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let mut resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(refusal(status, &body));
        }
        let mut n = 0u64;
        while let Some(piece) = resp.chunk().await.map_err(|e| {
            anyhow::Error::new(e).context("the tracker's answer broke off before its end")
        })? {
            n += piece.len() as u64;
            sink(&piece)?;
        }
        Ok(n)
    }

    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(refusal(status, &body));
        }
        Ok(resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_vec())
    }

    async fn finish(
        &self,
        method: &reqwest::Method,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<Value> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        if status.is_success() {
            Ok(body)
        } else {
            tracing::debug!(%method, path, %status, "tracker refused");
            Err(refusal(status, &body))
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        with_exit(
            anyhow::anyhow!("tracker at {} is unreachable: {e}", self.base),
            Exit::TrackerUnreachable,
        )
    }
}

/// `url` without a trailing `/`, if it is an http(s) URL (exit 3 if not);
/// `what` names it in the error.
pub(crate) fn http_base(what: &str, url: &str) -> anyhow::Result<String> {
    let base = url.trim_end_matches('/').to_owned();
    if base.starts_with("http://") || base.starts_with("https://") {
        Ok(base)
    } else {
        Err(with_exit(
            anyhow::anyhow!("{what} URL {base:?} must start with http:// or https://"),
            Exit::BadInput,
        ))
    }
}

/// The tracker's error code, when an error came from it.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tracker refused: {} ({})", self.detail, self.code)
    }
}

impl std::error::Error for Refusal {}

/// A refusal from the tracker's [`shoal_api::ErrorBody`], or from the bare
/// status when the body is not one (a proxy's error page).
fn refusal(status: reqwest::StatusCode, body: &Value) -> anyhow::Error {
    let (code, detail) = match shoal_api::ErrorBody::deserialize(body) {
        Ok(b) => (b.error, b.detail),
        Err(_) => ("http_error".to_owned(), format!("HTTP {status}")),
    };
    let exit = if status.is_server_error() {
        Exit::TrackerFailed
    } else {
        Exit::TrackerRefused
    };
    with_exit(
        Refusal {
            status: status.as_u16(),
            code,
            detail,
        },
        exit,
    )
}
