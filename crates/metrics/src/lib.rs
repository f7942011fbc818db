//! A small `/metrics` server (Prometheus text format) for processes without
//! an HTTP API of their own: the seed, and a launcher while it seeds. What
//! it shows is rendered at scrape time by the caller's closure.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tracing::Instrument as _;

/// Renders the current metrics.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Builds a registry from plain values at scrape time.
#[derive(Debug)]
pub struct Scrape(Registry);

impl Scrape {
    pub fn new(prefix: &str) -> Scrape {
        Scrape(Registry::with_prefix(prefix))
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Scrape {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        self.0.register(name, help, c);
        self
    }

    /// One counter per value of `label` (`name_total{label="value"}`).
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(&str, u64)],
    ) -> &mut Scrape {
        let family = Family::<Vec<(String, String)>, Counter<u64>>::default();
        for (value, n) in values {
            family
                .get_or_create(&vec![(label.to_string(), value.to_string())])
                .inc_by(*n);
        }
        self.0.register(name, help, family);
        self
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Scrape {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(value);
        self.0.register(name, help, g);
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Render,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves metrics in the background; the task ends with the process.
pub async fn spawn(addr: &str, render: Render) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics address {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(
        async move {
            if let Err(e) = serve(listener, render, std::future::pending()).await {
                tracing::warn!(error = %e, "the metrics server stopped");
            }
        }
        .instrument(tracing::info_span!("metrics", addr = %local)),
    );
    Ok(local)
}

#[cfg(test)]
mod tests {
    #[test]
    fn labelled_counters_render_one_line_per_value() {
        let text = super::Scrape::new("shoal_x")
            .counters("bytes", "Bytes", "path", &[("lan", 3), ("direct", 0)])
            .render();
        assert!(
            text.contains("shoal_x_bytes_total{path=\"lan\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("shoal_x_bytes_total{path=\"direct\"} 0"),
            "{text}"
        );
    }
}
