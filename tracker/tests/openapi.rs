//! The OpenAPI document at `GET /v1/openapi.json`: version 3.1, every
//! `/v1/` route the router has (read from its source) and nothing else,
//! each operation with its success and JSON error answers, and the schemas
//! it names present.

#![allow(clippy::unwrap_used)]

mod common;

use serde_json::Value;
use shoal_tracker::Config;

async fn document() -> Value {
    let t = common::start(Config::default()).await;
    let r = t
        .http
        .get(format!("{}/v1/openapi.json", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_document_lists_every_v1_route_of_the_router() {
    let doc = document().await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes: Vec<(String, String)> = common::routes_in_source()
        .into_iter()
        .filter(|(_, path)| path.starts_with("/v1/"))
        .collect();
    assert!(routes.len() >= 30, "the source scan found only {routes:?}");
    let paths = doc["paths"].as_object().unwrap();
    let missing: Vec<_> = routes
        .iter()
        .filter(|(method, path)| paths[path.as_str()][method.to_lowercase()].is_null())
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let stale: Vec<_> = documented.iter().filter(|r| !routes.contains(r)).collect();
    assert!(
        stale.is_empty(),
        "documented routes the router lacks: {stale:?}"
    );
}

#[tokio::test]
async fn every_operation_has_its_answers_and_every_schema_it_names_exists() {
    let doc = document().await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    // Every `#/components/schemas/X` the document refers to is defined.
    let mut rest = text.as_str();
    let mut refs = 0;
    while let Some(i) = rest.find("#/components/schemas/") {
        rest = &rest[i + "#/components/schemas/".len()..];
        let name: String = rest.chars().take_while(|c| *c != '"').collect();
        assert!(
            schemas.contains_key(&name),
            "{name} is referred to, not defined"
        );
        refs += 1;
    }
    assert!(refs > 30, "only {refs} schema references");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path} documents no success"
            );
            if path != "/v1/health" && path != "/v1/openapi.json" {
                let error = &responses["4XX"]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    error, "#/components/schemas/ErrorBody",
                    "{method} {path}: refusals are not the error body"
                );
            }
        }
    }
    // The error body is what every refusal carries.
    assert_eq!(
        schemas["ErrorBody"]["required"],
        serde_json::json!(["error", "detail"])
    );
}
