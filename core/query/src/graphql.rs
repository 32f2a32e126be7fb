//! `POST /graphql`: the one GraphQL query LogScale's clients need of a read API, the
//! repositories a token may read. Grafana's LogScale data source lists them when it
//! connects (`pkg/humio/client.go`, `ListRepos`: `{searchDomains{name}}` through
//! hasura/go-graphql-client). Any other query is a 400 whose GraphQL `errors` say what
//! Weir answers; Weir has no GraphQL schema beyond this.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::service::QueryService;

/// The query, its whitespace removed, with `query` and an operation name or not.
const SEARCH_DOMAINS: &str = "{searchDomains{name}}";

pub(crate) async fn graphql(State(service): State<Arc<QueryService>>, headers: HeaderMap, body: Bytes) -> Response {
    let repositories = match service.readable(&headers) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refused(&format!("the body is not a GraphQL request ({e}); send {{\"query\": \"{SEARCH_DOMAINS}\"}}")),
    };
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return refused(&format!("the body has no \"query\"; send {{\"query\": \"{SEARCH_DOMAINS}\"}}"));
    };
    if !is_search_domains(query) {
        return refused(&format!(
            "Weir answers one GraphQL query, {SEARCH_DOMAINS} (the repositories this token may read), not {:?}; search with POST /api/v1/repositories/<repo>/query or …/queryjobs",
            query.chars().take(200).collect::<String>()
        ));
    }
    let domains: Vec<Value> = repositories.into_iter().map(|name| json!({"name": name})).collect();
    Json(json!({"data": {"searchDomains": domains}})).into_response()
}

/// `{searchDomains{name}}`, also as `query { ... }` or `query Name { ... }`.
fn is_search_domains(query: &str) -> bool {
    let compact: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut rest = compact.trim();
    if let Some(after) = rest.strip_prefix("query") {
        rest = after.trim_start();
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        rest = rest[name_end..].trim_start();
    }
    let squeezed: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed == SEARCH_DOMAINS
}

fn refused(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"errors": [{"message": message}], "data": null}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_search_domains_query_is_answered() {
        for query in
            ["{searchDomains{name}}", "query{searchDomains{name}}", "query ListRepos {\n  searchDomains {\n    name\n  }\n}", " { searchDomains { name } } "]
        {
            assert!(is_search_domains(query), "{query}");
        }
        for query in ["{searchDomains{name id}}", "mutation{searchDomains{name}}", "{viewer{id}}", "query{searchDomains{name}}{x}", "", "query"] {
            assert!(!is_search_domains(query), "{query}");
        }
    }
}
