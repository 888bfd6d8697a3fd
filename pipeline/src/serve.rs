//! `openmonetize serve`: the HTTP API over a data location (issue #6, first part).
//!
//! Endpoints:
//! - `GET /healthz`: `{"status":"ok","epoch":N}` with the newest commit's epoch (null
//!   before the first commit).
//! - `POST /v1/query`: body `{"sql": "SELECT ..."}`, header `Authorization: Bearer KEY`.
//!   Runs the SQL over the last commit as the key's tenant ([`om_queries::Scope`]: every
//!   table shows that tenant's rows only, and only queries are allowed) or, for an admin
//!   key, over every tenant. Answers `{"columns": [...], "rows": [{...}, ...]}`, decimals
//!   as exact strings.
//!
//! Keys come from the config's `[[api_keys]]`, stored as SHA-256 hashes; a request's key
//! is hashed and compared, and never logged. Requests are bounded: a body of at most
//! [`MAX_BODY`] bytes, a result of at most [`MAX_ROWS`] rows, [`QUERY_TIMEOUT`] per
//! query. Every failure is a 4xx/5xx with `{"error": {"code", "message"}}`.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use om_model::config::{ApiKey, KeyScope};
use om_queries::{QueryEngine, Scope};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// Most rows a query may return.
pub const MAX_ROWS: usize = 100_000;
/// Longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Debug)]
struct Served {
    data: String,
    keys: Vec<ApiKey>,
}

/// An error answer: status, a stable code and a message naming the problem.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// The router of the API over `data`, with `keys`.
pub fn router(data: String, keys: Vec<ApiKey>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/query", post(query))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see `openmonetize serve --help`",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(Served { data, keys }))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    data: String,
    keys: Vec<ApiKey>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(data, keys))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(s): State<Arc<Served>>) -> Result<Response, ApiError> {
    let engine = open(&s.data, Scope::All).await?;
    let epoch = engine.commit().map(|c| c.epoch);
    Ok(axum::Json(serde_json::json!({"status": "ok", "epoch": epoch})).into_response())
}

async fn query(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&s.keys, &headers)?;
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("{e} (at most {MAX_BODY} bytes)"),
        )
    })?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct QueryBody {
        sql: String,
    }
    let request: QueryBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body must be JSON {{\"sql\": \"SELECT ...\"}}: {e}"),
        )
    })?;
    let engine = open(&s.data, scope).await?;
    let batches = tokio::time::timeout(QUERY_TIMEOUT, engine.sql(&request.sql))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the query ran longer than {} s", QUERY_TIMEOUT.as_secs()),
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string()))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > MAX_ROWS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rows",
            format!("the result has {rows} rows, more than {MAX_ROWS}; add a LIMIT or aggregate"),
        ));
    }
    let columns: Vec<String> = match batches.first() {
        Some(b) => b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        None => Vec::new(),
    };
    let rows = om_queries::json_rows(&batches)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding", e.to_string()))?;
    let columns = serde_json::to_string(&columns).expect("strings encode");
    let body = format!("{{\"columns\":{columns},\"rows\":{rows}}}");
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The scope of the request's bearer key.
fn authorize(keys: &[ApiKey], headers: &HeaderMap) -> Result<Scope, ApiError> {
    let unauthorized = |message: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message.to_string(),
        )
    };
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            unauthorized("send `Authorization: Bearer KEY` with a key of [[api_keys]]")
        })?;
    key_scope(keys, key).ok_or_else(|| unauthorized("unknown API key"))
}

/// The scope of `key` (surrounding whitespace ignored): its SHA-256 looked up in `keys`.
/// Shared by HTTP and the PostgreSQL front end ([`crate::pg`]).
pub fn key_scope(keys: &[ApiKey], key: &str) -> Option<Scope> {
    let hash: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
    let found = keys.iter().find(|k| k.sha256 == hash)?;
    Some(match &found.scope {
        KeyScope::Tenant(t) => Scope::Tenant(t.clone()),
        KeyScope::Admin => Scope::All,
    })
}

async fn open(data: &str, scope: Scope) -> Result<QueryEngine, ApiError> {
    QueryEngine::open_scoped(data, scope).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "data_unavailable",
            format!("reading the tables: {e}"),
        )
    })
}
