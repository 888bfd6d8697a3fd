//! `openmonetize serve --pg-listen ADDR`: SQL over the PostgreSQL wire protocol (protocol
//! 3), so `psql`, psycopg and other PostgreSQL clients can query the committed tables.
//!
//! - **Login.** Cleartext password authentication: the password is an API key of the
//!   config's `[[api_keys]]`, hashed and looked up as for HTTP
//!   ([`crate::access::key_scope`]). The key alone decides whose rows the session sees; the
//!   user and database names are not checked. A wrong key is `FATAL 28P01 password
//!   authentication failed`. Keys are never logged. There is no TLS: an `SSLRequest` is
//!   answered "no" and the client goes on in plain text (`sslmode=prefer`), so keep the
//!   listener on a trusted network or loopback.
//! - **Sessions.** Every query runs as the key's principal in a fresh
//!   [`om_queries::QueryEngine::open_scoped`] session over the newest commit: a tenant key
//!   sees its own rows only, in every table, whatever the SQL; an admin key sees every
//!   tenant. Only queries run (for admin keys too): DDL, DML (`INSERT`, `COPY ... TO`) and
//!   DataFusion statements are refused with `0A000`.
//! - **Simple query protocol.** Several statements per message, answered in order; the
//!   first error ends the message, as in PostgreSQL. `BEGIN`/`START TRANSACTION`,
//!   `COMMIT`, `ROLLBACK`, `SET`, `RESET`, `DISCARD` and `DEALLOCATE` are answered here
//!   without effect (the data is read-only and each query reads the newest commit, so a
//!   transaction brings no isolation between its queries); `SHOW` answers a few standard
//!   parameters ([`show`]).
//! - **Extended query protocol.** Parse/Bind/Describe/Execute with named or unnamed
//!   statements and portals; parameters (`$1`, ...) in text format, bound with the types
//!   DataFusion infers from the query (else the type the client declared, else text).
//!   Parameters may also be in binary format for the common types ([`binary`]); binary
//!   result columns are refused with `0A000`.
//! - **Results** are sent in text format ([`text`]): decimals exactly, as `numeric`;
//!   timestamps with a time zone as `timestamptz` in UTC; see [`text::pg_type`].
//! - **Limits** as for HTTP: at most [`MAX_ROWS`] rows (`54000` beyond), [`QUERY_TIMEOUT`]
//!   per statement (`57014`), and at most [`MAX_CONNECTIONS`] connections (more are
//!   closed at once). A cancel request (psql's Ctrl-C) stops the running query.
//!
//! Errors carry SQLSTATEs: `42601` syntax, `42P01` unknown table, `42703` unknown column,
//! `42883` unknown function, `42000` other planning errors, `0A000` not supported,
//! `22xxx` bad data or parameters, `57014` timeout, `54000` too many rows.

mod binary;
mod text;

use crate::access::{MAX_ROWS, QUERY_TIMEOUT, key_scope};
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures::{Sink, SinkExt, stream};
use om_model::config::ApiKey;
use om_queries::{QueryEngine, Scope};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, METADATA_APPLICATION_NAME,
    METADATA_USER, NoopHandler, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Binds `listen` and serves on it (as [`serve`]) in a task of the current runtime;
/// returns the bound address and the task.
pub async fn spawn(
    listen: &str,
    data: String,
    keys: Vec<ApiKey>,
    config: Arc<om_model::Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((
        addr,
        tokio::spawn(serve(listener, data, keys, config, shutdown)),
    ))
}

/// Serves SQL over the PostgreSQL protocol on `listener` until `shutdown` completes;
/// connections still open then are ended with the runtime.
pub async fn serve(
    listener: tokio::net::TcpListener,
    data: String,
    keys: Vec<ApiKey>,
    config: Arc<om_model::Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handlers = Arc::new(Handlers::new(data, keys, config));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("postgres listener: accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            eprintln!("postgres listener: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let handlers = Arc::clone(&handlers);
        tokio::spawn(async move {
            // A broken connection concerns only its client.
            let _ = pgwire::tokio::process_socket(socket, None, handlers).await;
            drop(slot);
        });
    }
}

/// What every connection shares.
struct Server {
    data: String,
    keys: Vec<ApiKey>,
    config: Arc<om_model::Config>,
    parameters: DefaultServerParameterProvider,
    pids: RandomPidSecretKeyGenerator,
    connections: Arc<ConnectionManager>,
}

/// The principal of a connection, stored in its session at login.
struct Principal(Scope);

/// The handlers pgwire asks for, one set for all connections (connection state lives in
/// pgwire's client: the [`Principal`], statements and portals).
struct Handlers {
    frontend: Arc<Frontend>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    fn new(data: String, keys: Vec<ApiKey>, config: Arc<om_model::Config>) -> Handlers {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        let connections = Arc::new(ConnectionManager::new());
        let server = Arc::new(Server {
            data,
            keys,
            config,
            parameters,
            pids: RandomPidSecretKeyGenerator::default(),
            connections: Arc::clone(&connections),
        });
        Handlers {
            frontend: Arc::new(Frontend {
                parser: Arc::new(Parser {
                    server: Arc::clone(&server),
                }),
                server,
            }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.frontend)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.frontend)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.frontend)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::new(NoopHandler)
    }
}

/// Login and both query protocols.
struct Frontend {
    server: Arc<Server>,
    parser: Arc<Parser>,
}

/// `server_version` as reported at login and by `SHOW` (libpq reads the leading
/// `16.6` as the version number).
const SERVER_VERSION: &str = concat!("16.6 (OpenMonetize ", env!("CARGO_PKG_VERSION"), ")");

#[async_trait]
impl StartupHandler for Frontend {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password)
                if matches!(
                    client.state(),
                    PgWireConnectionState::AuthenticationInProgress
                ) =>
            {
                let password = password.into_password()?;
                let Some(scope) = key_scope(&self.server.keys, &password.password) else {
                    let user = client.metadata().get(METADATA_USER).cloned();
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".to_string(),
                        "28P01".to_string(),
                        format!(
                            "password authentication failed for user \"{}\": the password must be an API key of the server's [[api_keys]]",
                            user.unwrap_or_default()
                        ),
                    ))));
                };
                let (pid, secret) = self.server.pids.generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                let (handle, guard) = self.server.connections.register(pid, secret);
                let session = client.session_extensions();
                session.insert::<Arc<ConnectionHandle>>(handle);
                session.insert(guard);
                session.insert(Principal(scope));
                finish_authentication(client, &self.server.parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl SimpleQueryHandler for Frontend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let scope = principal(client)?;
        let statements = parse(query).map_err(into_pg)?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match Local::of(&statement) {
                Some(local) => {
                    if let Local::Deallocate(Some(name)) = &local {
                        client.portal_store().rm_statement(name);
                    }
                    local.respond(client.metadata())
                }
                None => self.server.query(&scope, statement, None, None).await,
            };
            match response {
                Ok(response) => responses.push(response),
                Err(e) => {
                    responses.push(Response::Error(Box::new(e.into_info())));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement of the extended protocol, as parsed and planned at `Parse`. It is planned
/// again at each `Execute`, against the newest commit.
#[derive(Clone, Debug)]
pub struct Prepared {
    sql: String,
    kind: PreparedKind,
}

#[derive(Clone, Debug)]
enum PreparedKind {
    /// No statement at all.
    Empty,
    /// A statement answered here.
    Local(Local),
    /// A query: the types of `$1`, `$2`, ... as inferred (`None`: not inferred) and the
    /// result's schema.
    Query {
        parameters: Vec<Option<DataType>>,
        schema: SchemaRef,
    },
}

/// Parses and plans statements for the extended protocol.
struct Parser {
    server: Arc<Server>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Prepared>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let scope = principal(client)?;
        let mut statements = parse(sql).map_err(into_pg)?;
        if statements.len() > 1 {
            return Err(into_pg(error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            )));
        }
        let kind = match statements.pop_front() {
            None => PreparedKind::Empty,
            Some(statement) => match Local::of(&statement) {
                Some(local) => PreparedKind::Local(local),
                None => {
                    let (_, plan) = bounded(self.server.plan(&scope, statement))
                        .await
                        .map_err(into_pg)?;
                    PreparedKind::Query {
                        parameters: parameter_types(&plan).map_err(into_pg)?,
                        schema: Arc::clone(plan.schema().inner()),
                    }
                }
            },
        };
        Ok(Prepared {
            sql: sql.to_string(),
            kind,
        })
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(match &statement.kind {
            PreparedKind::Query { parameters, .. } => parameters
                .iter()
                .map(|p| p.as_ref().map_or(Type::UNKNOWN, text::pg_type))
                .collect(),
            _ => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = match &statement.kind {
            PreparedKind::Query { schema, .. } => field_infos(schema, format),
            PreparedKind::Local(Local::Show(name)) => field_infos(&show_schema(name), format),
            _ => Ok(Vec::new()),
        };
        fields.map_err(into_pg)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Frontend {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let scope = principal(client)?;
        let prepared = &portal.statement.statement;
        match &prepared.kind {
            PreparedKind::Empty => Ok(Response::EmptyQuery),
            PreparedKind::Local(local) => {
                match local {
                    Local::Show(name) => {
                        // Refuses binary format as for queries.
                        field_infos(&show_schema(name), Some(&portal.result_column_format))
                            .map_err(into_pg)?;
                    }
                    Local::Deallocate(Some(name)) => client.portal_store().rm_statement(name),
                    _ => {}
                }
                local.respond(client.metadata()).map_err(into_pg)
            }
            PreparedKind::Query { parameters, .. } => {
                let values = bind(portal, parameters).map_err(into_pg)?;
                let statement = parse(&prepared.sql)
                    .map_err(into_pg)?
                    .pop_front()
                    .expect("one statement, as at Parse");
                self.server
                    .query(
                        &scope,
                        statement,
                        Some(values),
                        Some(&portal.result_column_format),
                    )
                    .await
                    .map_err(into_pg)
            }
        }
    }
}

impl Server {
    /// Opens `scope`'s session over the newest commit and plans `statement` in it; only
    /// queries pass.
    async fn plan(
        &self,
        scope: &Scope,
        statement: Statement,
    ) -> Result<(QueryEngine, LogicalPlan), SqlError> {
        let engine =
            QueryEngine::open_with_config(&self.data, scope.clone(), Arc::clone(&self.config))
                .await
                .map_err(|e| error("58030", format!("reading the tables: {e}")))?;
        let plan = engine
            .context()
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| datafusion_error(&e))?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| datafusion_error(&e))?;
        Ok((engine, plan))
    }

    /// Runs a query statement (with `parameters` bound) and encodes its result, with the
    /// column formats of `formats` (text when `None`).
    async fn query(
        &self,
        scope: &Scope,
        statement: Statement,
        parameters: Option<ParamValues>,
        formats: Option<&Format>,
    ) -> Result<Response, SqlError> {
        let (schema, batches) = bounded(async {
            let (engine, plan) = self.plan(scope, statement).await?;
            let plan = match parameters {
                Some(values) => plan
                    .with_param_values(values)
                    .map_err(|e| datafusion_error(&e))?,
                None => plan,
            };
            let schema = Arc::clone(plan.schema().inner());
            // One row past the limit tells that the limit is exceeded, and stops there.
            let plan = LogicalPlanBuilder::from(plan)
                .limit(0, Some(MAX_ROWS + 1))
                .and_then(|b| b.build())
                .map_err(|e| datafusion_error(&e))?;
            let batches = async {
                engine
                    .context()
                    .execute_logical_plan(plan)
                    .await?
                    .collect()
                    .await
            }
            .await
            .map_err(|e| datafusion_error(&e))?;
            Ok((schema, batches))
        })
        .await?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > MAX_ROWS {
            return Err(error(
                "54000",
                format!("the result has more than {MAX_ROWS} rows; add a LIMIT or aggregate"),
            ));
        }
        let fields = Arc::new(field_infos(&schema, formats)?);
        Ok(Response::Query(encode(fields, &batches)?))
    }
}

/// `fut` bounded by [`QUERY_TIMEOUT`].
async fn bounded<T>(fut: impl Future<Output = Result<T, SqlError>>) -> Result<T, SqlError> {
    tokio::time::timeout(QUERY_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(error(
                "57014",
                format!(
                    "canceling statement due to statement timeout ({} s)",
                    QUERY_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// The connection's principal (set at login; pgwire runs no query before).
fn principal<C: ClientInfo>(client: &C) -> PgWireResult<Scope> {
    client
        .session_extensions()
        .get::<Principal>()
        .map(|p| p.0.clone())
        .ok_or_else(|| into_pg(error("28000", "not authenticated")))
}

/// Splits `sql` into statements (PostgreSQL dialect).
fn parse(sql: &str) -> Result<std::collections::VecDeque<Statement>, SqlError> {
    DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).map_err(|e| datafusion_error(&e))
}

/// A statement answered without DataFusion.
#[derive(Clone, Debug)]
enum Local {
    Begin,
    Commit,
    Rollback,
    Set,
    Reset,
    Discard,
    /// The statement to forget; `None` for `DEALLOCATE ALL`.
    Deallocate(Option<String>),
    /// The parameter, lowercase.
    Show(String),
}

impl Local {
    fn of(statement: &Statement) -> Option<Local> {
        let statement = match statement {
            Statement::Reset(_) => return Some(Local::Reset),
            Statement::Statement(s) => s.as_ref(),
            _ => return None,
        };
        Some(match statement {
            SqlStatement::StartTransaction { .. } => Local::Begin,
            SqlStatement::Commit { .. } => Local::Commit,
            SqlStatement::Rollback { .. } => Local::Rollback,
            SqlStatement::Set(_) => Local::Set,
            SqlStatement::Discard { .. } => Local::Discard,
            SqlStatement::Deallocate { name, .. } => Local::Deallocate(
                (!name.value.eq_ignore_ascii_case("all")).then(|| name.value.clone()),
            ),
            SqlStatement::ShowVariable { variable } => Local::Show(
                variable
                    .iter()
                    .map(|i| i.value.to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => return None,
        })
    }

    fn respond(&self, metadata: &HashMap<String, String>) -> Result<Response, SqlError> {
        Ok(match self {
            Local::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Local::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Local::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Local::Set => Response::Execution(Tag::new("SET")),
            Local::Reset => Response::Execution(Tag::new("RESET")),
            Local::Discard => Response::Execution(Tag::new("DISCARD ALL")),
            Local::Deallocate(None) => Response::Execution(Tag::new("DEALLOCATE ALL")),
            Local::Deallocate(Some(_)) => Response::Execution(Tag::new("DEALLOCATE")),
            Local::Show(name) => {
                let value = show(name, metadata).ok_or_else(|| {
                    error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                let fields = Arc::new(field_infos(&show_schema(name), None)?);
                let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
                encoder
                    .encode_field(&Some(value.as_str()))
                    .map_err(|e| error("XX000", e.to_string()))?;
                let row = encoder.take_row();
                Response::Query(QueryResponse::new(fields, stream::iter([Ok(row)])))
            }
        })
    }
}

/// The value `SHOW name` answers (`name` lowercase), for the parameters clients ask about.
fn show(name: &str, metadata: &HashMap<String, String>) -> Option<String> {
    Some(
        match name {
            "server_version" => SERVER_VERSION,
            "server_version_num" => "160006",
            "server_encoding" | "client_encoding" => "UTF8",
            "datestyle" => "ISO, MDY",
            "timezone" => "Etc/UTC",
            "intervalstyle" => "postgres",
            "transaction isolation level" | "transaction_isolation" => "read committed",
            "default_transaction_isolation" => "read committed",
            "transaction_read_only" | "default_transaction_read_only" => "on",
            "standard_conforming_strings" | "integer_datetimes" => "on",
            "is_superuser" => "off",
            "search_path" => "public",
            "max_identifier_length" => "63",
            "application_name" => metadata
                .get(METADATA_APPLICATION_NAME)
                .map_or("", String::as_str),
            _ => return None,
        }
        .to_string(),
    )
}

/// The one text column of a `SHOW` answer.
fn show_schema(name: &str) -> SchemaRef {
    let column = match name {
        "transaction isolation level" => "transaction_isolation",
        other => other,
    };
    Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        column,
        DataType::Utf8,
        true,
    )]))
}

/// The types of `$1`, `$2`, ... in `plan` (`None`: not inferred).
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, SqlError> {
    let found = plan
        .get_parameter_types()
        .map_err(|e| datafusion_error(&e))?;
    let mut types = Vec::new();
    for (name, data_type) in found {
        let index = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                error(
                    "42601",
                    format!("parameter {name}: use positional parameters $1, $2, ..."),
                )
            })?;
        if types.len() < index {
            types.resize(index, None);
        }
        types[index - 1] = data_type;
    }
    Ok(types)
}

/// The portal's text parameters as values of the statement's parameter types.
fn bind(portal: &Portal<Prepared>, types: &[Option<DataType>]) -> Result<ParamValues, SqlError> {
    if portal.parameters.len() != types.len() {
        return Err(error(
            "08P01",
            format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                portal.parameters.len(),
                types.len()
            ),
        ));
    }
    let declared = &portal.statement.parameter_types;
    let mut values = Vec::with_capacity(types.len());
    for (i, (value, inferred)) in portal.parameters.iter().zip(types).enumerate() {
        let data_type = inferred.clone().unwrap_or_else(|| {
            declared
                .get(i)
                .cloned()
                .flatten()
                .map_or(DataType::Utf8, |t| text::arrow_type(&t))
        });
        let n = i + 1;
        let value = match value {
            None => ScalarValue::try_from(&data_type).map_err(|e| datafusion_error(&e))?,
            Some(bytes) if is_binary(&portal.parameter_format, i) => {
                let declared = declared.get(i).cloned().flatten().ok_or_else(|| {
                    error(
                        "0A000",
                        format!("parameter ${n} is in binary format without a declared type"),
                    )
                })?;
                binary::value(&declared, bytes)
                    .map_err(|e| error("22P03", format!("parameter ${n}: {e}")))?
                    .cast_to(&data_type)
                    .map_err(|e| {
                        error(
                            "22P02",
                            format!(
                                "parameter ${n} is not a valid {data_type}: {}",
                                e.find_root()
                            ),
                        )
                    })?
            }
            Some(bytes) => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| error("22021", format!("parameter ${n} is not valid UTF-8")))?;
                ScalarValue::try_from_string(text.to_string(), &data_type).map_err(|e| {
                    error(
                        "22P02",
                        format!(
                            "parameter ${n}: {text:?} is not a valid {data_type}: {}",
                            e.find_root()
                        ),
                    )
                })?
            }
        };
        values.push(value);
    }
    Ok(ParamValues::from(values))
}

/// Whether column or parameter `i` is in binary format (a short list of codes counts as
/// text beyond its end, where PostgreSQL would have refused the message).
fn is_binary(format: &Format, i: usize) -> bool {
    match format {
        Format::UnifiedText => false,
        Format::UnifiedBinary => true,
        Format::Individual(codes) => codes
            .get(i)
            .is_some_and(|c| FieldFormat::from(*c) == FieldFormat::Binary),
    }
}

/// The row description of `schema`; binary columns are refused.
fn field_infos(schema: &Schema, formats: Option<&Format>) -> Result<Vec<FieldInfo>, SqlError> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if formats.is_some_and(|formats| is_binary(formats, i)) {
                return Err(error(
                    "0A000",
                    format!(
                        "column \"{}\" is requested in binary format; only text result format is supported",
                        f.name()
                    ),
                ));
            }
            Ok(FieldInfo::new(
                f.name().clone(),
                None,
                None,
                text::pg_type(f.data_type()),
                FieldFormat::Text,
            ))
        })
        .collect()
}

/// The rows of `batches` in text format.
fn encode(fields: Arc<Vec<FieldInfo>>, batches: &[RecordBatch]) -> Result<QueryResponse, SqlError> {
    let failed = |e: &dyn std::fmt::Display| error("XX000", format!("encoding the result: {e}"));
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let mut cell = String::new();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(text::prepare)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(&e))?;
        let nulls: Vec<_> = columns.iter().map(|c| c.logical_nulls()).collect();
        for row in 0..batch.num_rows() {
            for (column, nulls) in columns.iter().zip(&nulls) {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    encoder.encode_field(&None::<&str>)
                } else {
                    cell.clear();
                    text::write_value(column.as_ref(), row, &mut cell).map_err(|e| failed(&e))?;
                    encoder.encode_field(&Some(cell.as_str()))
                }
                .map_err(|e| failed(&e))?;
            }
            rows.push(Ok(encoder.take_row()));
        }
    }
    Ok(QueryResponse::new(fields, stream::iter(rows)))
}

/// An error answered to the client: an `ERROR` with a SQLSTATE and a message.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
struct SqlError {
    code: &'static str,
    message: String,
}

impl SqlError {
    fn into_info(self) -> ErrorInfo {
        ErrorInfo::new("ERROR".to_string(), self.code.to_string(), self.message)
    }
}

fn error(code: &'static str, message: impl Into<String>) -> SqlError {
    SqlError {
        code,
        message: message.into(),
    }
}

fn into_pg(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(e.into_info()))
}

/// A DataFusion error with the SQLSTATE of its root cause.
fn datafusion_error(e: &DataFusionError) -> SqlError {
    let root = e.find_root();
    let code = match root {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::Plan(m) if m.contains("not supported") => "0A000",
        DataFusionError::Plan(m) if m.contains("table function") => "42883",
        DataFusionError::Plan(m) if m.contains("table '") && m.contains("not found") => "42P01",
        DataFusionError::Plan(m) if m.contains("Invalid function") => "42883",
        DataFusionError::SchemaError(..) => "42703",
        DataFusionError::Plan(_) => "42000",
        DataFusionError::ArrowError(e, _)
            if matches!(e.as_ref(), arrow::error::ArrowError::DivideByZero) =>
        {
            "22012"
        }
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => "22000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        _ => "XX000",
    };
    error(code, e.strip_backtrace())
}
