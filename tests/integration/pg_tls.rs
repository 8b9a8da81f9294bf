//! The PostgreSQL store over TLS, against the local server: the server is
//! given a certificate for `localhost` and 127.0.0.1 by a CA made for the
//! test, a whole workflow runs with a scheduler whose store address says
//! `sslmode=verify-full&sslrootcert=<that CA>`, its connections are seen
//! to be TLS in `pg_stat_ssl`, and a CA that did not sign the server's
//! certificate, or a name the certificate does not hold, is refused with
//! a clear error.
//!
//! The server's files are made once, in a directory of its data
//! directory (`warren-test-tls`, owned by the server's user, the key
//! 0600), and kept: `ssl_cert_file` and `ssl_key_file` point there from
//! then on, so a later reload finds them, and later or concurrent runs
//! reuse them rather than swap the certificate under each other. Plain
//! connections keep working. The test must run as root (or as the
//! server's user) on the server's machine.

use crate::support::{DEADLINE, Env, drop_store_schema, pg_url};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio_postgres::NoTls;
use warren_scheduler::store::{Store, StoreLocation, postgres::schema_of};
use warren_shared::wire::WorkflowStatus;

/// The directory of the server's test certificate, in its data directory.
const TLS_DIR: &str = "warren-test-tls";
/// A name that the server's certificate does not hold.
const WRONG_NAME: &str = "warren-wrong-name.invalid";

/// The local server as `pg_url()` reaches it.
struct Server {
    user: String,
    password: Option<String>,
    dbname: String,
    host: String,
    port: u16,
}

impl Server {
    fn from_pg_url() -> Server {
        let c: tokio_postgres::Config = pg_url().parse().expect("pg_url parses");
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        Server {
            user: c.get_user().unwrap_or("postgres").to_owned(),
            password: c
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            dbname: c.get_dbname().unwrap_or("postgres").to_owned(),
            host,
            port: c.get_ports().first().copied().unwrap_or(5432),
        }
    }

    /// A URL for `host` with the query `params` (none when empty).
    fn url(&self, host: &str, params: &str) -> StoreLocation {
        let password = self
            .password
            .as_deref()
            .map(|p| format!(":{}", encode(p)))
            .unwrap_or_default();
        let query = if params.is_empty() { "" } else { "?" };
        let url = format!(
            "postgres://{}{password}@{host}:{}/{}{query}{params}",
            encode(&self.user),
            self.port,
            encode(&self.dbname)
        );
        StoreLocation::parse(&url)
    }

    /// libpq's key=value form, with `more` appended.
    fn key_values(&self, more: &str) -> StoreLocation {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let password = self
            .password
            .as_deref()
            .map(|p| format!(" password={}", quote(p)))
            .unwrap_or_default();
        let s = format!(
            "port={} user={}{password} dbname={} {more}",
            self.port,
            quote(&self.user),
            quote(&self.dbname)
        );
        let location = StoreLocation::parse(&s);
        assert!(matches!(location, StoreLocation::Postgres(_)), "{s}");
        location
    }
}

/// Percent-encodes all but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A new CA's certificate, PEM.
fn another_ca() -> String {
    CertifiedIssuer::self_signed(
        ca_params("Warren test: a CA that signed nothing"),
        KeyPair::generate().unwrap(),
    )
    .unwrap()
    .pem()
}

/// `path` written with `text`, `mode` from the start, owned by `owner`.
fn write_owned(path: &Path, text: &str, mode: u32, owner: (u32, u32)) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).unwrap();
}

/// The server's CA certificate, certificate and key in `data_dir`'s
/// [`TLS_DIR`], made when absent: written in a directory of their own,
/// then renamed into place at once, so that a concurrent run sees all
/// three or none. Returns the directory.
fn server_files(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join(TLS_DIR);
    if dir.join("server.key").exists() {
        return dir;
    }
    let meta = std::fs::metadata(data_dir).unwrap_or_else(|e| {
        panic!(
            "the test needs the PostgreSQL server's data directory {} (run it as root on the server's machine): {e}",
            data_dir.display()
        )
    });
    let owner = (meta.uid(), meta.gid());
    let ca = CertifiedIssuer::self_signed(
        ca_params("Warren test CA (warren-tests pg_tls)"),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();

    let staging = data_dir.join(format!(".{TLS_DIR}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .unwrap();
    std::os::unix::fs::chown(&staging, Some(owner.0), Some(owner.1)).unwrap();
    write_owned(&staging.join("ca.crt"), &ca.pem(), 0o644, owner);
    write_owned(&staging.join("server.crt"), &cert.pem(), 0o644, owner);
    write_owned(
        &staging.join("server.key"),
        &key.serialize_pem(),
        0o600,
        owner,
    );
    if let Err(e) = std::fs::rename(&staging, &dir) {
        // Another run got there first: use its files.
        let _ = std::fs::remove_dir_all(&staging);
        assert!(
            dir.join("server.key").exists(),
            "cannot put {} in place: {e}",
            dir.display()
        );
    }
    dir
}

/// A plain connection as the superuser.
async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(), NoTls)
        .await
        .expect("connect to the local PostgreSQL");
    tokio::spawn(conn);
    client
}

/// Points the server at the files in `dir` and reloads its configuration
/// (the same settings every run: several runs agree).
async fn serve_tls(admin: &tokio_postgres::Client, dir: &Path) {
    let file = |name: &str| dir.join(name).display().to_string().replace('\'', "''");
    for statement in [
        "ALTER SYSTEM SET ssl = on".to_owned(),
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", file("server.crt")),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", file("server.key")),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        // One at a time: ALTER SYSTEM refuses to run in a transaction.
        admin.batch_execute(&statement).await.unwrap();
    }
}

/// The store at `location` opened (and closed again), or why not.
async fn try_store(location: &StoreLocation, namespace: &str) -> Result<(), String> {
    let store = Store::connect(location, namespace)
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    Ok(())
}

/// Whether any connection of the namespace's store is TLS (`None` when
/// it has none).
async fn ssl_of(admin: &tokio_postgres::Client, namespace: &str) -> Option<bool> {
    admin
        .query_one(
            "SELECT bool_or(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&format!("warren {}", schema_of(namespace))],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_over_tls_checks_the_server() {
    let mut env = Env::new().await;
    // The scheduler's own addresses say TLS; this one cleans up.
    env.store = StoreLocation::Postgres(pg_url());
    let ns = env.amqp.namespace.clone();
    let server = Server::from_pg_url();
    let admin = admin().await;
    let data_dir: String = admin
        .query_one("SHOW data_directory", &[])
        .await
        .unwrap()
        .get(0);
    let dir = server_files(Path::new(&data_dir));
    let ca = dir.join("ca.crt");
    serve_tls(&admin, &dir).await;

    let verify_full = server.url(
        &server.host,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            encode(&ca.display().to_string())
        ),
    );
    // The reload is taken by new connections once the server has read
    // it: wait until one verifies.
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = try_store(&verify_full, &ns).await {
        assert!(
            Instant::now() < deadline,
            "the server did not present its new certificate within {DEADLINE:?}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ssl_on: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(ssl_on, "on");

    // (a) A whole workflow, the store reached over verify-full.
    let s = env.scheduler(warren_scheduler::SchedulerConfig {
        store: verify_full.clone(),
        ..env.scheduler_config()
    });
    env.builtin_worker("pg-tls-worker");
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [
                {"id": "a", "type": "echo", "input": {"secret": "stored over tls"}},
                {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.secret}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["b"].output, Some(json!("stored over tls")));

    // (b) Every connection of the scheduler (the pool's and the one
    // holding the partition locks) is TLS.
    let row = admin
        .query_one(
            "SELECT count(*), bool_and(s.ssl), min(s.version)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&format!("warren {}", schema_of(&ns))],
        )
        .await
        .unwrap();
    let (connections, all_tls, version): (i64, Option<bool>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    assert!(
        connections >= 2,
        "the pool's and the lock's connections: {connections}"
    );
    assert_eq!(all_tls, Some(true), "every connection is TLS");
    assert!(version.is_some_and(|v| v.starts_with("TLS")));
    s.stop().await;

    // (c) A CA that did not sign the server's certificate: the scheduler
    // does not start, and says why.
    let scratch = tempfile::tempdir().unwrap();
    let other_ca = scratch.path().join("other-ca.pem");
    std::fs::write(&other_ca, another_ca()).unwrap();
    let other = format!(
        "sslmode=verify-full&sslrootcert={}",
        encode(&other_ca.display().to_string())
    );
    let refused = env
        .scheduler(warren_scheduler::SchedulerConfig {
            store: server.url(&server.host, &other),
            ..env.scheduler_config()
        })
        .failure()
        .await
        .to_string();
    assert!(
        refused.contains("not signed by a trusted CA")
            && refused.contains(&other_ca.display().to_string()),
        "{refused}"
    );
    if let Some(p) = &server.password {
        assert!(!refused.contains(&format!(":{p}@")), "{refused}");
    }

    // (d) verify-full against a name the certificate does not hold (the
    // same server, reached through hostaddr) is refused; verify-ca, which
    // checks the chain only, takes it.
    let ca_param = encode(&ca.display().to_string());
    let wrong_name = server.url(
        WRONG_NAME,
        &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca_param}"),
    );
    let refused = env
        .scheduler(warren_scheduler::SchedulerConfig {
            store: wrong_name,
            ..env.scheduler_config()
        })
        .failure()
        .await
        .to_string();
    assert!(
        refused.contains(&format!("not valid for the name {WRONG_NAME}")),
        "{refused}"
    );
    let chain_only = server.key_values(&format!(
        "host={WRONG_NAME} hostaddr=127.0.0.1 sslmode=verify-ca sslrootcert='{}'",
        ca.display()
    ));
    try_store(&chain_only, &ns).await.unwrap();

    // require checks nothing without a CA, as libpq; given a CA file it
    // checks the chain, as libpq does too.
    try_store(&server.url(&server.host, "sslmode=require"), &ns)
        .await
        .unwrap();
    let e = try_store(
        &server.url(&server.host, &other.replace("verify-full", "require")),
        &ns,
    )
    .await
    .unwrap_err();
    assert!(e.contains("not signed by a trusted CA"), "{e}");

    // Without sslmode Warren stays on plain TCP (libpq would prefer);
    // prefer takes the TLS the server offers.
    let plain_ns = format!("{ns}-modes");
    let plain = Store::connect(&server.url(&server.host, ""), &plain_ns)
        .await
        .unwrap();
    assert_eq!(
        ssl_of(&admin, &plain_ns).await,
        Some(false),
        "the default is plain"
    );
    plain.close().await;
    let prefer = Store::connect(&server.url(&server.host, "sslmode=prefer"), &plain_ns)
        .await
        .unwrap();
    assert_eq!(
        ssl_of(&admin, &plain_ns).await,
        Some(true),
        "prefer takes TLS"
    );
    prefer.close().await;
    drop_store_schema(&StoreLocation::Postgres(pg_url()), &plain_ns).await;

    // A CA file that cannot be read stops the start, before connecting.
    let missing = scratch.path().join("missing.pem");
    let e = try_store(
        &server.url(
            &server.host,
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                encode(&missing.display().to_string())
            ),
        ),
        &ns,
    )
    .await
    .unwrap_err();
    assert!(e.contains("cannot read it"), "{e}");

    env.finish().await;
}
