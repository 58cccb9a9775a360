//! The test harness: every integration test talks HTTP to a real `berth serve` process
//! on a loopback port, with its own temporary data directory.
//!
//! `BERTH_TEST_EXTERNAL_URL` points the suite at an already running registry instead
//! (used to compare behaviour with the CNCF distribution registry); tests that need to
//! restart or kill the server skip themselves loudly in that mode.
//!
//! `BERTH_TEST_METADATA=postgres` (with `BERTH_TEST_POSTGRES_URL`, a superuser URL)
//! gives every server a fresh PostgreSQL database of its own instead of SQLite in its
//! data directory, so the whole suite runs on the other engine; [`Builder::postgres`]
//! does the same for one test.
//!
//! `BERTH_TEST_STORAGE=s3` gives every spawned server the S3 blob store named by
//! `BERTH_TEST_S3_*` (tests/services/start.sh), each with a fresh key prefix. Tests
//! that look at files in the data directory only make sense with `fs`.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password of the `admin` account that a registry started with
/// [`Builder::auth`] creates at first start (`BERTH_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "admin-test-password";

pub struct TestApp {
    /// e.g. `http://127.0.0.1:41234`, no trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    child: Option<Child>,
    port: u16,
    env: Vec<(String, String)>,
    data_dir: Option<tempfile::TempDir>,
    /// A replica's: the data directory of the app it was started beside.
    shared_dir: Option<PathBuf>,
    /// Authentication on (no `--no-auth`); `admin` has [`ADMIN_PASSWORD`].
    auth: bool,
    /// The server's PostgreSQL database, dropped after the server stopped.
    postgres: Option<PgDatabase>,
}

pub struct Builder {
    env: Vec<(String, String)>,
    auth: bool,
    postgres: bool,
}

/// A database of its own on the test PostgreSQL server, dropped with this value.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

/// `BERTH_TEST_POSTGRES_URL`, or `None` after a loud skip notice (a failure with
/// `BERTH_TEST_REQUIRE_SERVICES=1`).
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("BERTH_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{test}: BERTH_TEST_REQUIRE_SERVICES=1 but BERTH_TEST_POSTGRES_URL is not set")
        }
        _ => {
            eprintln!(
                "SKIPPED: {test}: BERTH_TEST_POSTGRES_URL is not set (tests/services/start.sh)"
            );
            None
        }
    }
}

/// Whether every server of this run uses PostgreSQL.
fn postgres_everywhere() -> bool {
    std::env::var("BERTH_TEST_METADATA").as_deref() == Ok("postgres")
}

/// `url` with its database name replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let base = if rest.contains('/') {
        base.rsplit_once('/').unwrap().0
    } else {
        base
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl PgDatabase {
    /// A fresh database for `test` and its URL, or `None` (skipped) as
    /// [`postgres_url`] says.
    pub async fn fresh(test: &str) -> Option<(PgDatabase, String)> {
        Some(Self::create(&postgres_url(test)?).await)
    }

    /// Creates the database; its URL.
    async fn create(admin_url: &str) -> (PgDatabase, String) {
        use sqlx::Connection;
        let name = format!("berth_it_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connecting to BERTH_TEST_POSTGRES_URL");
        create_database(&mut c, &name).await;
        let url = with_database(admin_url, &name);
        (
            PgDatabase {
                admin_url: admin_url.to_string(),
                name,
            },
            url,
        )
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Inside the test's runtime: a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut c).await;
                }
            })
        })
        .join();
    }
}

/// The `BERTH_STORAGE__*` variables for the test S3 server with a fresh key prefix, or
/// `None` when `BERTH_TEST_S3_*` is not set (then loud, or a failure with
/// `BERTH_TEST_REQUIRE_SERVICES=1`).
pub fn s3_storage_env() -> Option<Vec<(String, String)>> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(bucket), Some(key), Some(secret)) = (
        var("BERTH_TEST_S3_ENDPOINT"),
        var("BERTH_TEST_S3_BUCKET"),
        var("BERTH_TEST_S3_ACCESS_KEY_ID"),
        var("BERTH_TEST_S3_SECRET_ACCESS_KEY"),
    ) else {
        if std::env::var("BERTH_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("BERTH_TEST_REQUIRE_SERVICES=1 but BERTH_TEST_S3_* is not set");
        }
        eprintln!("\n*** SKIPPED: no S3 server (BERTH_TEST_S3_* unset; see tests/services/start.sh) ***\n");
        return None;
    };
    let region = var("BERTH_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into());
    let prefix = format!("it-{}", uuid::Uuid::new_v4());
    Some(
        [
            ("BERTH_STORAGE__BACKEND", "s3".to_string()),
            ("BERTH_STORAGE__S3__ENDPOINT", endpoint),
            ("BERTH_STORAGE__S3__REGION", region),
            ("BERTH_STORAGE__S3__BUCKET", bucket),
            ("BERTH_STORAGE__S3__PREFIX", prefix),
            ("BERTH_STORAGE__S3__ACCESS_KEY_ID", key),
            ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", secret),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    )
}

impl Builder {
    /// Uses the test S3 server for blobs (see [`s3_storage_env`]); `None` when there
    /// is none (the caller skips).
    pub fn s3(self) -> Option<Self> {
        Some(self.s3_env(s3_storage_env()?))
    }

    fn s3_env(mut self, vars: Vec<(String, String)>) -> Self {
        // Explicit settings of the test win over the defaults given here.
        let mut vars = vars;
        vars.retain(|(k, _)| !self.env.iter().any(|(e, _)| e == k));
        self.env.splice(0..0, vars);
        self
    }

    /// Sets a `BERTH_*` environment variable (e.g. `BERTH_LIMITS__MANIFEST_MAX_BYTES`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the registry with authentication on (no `--no-auth`), as in production:
    /// the first start creates `admin` with the password [`ADMIN_PASSWORD`].
    pub fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    /// Metadata in a fresh PostgreSQL database (as `BERTH_TEST_METADATA=postgres` does
    /// for every test); start it with [`Builder::start_postgres`].
    pub fn postgres(mut self) -> Self {
        self.postgres = true;
        self
    }

    /// [`Builder::postgres`] and start; `None` (skipped) without a test server.
    pub async fn start_postgres(self, test: &str) -> Option<TestApp> {
        postgres_url(test)?;
        Some(self.postgres().start().await)
    }

    pub async fn start(self) -> TestApp {
        if let Ok(url) = std::env::var("BERTH_TEST_EXTERNAL_URL") {
            return TestApp {
                base: url.trim_end_matches('/').to_string(),
                client: client(),
                child: None,
                port: 0,
                env: self.env,
                data_dir: None,
                shared_dir: None,
                auth: self.auth,
                postgres: None,
            };
        }
        let mut this = self;
        if std::env::var("BERTH_TEST_STORAGE").as_deref() == Ok("s3")
            && !this.env.iter().any(|(k, _)| k == "BERTH_STORAGE__BACKEND")
        {
            let vars = s3_storage_env().expect("BERTH_TEST_STORAGE=s3 needs BERTH_TEST_S3_*");
            this = this.s3_env(vars);
        }
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let port = free_port();
        let mut env = this.env;
        let mut postgres = None;
        if this.postgres || postgres_everywhere() {
            let admin_url = postgres_url("BERTH_TEST_METADATA=postgres")
                .expect("PostgreSQL metadata asked for, BERTH_TEST_POSTGRES_URL not set");
            let (db, url) = PgDatabase::create(&admin_url).await;
            // The CLI commands run next to the server get it too (TestApp::cli).
            env.push(("BERTH_METADATA__URL".into(), url));
            postgres = Some(db);
        }
        let mut app = TestApp {
            base: format!("http://127.0.0.1:{port}"),
            client: client(),
            child: None,
            port,
            env,
            data_dir: Some(data_dir),
            shared_dir: None,
            auth: this.auth,
            postgres,
        };
        app.spawn().await;
        app
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestApp {
    pub fn builder() -> Builder {
        Builder {
            env: Vec::new(),
            auth: false,
            postgres: false,
        }
    }

    /// A fresh, empty, open (no auth) registry.
    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    /// Process id of the running server (to read its memory use).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The `BERTH_*` variables the server runs with (for commands run beside it).
    pub fn env_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the server keeps its metadata in PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn is_external(&self) -> bool {
        self.data_dir.is_none() && self.shared_dir.is_none()
    }

    pub fn data_dir(&self) -> &Path {
        match (&self.data_dir, &self.shared_dir) {
            (Some(d), _) => d.path(),
            (None, Some(d)) => d,
            (None, None) => panic!("external registry has no data dir"),
        }
    }

    /// Another `berth serve` on its own port, with this one's data directory (blob
    /// store) and metadata database: a second replica. Drop it before this app.
    pub async fn start_replica(&self) -> TestApp {
        assert!(
            !self.is_external(),
            "cannot add a replica to an external registry"
        );
        let port = free_port();
        let mut app = TestApp {
            base: format!("http://127.0.0.1:{port}"),
            client: client(),
            child: None,
            port,
            env: self.env.clone(),
            data_dir: None,
            shared_dir: Some(self.data_dir().to_path_buf()),
            auth: self.auth,
            postgres: None,
        };
        app.spawn().await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The `BERTH_STORAGE__*` variables the server got (the S3 store, if any), for
    /// commands that must open the same storage.
    pub fn storage_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(k, _)| k.starts_with("BERTH_STORAGE__"))
            .cloned()
            .collect()
    }

    /// The server's S3 blob store, opened from [`TestApp::storage_env`]; `None` on fs.
    pub fn s3_store(&self) -> Option<blobstore::S3BlobStore> {
        let env = self.storage_env();
        let var = |k: &str| {
            env.iter()
                .find(|(e, _)| e == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if var("BERTH_STORAGE__BACKEND") != "s3" {
            return None;
        }
        let store = blobstore::S3BlobStore::new(blobstore::S3Config {
            endpoint: var("BERTH_STORAGE__S3__ENDPOINT"),
            region: var("BERTH_STORAGE__S3__REGION"),
            bucket: var("BERTH_STORAGE__S3__BUCKET"),
            prefix: var("BERTH_STORAGE__S3__PREFIX"),
            access_key_id: var("BERTH_STORAGE__S3__ACCESS_KEY_ID"),
            secret_access_key: var("BERTH_STORAGE__S3__SECRET_ACCESS_KEY"),
            max_retries: 0,
            ..blobstore::S3Config::default()
        });
        Some(store.expect("the test S3 configuration is valid"))
    }

    /// True when the registry was started with [`Builder::auth`].
    pub fn auth_enabled(&self) -> bool {
        self.auth
    }

    /// Runs `berth ARGS… --data-dir <this app's data dir>` (the same binary and `BERTH_*`
    /// environment as the server, while it runs), with `stdin` as standard input when
    /// given; returns its exit status and output.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("RUST_LOG", "warn")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn berth CLI");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).expect("write CLI stdin");
        }
        child.wait_with_output().expect("wait for berth CLI")
    }

    /// Like [`TestApp::cli`], panicking with its output unless it exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "berth {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("CLI output is UTF-8")
    }

    /// A client that sends `user:password` as HTTP Basic credentials with every request
    /// (assign it to `app.client` to run the conformance helpers as that user).
    pub fn basic_client(&self, user: &str, password: &str) -> reqwest::Client {
        use base64::Engine;
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&value).unwrap();
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap()
    }

    async fn spawn(&mut self) {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("BERTH_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if self.auth {
            cmd.env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
        } else {
            cmd.arg("--no-auth");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn berth"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "berth did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL the server (no chance to clean up), then start it again on the same port
    /// and data directory.
    pub async fn kill_and_restart(&mut self) {
        assert!(!self.is_external(), "cannot restart an external registry");
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn().await;
    }

    /// Sets a `BERTH_*` variable for the next (re)start and CLI runs.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// SIGKILL the server (no chance to clean up) and wait for it to die; `respawn`
    /// starts it again.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running server");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM the server and wait for it to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running server");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        child.wait().unwrap()
    }

    pub async fn restart(&mut self) {
        self.terminate();
        self.spawn().await;
    }

    /// Starts the server again (same port and data directory) after `terminate()`.
    pub async fn respawn(&mut self) {
        assert!(!self.is_external(), "cannot restart an external registry");
        assert!(self.child.is_none(), "the server is still running");
        self.spawn().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The data directory goes with its TempDir; the bucket's prefix is emptied here
        // (best effort: blobs and sessions, the bulk of it). Only when the server talked
        // to the S3 server directly: a test's relay runs on the runtime this blocks.
        let direct = std::env::var("BERTH_TEST_S3_ENDPOINT").ok();
        let endpoint = self
            .env
            .iter()
            .rfind(|(k, _)| k == "BERTH_STORAGE__S3__ENDPOINT")
            .map(|(_, v)| v.clone());
        if let Some(store) = self.s3_store().filter(|_| endpoint == direct) {
            let _ = std::thread::spawn(move || {
                use blobstore::BlobStore;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for b in store.list().await.unwrap_or_default() {
                        let _ = store.delete(&b.digest).await;
                    }
                    for u in store.uploads().await.unwrap_or_default() {
                        let _ = store.upload_cancel(u.id).await;
                    }
                    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
                    let _ = store.clean_temporary(later).await;
                });
            })
            .join();
        }
    }
}

/// Creates `name` with a natural-language default collation where the server can (ICU,
/// PostgreSQL 15+), under which `ORDER BY` is not byte order: listings must still page
/// in byte order, which only the schema's `COLLATE "C"` gives.
async fn create_database(c: &mut sqlx::PgConnection, name: &str) {
    let icu = format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
         LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
    );
    if sqlx::raw_sql(&icu).execute(&mut *c).await.is_err() {
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut *c)
            .await
            .unwrap();
    }
}
