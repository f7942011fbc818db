//! A small client for the tracker's HTTP/JSON API: authentication, JSON in
//! and out, and tracker errors turned into one-line messages with exit codes.

use crate::{Exit, with_exit};
use serde::Deserialize as _;
use serde_json::Value;
use std::time::Duration;

/// Where the tracker is and which API key to use. Several replicas may
/// be named (`http://a:7070,http://b:7070`): a request that cannot reach
/// one, or that one answers 502/503/504 (its database gone, a proxy with
/// no backend), goes to the next, and later requests start from the one
/// that answered.
#[derive(Debug, Clone)]
pub struct Tracker {
    bases: Vec<String>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    key: Option<String>,
    http: reqwest::Client,
}

/// Most tracker URLs in one list.
const MAX_TRACKERS: usize = 16;

impl Tracker {
    /// `urls`: one tracker URL, or several separated by commas.
    pub fn new(urls: &str, key: Option<String>) -> anyhow::Result<Tracker> {
        let bases = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| http_base("tracker", u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if bases.is_empty() || bases.len() > MAX_TRACKERS {
            return Err(with_exit(
                anyhow::anyhow!(
                    "name 1 to {MAX_TRACKERS} tracker URLs (separated by commas), not {}",
                    bases.len()
                ),
                Exit::BadInput,
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Tracker {
            bases,
            current: Default::default(),
            key,
            http,
        })
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The tracker URL requests go to now.
    pub fn base(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// Sends `build(url)` to the current tracker, moving on to the next
    /// replica when it is unreachable or answers 502/503/504, until each
    /// was tried once. The last failure is what the caller sees.
    async fn send_to_any(
        &self,
        path: &str,
        build: impl Fn(String) -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.bases.len() {
            let i = (first + step) % self.bases.len();
            let base = &self.bases[i];
            let mut req = build(format!("{base}{path}"));
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            match req.send().await {
                Ok(resp)
                    if matches!(resp.status().as_u16(), 502..=504)
                        && step + 1 < self.bases.len() =>
                {
                    tracing::warn!(tracker = %base, status = %resp.status(), "tracker failing; trying the next");
                }
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if e.is_connect() || e.is_timeout() => {
                    if self.bases.len() > 1 {
                        tracing::warn!(tracker = %base, error = %e, "tracker unreachable; trying the next");
                    }
                    last = Some(unreachable(base, e));
                }
                Err(e) => return Err(unreachable(base, e)),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no tracker URL")))
    }

    /// Sends a request and returns the JSON answer, or an error carrying the
    /// tracker's code and detail.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let resp = self
            .send_to_any(path, |url| {
                let req = self.http.request(method.clone(), url);
                match body {
                    Some(b) => req.json(b),
                    None => req,
                }
            })
            .await?;
        self.finish(&method, path, resp).await
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
        let resp = self
            .send_to_any(path, |url| {
                self.http
                    .post(url)
                    .body(bytes.clone())
                    .header("content-type", "application/octet-stream")
            })
            .await?;
        self.finish(&reqwest::Method::POST, path, resp).await
    }

    /// GET `path`, handing each piece of the body to `sink` as it arrives
    /// (bounded memory for bodies of any length); returns the bytes seen.
    pub async fn get_streamed(
        &self,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut resp = self.send_to_any(path, |url| self.http.get(url)).await?;
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

    /// Fetches raw bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.send_to_any(path, |url| self.http.get(url)).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(refusal(status, &body));
        }
        let base = self.base().to_owned();
        Ok(resp
            .bytes()
            .await
            .map_err(|e| unreachable(&base, e))?
            .to_vec())
    }

    async fn finish(
        &self,
        method: &reqwest::Method,
        path: &str,
        resp: reqwest::Response,
    ) -> anyhow::Result<Value> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| unreachable(self.base(), e))?;
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        if status.is_success() {
            Ok(body)
        } else {
            tracing::debug!(%method, path, %status, "tracker refused");
            Err(refusal(status, &body))
        }
    }
}

fn unreachable(base: &str, e: reqwest::Error) -> anyhow::Error {
    with_exit(
        anyhow::anyhow!("tracker at {base} is unreachable: {e}"),
        Exit::TrackerUnreachable,
    )
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
