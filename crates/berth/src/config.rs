//! Configuration: defaults, then a TOML file, then `BERTH_SECTION__KEY` environment
//! variables, then command-line flags. `berth.example.toml` at the repository root
//! documents every key with its default; a test keeps the two in step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub storage: Storage,
    pub metadata: MetadataConfig,
    pub auth: Auth,
    pub gc: Gc,
    pub limits: Limits,
    pub log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Address to listen on.
    pub listen: String,
    /// Public base URL (scheme and host) used in links; empty: derived from the request.
    pub public_url: String,
    /// PEM certificate chain and key; both set: serve HTTPS.
    pub tls_cert: String,
    pub tls_key: String,
    /// How long a shutdown waits for in-flight requests before closing them.
    pub shutdown_timeout: DurationStr,
    /// How long a client may take to send a request's headers (slow-loris defence);
    /// also how long an idle HTTP/1.1 connection stays open.
    pub header_timeout: DurationStr,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "0.0.0.0:5000".into(),
            public_url: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            shutdown_timeout: DurationStr::from("30s"),
            header_timeout: DurationStr::from("30s"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    pub data_dir: PathBuf,
    /// "fs" or "s3".
    pub backend: String,
    pub s3: S3,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("./berth-data"),
            backend: "fs".into(),
            s3: S3::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3 {
    /// e.g. `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:3900`; empty: AWS
    /// for `region`.
    pub endpoint: String,
    /// Empty: `us-east-1` (or `AWS_DEFAULT_REGION`).
    pub region: String,
    pub bucket: String,
    /// Every key starts with `<prefix>/`: several registries can share a bucket.
    pub prefix: String,
    /// Empty: from `credentials_file`, else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// Empty: from `credentials_file`, else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// An AWS credentials file, or a file holding only the secret access key.
    pub credentials_file: String,
    /// `https://<bucket>.<host>/` instead of path-style `https://<host>/<bucket>/`.
    pub virtual_hosted_style: bool,
    /// Plain HTTP to a non-loopback endpoint.
    pub allow_http: bool,
    /// Blob GETs answer 307 to a presigned URL of the object.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_ttl: DurationStr,
}

impl Default for S3 {
    fn default() -> Self {
        S3 {
            endpoint: String::new(),
            region: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            credentials_file: String::new(),
            virtual_hosted_style: false,
            allow_http: false,
            redirect: false,
            redirect_ttl: DurationStr::from("20m"),
        }
    }
}

impl Storage {
    /// How long blob GETs' presigned URLs live, when they are redirected at all.
    pub fn redirect_ttl(&self) -> Option<Duration> {
        (self.backend == "s3" && self.s3.redirect).then(|| self.s3.redirect_ttl.get())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// Empty: SQLite inside the data directory; `postgres://…`: PostgreSQL.
    pub url: String,
    /// PostgreSQL: connections this process keeps at most (each replica its own pool).
    pub max_connections: u32,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            url: String::new(),
            max_connections: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub enabled: bool,
    /// The `service` of the Docker token flow (the JWT audience).
    pub service: String,
    /// Lifetime of bearer tokens issued by `/auth/token`.
    pub token_ttl: DurationStr,
    /// How long a web UI sign-in lasts.
    pub session_ttl: DurationStr,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            enabled: true,
            service: "berth".into(),
            token_ttl: DurationStr::from("5m"),
            session_ttl: DurationStr::from("12h"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Gc {
    /// How often the collector runs; 0s: never on its own.
    pub interval: DurationStr,
    /// Nothing pushed, mounted or referenced more recently than this is deleted.
    pub grace_period: DurationStr,
    /// Manifests no tag reaches: "keep" or "delete".
    pub untagged: crate::gc::Untagged,
    /// Upload sessions idle this long are cancelled.
    pub upload_expiry: DurationStr,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            interval: DurationStr::from("48h"),
            grace_period: DurationStr::from("1h"),
            untagged: crate::gc::Untagged::Keep,
            upload_expiry: DurationStr::from("24h"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub manifest_max_bytes: u64,
    /// Largest page a tags list or catalog request returns.
    pub page_max: u32,
    /// A request body that sends nothing for this long is abandoned (a stalled
    /// upload's chunk is rolled back).
    pub body_idle_timeout: DurationStr,
    /// Open upload sessions one account (or, without authentication, one client
    /// address) may have at once.
    pub uploads_per_user: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest_max_bytes: 4 * 1024 * 1024,
            page_max: 10_000,
            body_idle_timeout: DurationStr::from("60s"),
            uploads_per_user: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A tracing filter (`info`, `berth=debug,tower_http=info`); `RUST_LOG` wins.
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// A duration written as `0s`, `90s`, `30m`, `48h`, `7d`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "String", into = "String")]
pub struct DurationStr(String, #[serde(skip)] Duration);

impl DurationStr {
    pub fn get(&self) -> Duration {
        self.1
    }
}

impl From<&str> for DurationStr {
    fn from(s: &str) -> Self {
        DurationStr::try_from(s.to_string()).expect("valid built-in duration")
    }
}

impl TryFrom<String> for DurationStr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let d = parse_duration(&s)?;
        Ok(DurationStr(s, d))
    }
}

impl From<DurationStr> for String {
    fn from(d: DurationStr) -> String {
        d.0
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. 0s, 90s, 30m, 48h, 7d"))
}

/// A size written `500MB`, `10GiB`, `1.5 TB` or a plain number of bytes. Decimal units
/// (KB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write e.g. 500MB, 10GiB or 1073741824"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = (n * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Values given on the command line; `None` leaves the configured value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub no_auth: bool,
}

impl Config {
    /// Loads the configuration with its full precedence chain.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        // Only `BERTH_SECTION__KEY` names are configuration; other BERTH_* variables
        // (BERTH_ADMIN_PASSWORD) are read where they are used.
        fig = fig.merge(
            Env::prefixed("BERTH_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let mut cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
        })?;
        if let Some(l) = &overrides.listen {
            cfg.server.listen = l.clone();
        }
        if let Some(d) = &overrides.data_dir {
            cfg.storage.data_dir = d.clone();
        }
        if overrides.no_auth {
            cfg.auth.enabled = false;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "server.listen {:?} is not an address like 0.0.0.0:5000",
                    self.server.listen
                )
            })?;
        let url = &self.server.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            bail!("server.public_url must start with http:// or https://");
        }
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            bail!("server.tls_cert and server.tls_key must be set together");
        }
        match self.storage.backend.as_str() {
            "fs" | "s3" => {}
            other => bail!("storage.backend must be \"fs\" or \"s3\", not {other:?}"),
        }
        if self.storage.backend == "s3" {
            let s3 = &self.storage.s3;
            if s3.bucket.is_empty() {
                bail!("storage.s3.bucket must be set when storage.backend = \"s3\"");
            }
            if !(s3.endpoint.is_empty()
                || s3.endpoint.starts_with("https://")
                || s3.endpoint.starts_with("http://"))
            {
                bail!(
                    "storage.s3.endpoint must start with https:// or http:// (or be empty for AWS)"
                );
            }
            if !s3
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                bail!("storage.s3.prefix may only hold letters, digits and -_./");
            }
            let ttl = s3.redirect_ttl.get();
            if ttl < Duration::from_secs(10) || ttl > Duration::from_secs(7 * 86400) {
                bail!("storage.s3.redirect_ttl must be between 10s and 7d (what S3 signs)");
            }
        }
        match self.log.format.as_str() {
            "text" | "json" => {}
            other => bail!("log.format must be \"text\" or \"json\", not {other:?}"),
        }
        if self.auth.service.is_empty() || self.auth.service.contains('"') {
            bail!("auth.service must be a non-empty name without quotes");
        }
        if self.server.header_timeout.get() < Duration::from_millis(100) {
            bail!("server.header_timeout must be at least 100ms");
        }
        if self.auth.session_ttl.get() < Duration::from_secs(60) {
            bail!("auth.session_ttl must be at least 60s");
        }
        if self.auth.token_ttl.get() < Duration::from_secs(10) {
            bail!("auth.token_ttl must be at least 10s");
        }
        if self.limits.page_max == 0 {
            bail!("limits.page_max must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2 kib"), Ok(2048));
        assert!(parse_size("ten GB").is_err());
        assert!(parse_size("5 parsecs").unwrap_err().contains("unit"));
    }

    /// The example file parses, and says exactly the defaults.
    #[test]
    fn example_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../berth.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Config = toml::from_str(&text).expect("example parses with no unknown key");
        assert_eq!(parsed, Config::default());
        // Every key of the defaults appears in the example (nothing undocumented).
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let example: toml::Value = toml::from_str(&text).unwrap();
        fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    let p = format!("{prefix}{k}");
                    keys(v, &format!("{p}."), out);
                    out.push(p);
                }
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        keys(&defaults, "", &mut a);
        keys(&example, "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn the_s3_backend_needs_a_bucket() {
        let mut c = Config::default();
        c.storage.backend = "s3".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("storage.s3.bucket"), "{e}");
        c.storage.s3.bucket = "layers".into();
        c.validate().unwrap();
        c.storage.s3.endpoint = "minio:9000".into();
        assert!(c.validate().is_err());
        c.storage.s3.endpoint = "http://minio:9000".into();
        c.storage.s3.redirect_ttl = DurationStr::from("30d");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("redirect_ttl"));
        assert_eq!(c.storage.redirect_ttl(), None);
        c.storage.s3.redirect = true;
        c.storage.s3.redirect_ttl = DurationStr::from("20m");
        assert_eq!(c.storage.redirect_ttl(), Some(Duration::from_secs(1200)));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
    }
}
