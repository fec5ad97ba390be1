//! The broker's configuration: a TOML file with documented defaults, then
//! environment overrides (`MEV_*`), validated after loading.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything `mev broker` reads at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub broker: BrokerSection,
    pub amqp: AmqpSection,
    pub pki: PkiSection,
    pub pipeline: PipelineSection,
    pub limits: LimitsSection,
    pub deadlines: DeadlinesSection,
    pub http: HttpSection,
    pub store: StoreSection,
}

/// The broker's store (redb behind its redo log, in `broker.data_dir`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// redb's page cache, in MiB (8 to 65536). The broker's memory grows
    /// to about this much plus its batches in flight; redb's own default, 1
    /// GiB, is what a broker kept after a flood of large messages.
    pub cache_mib: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { cache_mib: 64 }
    }
}

impl StoreSection {
    /// The cache in bytes.
    pub fn cache_bytes(&self) -> usize {
        (self.cache_mib as usize) << 20
    }
}

/// The operators' HTTP endpoint: `/metrics`, `/api/status`, `/healthz`,
/// `/readyz` and the dashboard at `/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to listen on (`IP:PORT`; port 0 picks a free one); "" = no
    /// endpoint. Env: MEV_HTTP_LISTEN.
    pub listen: String,
    /// How often queue depths are read from RabbitMQ, in seconds.
    pub queue_poll_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: "127.0.0.1:9464".into(),
            queue_poll_secs: 5,
        }
    }
}

impl HttpSection {
    /// The address to serve on, or `None` when the endpoint is off.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let l = self.listen.trim();
        if l.is_empty() {
            return Ok(None);
        }
        l.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "http.listen {l:?}: use IP:PORT (e.g. \"127.0.0.1:9464\"), or \"\" for no endpoint"
            ))
        })
    }
}

/// Deadline tracking.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlinesSection {
    /// The fraction of the allowed time after which an unanswered request is
    /// at risk and its provider gets a warning notice; 0 = no warnings.
    pub at_risk_fraction: f64,
}

impl Default for DeadlinesSection {
    fn default() -> Self {
        DeadlinesSection {
            at_risk_fraction: 0.8,
        }
    }
}

/// Who the broker is and where its data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// The exchange's id, bound in its certificate (`urn:mev:agency:<id>`). Env: MEV_BROKER_ID.
    pub id: String,
    /// Prefix of every exchange and queue name. Env: MEV_NAMESPACE.
    pub namespace: String,
    /// The register directory (register.toml, payloads/). Env: MEV_REGISTER.
    pub register: PathBuf,
    /// Where the store lives. Env: MEV_DATA_DIR.
    pub data_dir: PathBuf,
    /// How many days accepted message ids are remembered to drop copies.
    pub dedup_retention_days: u32,
}

/// The RabbitMQ connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSection {
    /// Env: MEV_AMQP_URL (or AMQP_URL).
    pub url: String,
    /// Unacked ingress deliveries at most.
    pub prefetch: u16,
    /// Declare quorum queues (durable, replicated).
    pub quorum: bool,
    /// Messages per inbox at most (reject-publish past it); 0 = unbounded.
    pub max_inbox_length: u32,
    /// For `amqps://`: PEM file of the CA that issued RabbitMQ's certificate
    /// (only it is trusted). "" = none. Env: MEV_AMQP_TLS_CA.
    pub tls_ca: PathBuf,
    /// Client certificate (PEM chain) and PKCS#8 key for listeners that ask
    /// for one; both or neither. Env: MEV_AMQP_TLS_CERT, MEV_AMQP_TLS_KEY.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl AmqpSection {
    /// The transport's TLS settings, read from the files named here.
    pub fn tls(&self) -> anyhow::Result<Option<mev_transport::amqp::AmqpTls>> {
        use anyhow::Context as _;
        if self.tls_ca.as_os_str().is_empty() {
            return Ok(None);
        }
        let client = (!self.tls_cert.as_os_str().is_empty())
            .then_some((self.tls_cert.as_path(), self.tls_key.as_path()));
        mev_transport::amqp::AmqpTls::from_files(&self.tls_ca, client)
            .map(Some)
            .context("amqp TLS files")
    }
}

/// The broker's key and certificate, and what it trusts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiSection {
    /// PEM file of trusted CA certificates. Env: MEV_PKI_CA.
    pub ca: PathBuf,
    /// The broker's certificate (PEM, chain). Env: MEV_PKI_CERT.
    pub cert: PathBuf,
    /// The broker's PKCS#8 private key (PEM). Env: MEV_PKI_KEY.
    pub key: PathBuf,
    /// CRL files (PEM), reloaded every `crl_refresh_secs`.
    pub crls: Vec<PathBuf>,
    pub crl_refresh_secs: u64,
}

/// Micro-batching of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Deliveries per batch at most (one fsync and one receipt per sender per batch).
    pub batch_size: usize,
    /// How long a batch waits to fill, in milliseconds, while another batch is
    /// in flight; with none in flight a batch goes at once.
    pub batch_window_ms: u64,
}

/// Limits on what the broker accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// The largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// The most items in any repeated field.
    pub max_repeated: usize,
    /// How far `sent_at` may be ahead of the broker's clock, in seconds (0 = unchecked);
    /// a past `sent_at` is never refused, since outboxes deliver late after outages.
    pub max_clock_skew_secs: u64,
    /// Messages a second each agency may send (0 = unlimited); over it, a
    /// message is refused with code 410 so one agency cannot starve the others.
    pub rate_per_agency: f64,
    /// How many messages an agency may send at once above that rate.
    pub rate_burst: u32,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            id: "MEV-EXCHANGE".into(),
            namespace: "mev".into(),
            register: "schemas".into(),
            data_dir: "data".into(),
            dedup_retention_days: 30,
        }
    }
}

impl Default for AmqpSection {
    fn default() -> Self {
        AmqpSection {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefetch: 512,
            quorum: true,
            max_inbox_length: 0,
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

impl Default for PkiSection {
    fn default() -> Self {
        PkiSection {
            ca: "pki/ca.crt".into(),
            cert: "pki/agencies/MEV-EXCHANGE.crt".into(),
            key: "pki/agencies/MEV-EXCHANGE.key".into(),
            crls: vec![],
            crl_refresh_secs: 60,
        }
    }
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            batch_size: 256,
            batch_window_ms: 1,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_message_bytes: 4 * 1024 * 1024,
            max_repeated: 256,
            max_clock_skew_secs: 0,
            rate_per_agency: 0.0,
            rate_burst: 500,
        }
    }
}

/// A config that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}: {problem}")]
    Env { name: &'static str, problem: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Loads `path`, applies `MEV_*` environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: BrokerConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// The default config as commented TOML (`mev broker --print-default-config`).
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&BrokerConfig::default()).unwrap_or_default();
        format!(
            "# mev broker configuration. Every key is optional; shown are the defaults.\n\
             # Environment overrides: MEV_BROKER_ID, MEV_NAMESPACE, MEV_REGISTER, MEV_DATA_DIR,\n\
             # MEV_AMQP_URL (or AMQP_URL), MEV_AMQP_TLS_CA, MEV_AMQP_TLS_CERT, MEV_AMQP_TLS_KEY,\n\
             # MEV_PKI_CA, MEV_PKI_CERT, MEV_PKI_KEY, MEV_HTTP_LISTEN.\n\
             # [store] cache_mib: redb's page cache in MiB (8 to 65536); the broker's memory is\n\
             # about this plus its batches in flight.\n\n{body}"
        )
    }

    /// Applies environment overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("MEV_BROKER_ID") {
            self.broker.id = v;
        }
        if let Some(v) = get("MEV_NAMESPACE") {
            self.broker.namespace = v;
        }
        if let Some(v) = get("MEV_REGISTER") {
            self.broker.register = v.into();
        }
        if let Some(v) = get("MEV_DATA_DIR") {
            self.broker.data_dir = v.into();
        }
        if let Some(v) = get("MEV_AMQP_URL").or_else(|| get("AMQP_URL")) {
            self.amqp.url = v;
        }
        if let Some(v) = get("MEV_AMQP_TLS_CA") {
            self.amqp.tls_ca = v.into();
        }
        if let Some(v) = get("MEV_AMQP_TLS_CERT") {
            self.amqp.tls_cert = v.into();
        }
        if let Some(v) = get("MEV_AMQP_TLS_KEY") {
            self.amqp.tls_key = v.into();
        }
        if let Some(v) = get("MEV_PKI_CA") {
            self.pki.ca = v.into();
        }
        if let Some(v) = get("MEV_PKI_CERT") {
            self.pki.cert = v.into();
        }
        if let Some(v) = get("MEV_PKI_KEY") {
            self.pki.key = v.into();
        }
        if let Some(v) = get("MEV_HTTP_LISTEN") {
            self.http.listen = v;
        }
        Ok(())
    }

    /// Checks values that would make the broker misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ns = &self.broker.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::Invalid(format!(
                "broker.namespace {ns:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        if self.broker.id.trim().is_empty() {
            return Err(ConfigError::Invalid("broker.id is empty".into()));
        }
        if !(self.amqp.url.starts_with("amqp://") || self.amqp.url.starts_with("amqps://")) {
            return Err(ConfigError::Invalid(format!(
                "amqp.url {:?}: must start with amqp:// or amqps://",
                self.amqp.url
            )));
        }
        let tls = !self.amqp.tls_ca.as_os_str().is_empty();
        if self.amqp.url.starts_with("amqps://") && !tls {
            return Err(ConfigError::Invalid(
                "amqp.url is amqps:// but amqp.tls_ca is empty: name the CA that issued RabbitMQ's certificate (no system roots are trusted)".into(),
            ));
        }
        if tls && !self.amqp.url.starts_with("amqps://") {
            return Err(ConfigError::Invalid(
                "amqp.tls_ca is set but amqp.url is not amqps://: the link would not be encrypted"
                    .into(),
            ));
        }
        if self.amqp.tls_cert.as_os_str().is_empty() != self.amqp.tls_key.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "amqp.tls_cert and amqp.tls_key go together: set both or neither".into(),
            ));
        }
        if !tls && !self.amqp.tls_cert.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "amqp.tls_cert is set without amqp.tls_ca".into(),
            ));
        }
        let r = self.limits.rate_per_agency;
        if !r.is_finite() || r < 0.0 {
            return Err(ConfigError::Invalid(format!(
                "limits.rate_per_agency {r}: messages a second, 0 or more (0 = unlimited)"
            )));
        }
        let f = self.deadlines.at_risk_fraction;
        if !(0.0..1.0).contains(&f) {
            return Err(ConfigError::Invalid(format!(
                "deadlines.at_risk_fraction {f}: use a fraction below 1 (e.g. 0.8), or 0 for no warnings"
            )));
        }
        if self.broker.dedup_retention_days == 0 {
            return Err(ConfigError::Invalid(
                "broker.dedup_retention_days must be at least 1 (copies arrive days later after long outages)".into(),
            ));
        }
        if self.amqp.prefetch == 0 {
            return Err(ConfigError::Invalid(
                "amqp.prefetch must be at least 1".into(),
            ));
        }
        if self.pipeline.batch_size == 0 || self.pipeline.batch_size > 10_000 {
            return Err(ConfigError::Invalid(
                "pipeline.batch_size must be between 1 and 10000".into(),
            ));
        }
        self.http.listen_addr()?;
        if !(1..=3600).contains(&self.http.queue_poll_secs) {
            return Err(ConfigError::Invalid(
                "http.queue_poll_secs must be between 1 and 3600".into(),
            ));
        }
        if !(8..=65_536).contains(&self.store.cache_mib) {
            return Err(ConfigError::Invalid(format!(
                "store.cache_mib {}: redb's page cache in MiB, from 8 to 65536 (64 is the default)",
                self.store.cache_mib
            )));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_message_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_validates() {
        let text = BrokerConfig::default_toml();
        let c: BrokerConfig = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.broker.namespace, "mev");
    }

    #[test]
    fn env_overrides_and_validation() {
        let mut c = BrokerConfig::default();
        c.apply_env(|k| (k == "MEV_NAMESPACE").then(|| "bad name".to_string()))
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("namespace"));
        let mut c = BrokerConfig::default();
        c.apply_env(|k| (k == "AMQP_URL").then(|| "amqp://x:5672/%2f".to_string()))
            .unwrap();
        assert_eq!(c.amqp.url, "amqp://x:5672/%2f");
    }

    #[test]
    fn the_store_cache_is_configured_and_bounded() {
        let c: BrokerConfig = toml::from_str("[store]\ncache_mib = 16\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.store.cache_bytes(), 16 << 20);
        assert_eq!(BrokerConfig::default().store.cache_mib, 64);
        assert!(BrokerConfig::default_toml().contains("[store]\ncache_mib = 64"));
        for bad in [0, 7, 65_537] {
            let mut c = BrokerConfig::default();
            c.store.cache_mib = bad;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("store.cache_mib"), "{e}");
        }
    }

    #[test]
    fn tls_settings_are_checked_together() {
        let invalid = |f: &dyn Fn(&mut BrokerConfig)| {
            let mut c = BrokerConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(invalid(&|c| c.amqp.url = "amqps://h:5671/%2f".into()).contains("tls_ca is empty"));
        assert!(invalid(&|c| c.amqp.tls_ca = "ca.pem".into()).contains("not amqps://"));
        assert!(invalid(&|c| {
            c.amqp.url = "amqps://h:5671/%2f".into();
            c.amqp.tls_ca = "ca.pem".into();
            c.amqp.tls_cert = "client.pem".into();
        })
        .contains("set both or neither"));
        let mut c = BrokerConfig::default();
        c.apply_env(|k| match k {
            "MEV_AMQP_URL" => Some("amqps://h:5671/%2f".into()),
            "MEV_AMQP_TLS_CA" => Some("ca.pem".into()),
            "MEV_AMQP_TLS_CERT" => Some("c.pem".into()),
            "MEV_AMQP_TLS_KEY" => Some("c.key".into()),
            _ => None,
        })
        .unwrap();
        c.validate().unwrap();
        let err = c.amqp.tls().unwrap_err();
        assert!(format!("{err:#}").contains("ca.pem"), "{err:#}");
    }

    #[test]
    fn http_listen_from_env_and_off() {
        let mut c = BrokerConfig::default();
        assert_eq!(
            c.http.listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        c.apply_env(|k| (k == "MEV_HTTP_LISTEN").then(|| "0.0.0.0:9100".to_string()))
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.http.listen_addr().unwrap().unwrap().port(), 9100);
        c.http.listen = String::new();
        assert_eq!(c.http.listen_addr().unwrap(), None);
        c.http.listen = "localhost".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.listen"));
        c.http.listen = "127.0.0.1:0".into();
        c.http.queue_poll_secs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue_poll_secs"));
    }

    /// deploy/broker.example.toml has every key of the defaults, and no other.
    #[test]
    fn example_config_is_complete() {
        fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    let path = format!("{prefix}{k}");
                    keys(v, &format!("{path}."), out);
                    out.push(path);
                }
            }
        }
        let example_text = include_str!("../../deploy/broker.example.toml");
        let example: BrokerConfig = toml::from_str(example_text).expect("the example parses");
        example.validate().expect("the example validates");
        let mut want = Vec::new();
        keys(
            &toml::Value::try_from(BrokerConfig::default()).unwrap(),
            "",
            &mut want,
        );
        let mut have = Vec::new();
        keys(&toml::from_str(example_text).unwrap(), "", &mut have);
        want.sort();
        have.sort();
        assert_eq!(
            have, want,
            "deploy/broker.example.toml and the defaults differ"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<BrokerConfig>("[broker]\nnamespcae = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("namespcae"));
    }
}
