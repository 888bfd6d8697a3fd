//! `openmonetize serve`: the HTTP API.
//!
//! Endpoints ([`ROUTES`]; `pipeline/src/openapi.json` describes each):
//! - `POST /v1/events`, `POST /v1/commands`: one JSON record or an array of them,
//!   queued for the embedded job ([`Ingress`]); the answer lists each record's verdict
//!   (accepted, duplicate, late, rejected with its reason; commands: accepted, queued,
//!   rejected) once the epoch that read them is decided and journaled
//!   ([`crate::journal`]), or with `?wait=commit` once the commit covering them is
//!   written (Kafka mode: always the commit).
//! - `GET /v1/customers/{id}/balance`, `GET /v1/customers/{id}/entitlements[/{feature}]`:
//!   the customer's `credit_balances` and `entitlements` rows as of the last commit,
//!   from the job's live state ([`LiveViews`]), not from Parquet.
//! - `POST /v1/query`: body `{"sql": "SELECT ..."}`, over the last commit as the key's
//!   tenant ([`om_queries::Scope`]: every table shows that tenant's rows only, and only
//!   queries are allowed) or, for an admin key, over every tenant. Answers `{"columns":
//!   [...], "rows": [{...}, ...]}`, decimals as exact strings.
//! - `GET /healthz`, `GET /metrics` (Prometheus text, [`JobMetrics`]), `GET /openapi.json`.
//!
//! Every `/v1` request needs `Authorization: Bearer KEY`, a key of the config's
//! `[[api_keys]]`, stored as SHA-256 hashes; a request's key is hashed and compared, and
//! never logged. A tenant key reads and writes its own tenant only: records naming
//! another tenant are rejected, another tenant's customer is "unknown" (404). An admin
//! key names the tenant of customer reads with `?tenant_id=`. Requests are bounded: a
//! body of at most [`MAX_BODY`] bytes, a result of at most [`MAX_ROWS`] rows,
//! [`QUERY_TIMEOUT`] per query and per ingest answer. Every failure is a 4xx/5xx with
//! `{"error": {"code", "message"}}`.
//!
//! With `--read-only` there is no job: only SQL, health and metrics are served over the
//! tables already in the data location.

use crate::access::{MAX_ROWS, QUERY_TIMEOUT, key_scope};
use crate::ingress::{Ingress, Refused, Reply, Verdict, Wait};
use crate::live::LiveViews;
use crate::metrics::JobMetrics;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use om_model::Decimal9;
use om_model::config::ApiKey;
use om_queries::{QueryEngine, Scope};
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;

/// Every route: (method, path). The OpenAPI document and the README list each.
pub const ROUTES: [(&str, &str); 9] = [
    ("POST", "/v1/events"),
    ("POST", "/v1/commands"),
    ("GET", "/v1/customers/{customer_id}/balance"),
    ("GET", "/v1/customers/{customer_id}/entitlements"),
    ("GET", "/v1/customers/{customer_id}/entitlements/{feature}"),
    ("POST", "/v1/query"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The embedded job's side of the server.
#[derive(Debug, Clone)]
pub struct Job {
    /// Events posted to `/v1/events` (queue mode).
    pub events: Arc<Ingress>,
    /// Commands posted to `/v1/commands` (queue mode).
    pub commands: Arc<Ingress>,
    /// Kafka mode: the topics posted records are produced to.
    pub kafka: Option<Arc<KafkaFeeds>>,
    /// Balances and entitlements.
    pub live: Arc<LiveViews>,
    /// Why the job stopped, once it did.
    pub stopped: Arc<Mutex<Option<String>>>,
}

/// The topics of Kafka mode.
#[derive(Debug)]
pub struct KafkaFeeds {
    /// The events topic.
    pub events: crate::kafka_ingest::KafkaIngest,
    /// The commands topic, if any.
    pub commands: Option<crate::kafka_ingest::KafkaIngest>,
}

/// What the server serves.
#[derive(Debug)]
pub struct ServeOptions {
    /// The data location.
    pub data: String,
    /// The API keys.
    pub keys: Vec<ApiKey>,
    /// The config, for the billing tables' pricing.
    pub config: Arc<om_model::Config>,
    /// The embedded job; none with `--read-only`.
    pub job: Option<Job>,
    /// Counters.
    pub metrics: Arc<JobMetrics>,
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
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The router of the API.
pub fn router(opts: ServeOptions) -> Router {
    let state = Arc::new(opts);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/query", post(query))
        .route("/v1/events", post(post_events))
        .route("/v1/commands", post(post_commands))
        .route("/v1/customers/{customer_id}/balance", get(balance))
        .route(
            "/v1/customers/{customer_id}/entitlements",
            get(entitlements),
        )
        .route(
            "/v1/customers/{customer_id}/entitlements/{feature}",
            get(entitlement),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see `openmonetize serve --help` or GET /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see GET /openapi.json",
            )
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(opts))
        .with_graceful_shutdown(shutdown)
        .await
}

/// What `openmonetize serve` runs.
#[derive(Debug)]
pub struct ServerSettings {
    /// The config (meters, plans, views, `[[api_keys]]`).
    pub config: om_model::Config,
    /// The data location.
    pub data: String,
    /// Address to listen on (port 0: any free port).
    pub listen: String,
    /// No job: SQL over the tables already there.
    pub read_only: bool,
    /// Timely workers of the job.
    pub workers: usize,
    /// Time between the job's commits (of epochs that received anything).
    pub commit_interval: Duration,
    /// In-process queue: the job's epoch length (requests are answered once their
    /// epoch is journaled). Kafka mode: not used; epochs are a quarter of
    /// `commit_interval`, as for `run`.
    pub epoch_interval: Duration,
    /// Bound of each ingress queue, in bytes.
    pub queue_bytes: usize,
    /// How the job's threads are scheduled next to the request threads
    /// ([`crate::priority`]).
    pub job_priority: crate::priority::JobPriority,
    /// How long superseded files stay for readers of older commits (`None`: forever).
    pub keep_superseded: Option<Duration>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Also serve SQL over the PostgreSQL protocol here ([`crate::pg`]).
    pub pg_listen: Option<String>,
    /// Kafka mode ([`crate::kafka_ingest`]): the job reads this events topic and posted
    /// events are produced to it; none: the in-process queue.
    pub events_topic: Option<String>,
    /// Kafka mode: the commands topic (posted commands are refused without one).
    pub commands_topic: Option<String>,
}

/// Runs the job (unless read-only) and serves the API until `shutdown` completes or the
/// job fails; calls `listening` with ("http" or "postgres", bound address) for each
/// listener before serving. At shutdown, new records
/// are refused, the job commits and answers what was posted, the requests in flight
/// finish, and the job's summary is returned.
#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
pub fn run_server(
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut listening: impl FnMut(&'static str, std::net::SocketAddr),
) -> anyhow::Result<Option<crate::RunSummary>> {
    use anyhow::Context;
    let ServerSettings {
        config,
        data,
        listen,
        read_only,
        workers,
        commit_interval,
        epoch_interval,
        queue_bytes,
        job_priority,
        keep_superseded,
        progress,
        pg_listen,
        events_topic,
        commands_topic,
    } = settings;
    let keys = config.api_keys.clone();
    let shared_config = Arc::new(config.clone());
    let metrics = Arc::new(JobMetrics::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (job, handle) = if read_only {
        (None, None)
    } else {
        let events = Arc::new(Ingress::new("events", queue_bytes));
        let commands = Arc::new(Ingress::new("commands", queue_bytes));
        let live = Arc::new(LiveViews::new(workers));
        let (mut opts, kafka) = match &events_topic {
            None => {
                if commands_topic.is_some() {
                    anyhow::bail!("--commands-topic needs --events-topic (Kafka mode)");
                }
                let mut opts =
                    crate::RunOptions::new(config, crate::Source::Http(Arc::clone(&events)), &data);
                opts.commands = Some(crate::Source::Http(Arc::clone(&commands)));
                (opts, None)
            }
            Some(topic) => {
                let url = |t: &str, flag: &str| {
                    t.parse::<om_sources::kafka::KafkaUrl>()
                        .with_context(|| format!("{flag} `{t}`"))
                };
                let events_url = url(topic, "--events-topic")?;
                let commands_url = commands_topic
                    .as_deref()
                    .map(|t| url(t, "--commands-topic"))
                    .transpose()?;
                let feeds = KafkaFeeds {
                    events: crate::kafka_ingest::KafkaIngest::open(&events_url)?,
                    commands: commands_url
                        .as_ref()
                        .map(crate::kafka_ingest::KafkaIngest::open)
                        .transpose()?,
                };
                let mut opts = crate::RunOptions::new(config, topic.parse()?, &data);
                opts.commands = commands_topic.as_deref().map(str::parse).transpose()?;
                (opts, Some(Arc::new(feeds)))
            }
        };
        opts.workers = workers;
        opts.commit_interval = commit_interval;
        if kafka.is_none() {
            opts.epoch_interval = Some(epoch_interval);
        }
        opts.stop = Arc::clone(&stop);
        opts.progress = progress;
        opts.live = Some(Arc::clone(&live));
        opts.idle_priority = job_priority == crate::priority::JobPriority::Idle;
        opts.keep_superseded = keep_superseded;
        opts.metrics = Some(Arc::clone(&metrics));
        let job = Job {
            events,
            commands,
            kafka,
            live,
            stopped: Arc::default(),
        };
        let handle = std::thread::Builder::new()
            .name("om-job".into())
            .spawn({
                let job = job.clone();
                let metrics = Arc::clone(&metrics);
                move || {
                    let result = crate::run(opts);
                    job.events.abandon();
                    job.commands.abandon();
                    metrics.job_stopped();
                    *job.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(match &result {
                        Ok(_) => "the job stopped".to_string(),
                        Err(e) => format!("the job failed: {e:#}"),
                    });
                    result
                }
            })
            .context("starting the job")?;
        (Some(job), Some(handle))
    };
    // Whatever ends the serving (shutdown, a listener that cannot bind), the job stops.
    let stop_job = {
        let (stop, job) = (Arc::clone(&stop), job.clone());
        move || {
            if let Some(job) = &job {
                job.events.close();
                job.commands.close();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        listening("http", listener.local_addr()?);
        // The PostgreSQL listener stops when the shutdown begins (its sender is dropped).
        let (pg_stop, mut pg_stopped) = tokio::sync::watch::channel(());
        let pg = match pg_listen {
            None => None,
            Some(pg_listen) => {
                let (addr, task) = crate::pg::spawn(
                    &pg_listen,
                    data.clone(),
                    keys.clone(),
                    Arc::clone(&shared_config),
                    {
                        async move {
                            let _ = pg_stopped.changed().await;
                        }
                    },
                )
                .await
                .with_context(|| format!("listening on {pg_listen}"))?;
                listening("postgres", addr);
                Some(task)
            }
        };
        let watched = job.clone();
        let shutdown = async move {
            // A job that stops by itself (a failure) ends the server too.
            let job_ended = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(job) = &watched
                        && job
                            .stopped
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_some()
                    {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = shutdown => {}
                _ = job_ended => {}
            }
            if let Some(job) = &watched {
                job.events.close();
                job.commands.close();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(pg_stop);
        };
        let opts = ServeOptions {
            data,
            keys,
            config: shared_config,
            job,
            metrics,
        };
        serve(listener, opts, shutdown).await.context("serving")?;
        if let Some(pg) = pg {
            pg.await?.context("serving PostgreSQL")?;
        }
        anyhow::Ok(())
    });
    stop_job();
    let summary = match handle {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the job panicked"))??,
        ),
        None => None,
    };
    served?;
    Ok(summary)
}

/// Counts each request by route and status for `/metrics`.
async fn count(State(s): State<Arc<ServeOptions>>, request: Request, next: Next) -> Response {
    let route = route_of(request.uri().path());
    let response = next.run(request).await;
    s.metrics.request(route, response.status().as_u16());
    response
}

/// The route template of a path (so customer ids do not become label values).
fn route_of(path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix("/v1/customers/") {
        return match rest.split('/').collect::<Vec<_>>()[..] {
            [_, "balance"] => "/v1/customers/{customer_id}/balance",
            [_, "entitlements"] => "/v1/customers/{customer_id}/entitlements",
            [_, "entitlements", _] => "/v1/customers/{customer_id}/entitlements/{feature}",
            _ => "other",
        };
    }
    ROUTES
        .iter()
        .map(|(_, p)| *p)
        .find(|p| *p == path)
        .unwrap_or("other")
}

async fn healthz(State(s): State<Arc<ServeOptions>>) -> Result<Response, ApiError> {
    let mut body = json!({"status": "ok", "epoch": s.metrics.epoch()});
    if let Some(job) = &s.job {
        if let Some(why) = job
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "job_stopped",
                why,
            ));
        }
        if !job.live.ready() {
            return Err(starting());
        }
        body["live_epoch"] = json!(job.live.epoch());
    } else {
        let engine = open(&s.data, Scope::All, &s.config).await?;
        body["epoch"] = json!(engine.commit().map(|c| c.epoch));
    }
    Ok(axum::Json(body).into_response())
}

async fn metrics(State(s): State<Arc<ServeOptions>>) -> Response {
    let queued: Vec<(&str, usize)> = match &s.job {
        Some(job) => vec![
            ("events", job.events.queued_bytes()),
            ("commands", job.commands.queued_bytes()),
        ],
        None => Vec::new(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&queued),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The embedded job, or 503 when serving read-only.
fn job(s: &ServeOptions) -> Result<&Job, ApiError> {
    s.job.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            "this server runs with --read-only: no ingestion and no live views, only /v1/query",
        )
    })
}

/// 503 while the job restores its state.
fn starting() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "the job is starting (restoring its last commit); retry shortly",
    )
}

/// The body, or 413.
fn body_of(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("{e} (at most {MAX_BODY} bytes)"),
        )
    })
}

/// The records of an ingest body: one JSON value, or each element of a JSON array.
fn records_of(body: &[u8]) -> Result<Vec<&[u8]>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message);
    let not_json = |e: serde_json::Error| {
        bad(format!(
            "the body must be one JSON record or a JSON array of records: {e}"
        ))
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let records: Vec<&[u8]> = if first == Some(&b'[') {
        let values: Vec<&RawValue> = serde_json::from_slice(body).map_err(not_json)?;
        values.into_iter().map(|v| v.get().as_bytes()).collect()
    } else {
        let value: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
        vec![value.get().as_bytes()]
    };
    if records.is_empty() {
        return Err(bad("the array holds no records".into()));
    }
    Ok(records)
}

/// The value of the first `name=value` of a query string (as sent: not percent-decoded).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v)
        })
}

/// An ingest request's `?wait=`: `journal` (the default) or `commit`.
fn wait_of(query: Option<&str>) -> Result<Wait, ApiError> {
    match query_param(query, "wait") {
        None | Some("journal") => Ok(Wait::Journal),
        Some("commit") => Ok(Wait::Commit),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_wait",
            format!(
                "wait={other}: use wait=journal (answer once the records are durable, the default) or wait=commit (answer once the tables and live views show them)"
            ),
        )),
    }
}

async fn post_events(
    State(s): State<Arc<ServeOptions>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&s.keys, &headers)?;
    let wait = wait_of(uri.query())?;
    let job = job(&s)?;
    match &job.kafka {
        Some(k) => ingest_kafka(&s, &k.events, scope, &body_of(body)?).await,
        None => ingest(&job.events, scope, &body_of(body)?, wait).await,
    }
}

async fn post_commands(
    State(s): State<Arc<ServeOptions>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&s.keys, &headers)?;
    let wait = wait_of(uri.query())?;
    let job = job(&s)?;
    match &job.kafka {
        Some(k) => {
            let topic = k.commands.as_ref().ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_commands_topic",
                    "this server produces to Kafka and was started without --commands-topic: commands cannot be posted",
                )
            })?;
            ingest_kafka(&s, topic, scope, &body_of(body)?).await
        }
        None => ingest(&job.commands, scope, &body_of(body)?, wait).await,
    }
}

/// Kafka mode: produces the records of `body` and answers their verdicts once
/// committed.
async fn ingest_kafka(
    s: &ServeOptions,
    topic: &crate::kafka_ingest::KafkaIngest,
    scope: Scope,
    body: &[u8],
) -> Result<Response, ApiError> {
    use crate::kafka_ingest::KafkaIngestError;
    let records = records_of(body)?;
    let tenant = match &scope {
        Scope::Tenant(t) => Some(t.as_str()),
        Scope::All => None,
    };
    let submitted = topic.submit(&records, tenant, s.metrics.positions(), &s.data);
    let reply = tokio::time::timeout(QUERY_TIMEOUT, submitted)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "no commit covered the records within {} s; they are in Kafka and will be committed: retrying is safe, duplicates are recognized by (tenant_id, id)",
                    QUERY_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| {
            let code = match e {
                KafkaIngestError::Produce { .. } => "kafka_unavailable",
                KafkaIngestError::Stopped => "job_stopped",
                KafkaIngestError::Verdicts(_) => "data_unavailable",
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
        })?;
    Ok(verdicts_answer(reply))
}

/// Queues the records of `body` and answers their verdicts once journaled or, as `wait`
/// says, committed.
async fn ingest(
    ingress: &Ingress,
    scope: Scope,
    body: &[u8],
    wait: Wait,
) -> Result<Response, ApiError> {
    let records = records_of(body)?;
    let tenant = match scope {
        Scope::Tenant(t) => Some(Arc::<str>::from(t)),
        Scope::All => None,
    };
    let rx = ingress.submit(&records, tenant, wait).map_err(|e| {
        let code = match e {
            Refused::Full { .. } => "overloaded",
            Refused::NotOpen => "starting",
            Refused::Closed => "shutting_down",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    })?;
    let reply = tokio::time::timeout(QUERY_TIMEOUT, rx)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "no verdicts within {} s; the records may still be counted: retrying is safe, duplicates are recognized by (tenant_id, id)",
                    QUERY_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "job_stopped",
                "the job stopped before journaling these records; retry (duplicates are recognized by (tenant_id, id))",
            )
        })?;
    Ok(verdicts_answer(reply))
}

/// The answer to posted records: counts and each record's verdict.
fn verdicts_answer(
    Reply {
        epoch,
        committed,
        verdicts,
    }: Reply,
) -> Response {
    // Serialized straight from these structs (no `serde_json::Value` per record); the
    // fields are in the order the keys have always been written: alphabetical.
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        accepted: usize,
        committed: bool,
        duplicate: usize,
        epoch: u64,
        late: usize,
        queued: usize,
        rejected: usize,
        results: Vec<RecordResult<'a>>,
    }
    #[derive(serde::Serialize)]
    struct RecordResult<'a> {
        index: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        status: &'static str,
    }
    let mut answer = Answer {
        accepted: 0,
        committed,
        duplicate: 0,
        epoch,
        late: 0,
        queued: 0,
        rejected: 0,
        results: Vec::with_capacity(verdicts.len()),
    };
    for (index, v) in verdicts.iter().enumerate() {
        *match v {
            Verdict::Accepted => &mut answer.accepted,
            Verdict::Queued => &mut answer.queued,
            Verdict::Duplicate(_) => &mut answer.duplicate,
            Verdict::Late(_) => &mut answer.late,
            Verdict::Rejected(_) => &mut answer.rejected,
        } += 1;
        answer.results.push(RecordResult {
            index,
            reason: v.reason(),
            status: v.status(),
        });
    }
    axum::Json(answer).into_response()
}

/// The tenant of a customer read: the key's, or an admin's `?tenant_id=`.
fn tenant_of(scope: Scope, query: Option<&str>) -> Result<String, ApiError> {
    match (scope, query_param(query, "tenant_id").map(str::to_string)) {
        (Scope::Tenant(t), None) => Ok(t),
        (Scope::Tenant(t), Some(n)) if n == t => Ok(t),
        (Scope::Tenant(t), Some(n)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key reads tenant {t} only, not {n}"),
        )),
        (Scope::All, Some(n)) if !n.is_empty() => Ok(n),
        (Scope::All, _) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "tenant_required",
            "an admin key must name the tenant: add ?tenant_id=TENANT",
        )),
    }
}

/// The live rows of the customer in the path, for the request's tenant.
fn customer(
    s: &ServeOptions,
    headers: &HeaderMap,
    query: Option<&str>,
    customer_id: &str,
) -> Result<(String, crate::live::Found), ApiError> {
    let scope = authorize(&s.keys, headers)?;
    let tenant = tenant_of(scope, query)?;
    let job = job(s)?;
    if !job.live.ready() {
        return Err(starting());
    }
    let found = job.live.customer(&tenant, customer_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_customer",
            format!(
                "tenant {tenant} has no customer {customer_id} as of the last commit (epoch {})",
                job.live
                    .epoch()
                    .map_or_else(|| "none".to_string(), |e| e.to_string())
            ),
        )
    })?;
    Ok((tenant, found))
}

fn decimal(d: Decimal9) -> serde_json::Value {
    serde_json::Value::String(d.to_string())
}

fn time(t: Option<om_model::Micros>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        json!(om_model::time::format_micros(t))
    })
}

async fn balance(
    State(s): State<Arc<ServeOptions>>,
    Path(customer_id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (tenant_id, found) = customer(&s, &headers, uri.query(), &customer_id)?;
    let zero = Decimal9::ZERO;
    let b = found.rows().balance.as_ref();
    let field = |f: fn(&om_model::credit::BalanceRow) -> Decimal9| decimal(b.map_or(zero, f));
    Ok(axum::Json(json!({
        "tenant_id": tenant_id,
        "customer_id": customer_id,
        "epoch": found.epoch(),
        "as_of": time(found.as_of()),
        "balance": field(|b| b.balance),
        "granted": field(|b| b.granted),
        "consumed": field(|b| b.consumed),
        "expired": field(|b| b.expired),
        "voided": field(|b| b.voided),
        "overage": field(|b| b.overage),
        "exhaustion_at": time(b.and_then(|b| b.exhaustion_at)),
    }))
    .into_response())
}

fn entitlement_json(e: &crate::live::LiveEntitlement) -> serde_json::Value {
    json!({
        "feature": e.feature,
        "plan": e.plan,
        "has_access": e.has_access,
        "usage": e.usage.map(decimal),
        "limit": e.limit.map(decimal),
        "remaining": e.remaining.map(decimal),
        "reason": e.reason.as_str(),
    })
}

async fn entitlements(
    State(s): State<Arc<ServeOptions>>,
    Path(customer_id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (tenant_id, found) = customer(&s, &headers, uri.query(), &customer_id)?;
    let rows: Vec<serde_json::Value> = found
        .rows()
        .entitlements
        .iter()
        .map(entitlement_json)
        .collect();
    Ok(axum::Json(json!({
        "tenant_id": tenant_id,
        "customer_id": customer_id,
        "epoch": found.epoch(),
        "as_of": time(found.as_of()),
        "entitlements": rows,
    }))
    .into_response())
}

async fn entitlement(
    State(s): State<Arc<ServeOptions>>,
    Path((customer_id, feature)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (tenant_id, found) = customer(&s, &headers, uri.query(), &customer_id)?;
    let row = found
        .rows()
        .entitlements
        .iter()
        .find(|e| e.feature == feature)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_feature",
                format!("no plan of the config has a feature {feature}"),
            )
        })?;
    let mut body = entitlement_json(row);
    body["tenant_id"] = json!(tenant_id);
    body["customer_id"] = json!(customer_id);
    body["epoch"] = json!(found.epoch());
    body["as_of"] = time(found.as_of());
    Ok(axum::Json(body).into_response())
}

async fn query(
    State(s): State<Arc<ServeOptions>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&s.keys, &headers)?;
    let body = body_of(body)?;
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
    let engine = open(&s.data, scope, &s.config).await?;
    let (schema, batches) = tokio::time::timeout(QUERY_TIMEOUT, engine.query(&request.sql))
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
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    if wants_arrow {
        let bytes = arrow_stream(&schema, &batches).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding", e.to_string())
        })?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response());
    }
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let rows = om_queries::json_rows(&batches)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding", e.to_string()))?;
    let columns = serde_json::to_string(&columns).expect("strings encode");
    let body = format!("{{\"columns\":{columns},\"rows\":{rows}}}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The media type of an Arrow IPC stream, the binary answer of `/v1/query`.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The batches as one Arrow IPC stream (schema first, so an empty result keeps its
/// columns and types).
fn arrow_stream(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[arrow::record_batch::RecordBatch],
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    w.into_inner()
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
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            unauthorized("send `Authorization: Bearer KEY` with a key of [[api_keys]]")
        })?;
    key_scope(keys, key).ok_or_else(|| unauthorized("unknown API key"))
}

async fn open(
    data: &str,
    scope: Scope,
    config: &Arc<om_model::Config>,
) -> Result<QueryEngine, ApiError> {
    QueryEngine::open_with_config(data, scope, Arc::clone(config))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "data_unavailable",
                format!("reading the tables: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_in_the_openapi_document_and_the_readme() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let readme = include_str!("../../README.md");
        for (method, path) in ROUTES {
            let operation = &doc["paths"][path][method.to_lowercase()];
            assert!(
                operation.is_object(),
                "{method} {path} missing in openapi.json"
            );
            assert!(
                readme.contains(&format!("`{method} {path}`")),
                "{method} {path} missing in the README's endpoint table"
            );
            let _ = route_of(path);
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "openapi.json has routes the server lacks"
        );
    }

    #[test]
    fn an_answer_counts_the_verdicts_and_lists_each_record_in_order() {
        let reply = Reply {
            epoch: 7,
            committed: false,
            verdicts: vec![
                Verdict::Accepted,
                Verdict::Duplicate("duplicate of an accepted event".into()),
                Verdict::Rejected("bad timestamp".into()),
                Verdict::Accepted,
            ],
        };
        let response = verdicts_answer(reply);
        assert_eq!(response.status(), StatusCode::OK);
        let body =
            futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            concat!(
                r#"{"accepted":2,"committed":false,"duplicate":1,"epoch":7,"late":0,"queued":0,"rejected":1,"results":["#,
                r#"{"index":0,"status":"accepted"},"#,
                r#"{"index":1,"reason":"duplicate of an accepted event","status":"duplicate"},"#,
                r#"{"index":2,"reason":"bad timestamp","status":"rejected"},"#,
                r#"{"index":3,"status":"accepted"}]}"#
            )
        );
    }

    #[test]
    fn customer_paths_count_as_their_route_template() {
        assert_eq!(
            route_of("/v1/customers/c1/entitlements/ai"),
            "/v1/customers/{customer_id}/entitlements/{feature}"
        );
        assert_eq!(route_of("/v1/events"), "/v1/events");
        assert_eq!(route_of("/nothing"), "other");
    }

    #[test]
    fn ingest_bodies_are_one_record_or_an_array() {
        assert_eq!(records_of(br#"{"a":1}"#).unwrap(), [br#"{"a":1}"#]);
        assert_eq!(
            records_of(b" [ {\"a\":1} , 2 ]").unwrap(),
            [&b"{\"a\":1}"[..], b"2"]
        );
        assert!(records_of(b"[]").is_err());
        assert!(records_of(b"{").is_err());
    }
}
