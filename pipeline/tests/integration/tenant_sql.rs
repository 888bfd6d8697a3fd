//! Tenant isolation of SQL sessions (`om_queries::Scope::Tenant`): a tenant's session
//! sees only its own rows in every table, whatever the SQL, and cannot reach the files,
//! the catalog or the session settings. Runs on the small golden case, which has two
//! tenants (`default` and `acme`).

use super::common::{golden_dir, parse_csv};
use om_model::Config;
use om_model::schema::{DERIVED_TABLES, TABLES};
use om_queries::{Format, QueryEngine, Scope, format};
use openmonetize::{RunOptions, Source, run};

fn rows(engine: &QueryEngine, rt: &tokio::runtime::Runtime, sql: &str) -> Vec<Vec<String>> {
    let batches = rt
        .block_on(engine.sql(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    parse_csv(&format(&batches, Format::Csv).unwrap())
        .into_iter()
        .skip(1)
        .collect()
}

#[test]
fn a_tenant_session_sees_only_its_rows() {
    let dir = golden_dir("small");
    let data = "memory://tenant-sql".to_string();
    let config =
        Config::from_toml(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    run(RunOptions {
        progress: false,
        commands: Some(Source::File(dir.join("commands.jsonl"))),
        ..RunOptions::new(
            config.clone(),
            Source::File(dir.join("events.jsonl")),
            data.clone(),
        )
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // With the job's config, which the billing tables (invoices, revenue) need.
    let config = std::sync::Arc::new(config);
    let admin = rt
        .block_on(QueryEngine::open_with_config(
            &data,
            Scope::All,
            std::sync::Arc::clone(&config),
        ))
        .unwrap();
    let acme = rt
        .block_on(QueryEngine::open_with_config(
            &data,
            Scope::Tenant("acme".into()),
            config,
        ))
        .unwrap();

    // Every table, and the billing tables derived from them: the tenant's rows, all of
    // them, and nobody else's.
    let mut seen = 0;
    for table in TABLES.into_iter().chain(DERIVED_TABLES) {
        let mine = rows(&acme, &rt, &format!("SELECT count(*) FROM {table}"));
        let all_acme = rows(
            &admin,
            &rt,
            &format!("SELECT count(*) FROM {table} WHERE tenant_id = 'acme'"),
        );
        assert_eq!(mine, all_acme, "{table}");
        let others = rows(
            &acme,
            &rt,
            &format!("SELECT count(*) FROM {table} WHERE tenant_id IS NULL OR tenant_id <> 'acme'"),
        );
        assert_eq!(others, vec![vec!["0"]], "{table}");
        seen += mine[0][0].parse::<u64>().unwrap();
    }
    assert!(seen > 100, "acme has rows to see");
    let default_rows = rows(
        &admin,
        &rt,
        "SELECT count(*) FROM events WHERE tenant_id = 'default'",
    );
    assert_ne!(
        default_rows,
        vec![vec!["0"]],
        "the other tenant has rows to hide"
    );

    // Crafted SQL: joins, subqueries, UNION, CTEs only ever see the tenant's views.
    for sql in [
        "SELECT DISTINCT tenant_id FROM events UNION SELECT tenant_id FROM usage_windows \
         UNION SELECT tenant_id FROM rejected_events WHERE tenant_id IS NOT NULL",
        "SELECT DISTINCT e.tenant_id FROM events e JOIN credit_balances b ON b.customer_id = e.customer_id",
        "WITH x AS (SELECT * FROM events) SELECT DISTINCT tenant_id FROM x",
        "SELECT DISTINCT tenant_id FROM events WHERE customer_id IN (SELECT customer_id FROM events)",
    ] {
        assert_eq!(rows(&acme, &rt, sql), vec![vec!["acme"]], "{sql}");
    }

    // No catalog, no table functions, no files, no DDL, DML or settings.
    for sql in [
        "SELECT * FROM information_schema.tables",
        "SHOW TABLES",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT * FROM range(3)",
        "SELECT * FROM 'events/e000000-w0.parquet'",
        "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION 'events/'",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE events",
        "INSERT INTO events SELECT * FROM events",
        "SET datafusion.catalog.information_schema = true",
    ] {
        assert!(rt.block_on(acme.sql(sql)).is_err(), "{sql} must be refused");
    }
    // The admin session still can.
    assert!(
        rt.block_on(admin.sql("SELECT * FROM generate_series(1, 3)"))
            .is_ok()
    );
}
