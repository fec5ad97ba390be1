//! `mev deploy rabbitmq`: per-agency RabbitMQ accounts.
//!
//! Generates RabbitMQ definitions (the JSON `rabbitmqctl import_definitions`
//! loads) for one deployment: its vhost, the ingress and deliver exchanges,
//! the ingress queue and one inbox per registered agency (declared exactly as
//! the broker declares them, so its own idempotent declares still match), the
//! bindings, one user per agency and one for the broker, and their
//! permissions. Passwords are generated at random; the definitions hold only
//! their salted hashes (`rabbit_password_hashing_sha256`), and the passwords
//! go, as AMQP URLs, into a separate secrets file created with mode 0600.
//!
//! What each account may do, in RabbitMQ's permission model (configure /
//! write / read regular expressions over exchange and queue names):
//!
//! | account | configure | write | read |
//! |---|---|---|---|
//! | agency `X` | nothing (`^$`) | `{ns}.ingress` (publish) | `{ns}.inbox.X` (consume) |
//! | broker | its exchanges and queues (declare) | `{ns}.deliver` (publish), its queues (bind) | `{ns}.ingress` (consume), its exchanges (bind) |
//!
//! An agency cannot declare, bind, purge or delete anything, cannot publish
//! to the deliver exchange or to a queue through the default exchange, and
//! cannot consume another agency's inbox: RabbitMQ refuses with
//! ACCESS_REFUSED. Passive declares (the broker's queue-depth poll) need no
//! permission.

use anyhow::{bail, Context as _};
use mev_adapter::transport::Names;
use mev_broker::register::Register;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `mev deploy ...`
#[derive(clap::Subcommand, Debug)]
pub enum DeployCommand {
    /// RabbitMQ definitions with one account per agency and one for the broker
    /// (load with `rabbitmqctl import_definitions FILE`); passwords go to a
    /// separate secrets file (mode 0600).
    Rabbitmq(RabbitmqArgs),
}

/// `mev deploy rabbitmq`
#[derive(clap::Args, Debug)]
pub struct RabbitmqArgs {
    /// The register directory (its agencies get accounts and inboxes).
    #[arg(long, default_value = "schemas")]
    pub register: PathBuf,
    /// Where to write the definitions (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the secrets (TOML: account id = AMQP URL); created with
    /// mode 0600. Default: next to --out, `<name>.secrets.toml`.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// The RabbitMQ virtual host.
    #[arg(long, default_value = "mev")]
    pub vhost: String,
    /// The namespace of queue and exchange names (`[broker] namespace`).
    #[arg(long, default_value = "mev")]
    pub namespace: String,
    /// The broker's id (`[broker] id`); its account is keyed by it in the secrets.
    #[arg(long, default_value = "MEV-EXCHANGE")]
    pub broker_id: String,
    /// Maximum messages per inbox (`[amqp] max_inbox_length`); 0 = unbounded.
    #[arg(long, default_value_t = 0)]
    pub max_inbox_length: u32,
    /// Classic queues instead of quorum queues (`[amqp] quorum = false`).
    #[arg(long)]
    pub classic: bool,
    /// host:port of RabbitMQ in the secrets' URLs.
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub host: String,
    /// URL scheme in the secrets: amqp or amqps.
    #[arg(long, default_value = "amqp")]
    pub scheme: String,
}

/// Runs `mev deploy ...`.
pub fn run(cmd: DeployCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeployCommand::Rabbitmq(args) => rabbitmq(args),
    }
}

fn rabbitmq(args: RabbitmqArgs) -> anyhow::Result<ExitCode> {
    let register = Register::load(&args.register)
        .with_context(|| format!("loading the register {}", args.register.display()))?;
    let options = Options {
        vhost: args.vhost,
        namespace: args.namespace,
        broker_id: args.broker_id,
        max_inbox_length: args.max_inbox_length,
        quorum: !args.classic,
        host: args.host,
        scheme: args.scheme,
    };
    let deployment = Deployment::from_register(&register, options)?;
    let secrets = args
        .secrets
        .unwrap_or_else(|| default_secrets_path(&args.out));
    deployment.write(&args.out, &secrets)?;
    eprintln!(
        "wrote {} ({} accounts, vhost {:?}) and {} (mode 0600)\nload with: rabbitmqctl import_definitions {}",
        args.out.display(),
        deployment.accounts().count(),
        deployment.options.vhost,
        secrets.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `defs.json` → `defs.secrets.toml`, in the same directory.
pub fn default_secrets_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rabbitmq".into());
    out.with_file_name(format!("{stem}.secrets.toml"))
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The virtual host.
    pub vhost: String,
    /// The namespace of queue and exchange names.
    pub namespace: String,
    /// The broker's id.
    pub broker_id: String,
    /// Maximum messages per inbox (`x-max-length` with `x-overflow = reject-publish`); 0 = unbounded.
    pub max_inbox_length: u32,
    /// Quorum queues (the broker's default) or classic ones.
    pub quorum: bool,
    /// host:port of RabbitMQ, for the URLs.
    pub host: String,
    /// `amqp` or `amqps`.
    pub scheme: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vhost: "mev".into(),
            namespace: "mev".into(),
            broker_id: "MEV-EXCHANGE".into(),
            max_inbox_length: 0,
            quorum: true,
            host: "127.0.0.1:5672".into(),
            scheme: "amqp".into(),
        }
    }
}

/// One RabbitMQ user and what it may do in the vhost.
#[derive(Debug, Clone)]
pub struct Account {
    /// The agency's (or the broker's) id.
    pub id: String,
    /// The RabbitMQ user name: `{namespace}.{id}`.
    pub user: String,
    /// The generated password (only ever written to the secrets file).
    pub password: String,
    /// `rabbit_password_hashing_sha256` hash of the password.
    pub password_hash: String,
    /// Permission regexes.
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// The definitions and accounts of one deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub options: Options,
    /// The broker's account.
    pub broker: Account,
    /// One account per agency, in register order.
    pub agencies: Vec<Account>,
}

/// Escapes `s` for a literal match in a RabbitMQ (PCRE) permission regex.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++ sha256(salt ++ password)).
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    let mut salted = salt.to_vec();
    salted.extend_from_slice(password.as_bytes());
    let digest = mev_proto::envelope::sha256(&salted);
    let mut out = salt.to_vec();
    out.extend_from_slice(&digest);
    base64(&out)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    use ring::rand::SecureRandom as _;
    let mut buf = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    Ok(buf)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Account {
    fn new(
        namespace: &str,
        id: &str,
        configure: String,
        write: String,
        read: String,
    ) -> anyhow::Result<Account> {
        // 160 random bits, hex: nothing to escape in a URL or in TOML.
        let password = mev_proto::envelope::hex(&random::<20>()?);
        let password_hash = password_hash(&password, random::<4>()?);
        Ok(Account {
            id: id.to_string(),
            user: format!("{namespace}.{id}"),
            password,
            password_hash,
            configure,
            write,
            read,
        })
    }
}

impl Deployment {
    /// Accounts for the broker and every agency of `register`.
    pub fn from_register(register: &Register, options: Options) -> anyhow::Result<Deployment> {
        Deployment::new(register.agencies().map(|a| a.id.clone()), options)
    }

    /// Accounts for the broker and `agencies`, with fresh random passwords.
    pub fn new(
        agencies: impl IntoIterator<Item = String>,
        options: Options,
    ) -> anyhow::Result<Deployment> {
        let ns = &options.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("namespace {ns:?}: letters, digits, '-', '_' and '.' only");
        }
        if options.vhost.is_empty() {
            bail!("the vhost may not be empty");
        }
        if !matches!(options.scheme.as_str(), "amqp" | "amqps") {
            bail!("scheme {:?}: amqp or amqps", options.scheme);
        }
        let names = Names::new(ns.clone());
        let q = |s: String| regex_escape(&s);
        let agencies: Vec<String> = agencies.into_iter().collect();
        if agencies.contains(&options.broker_id) {
            bail!(
                "the broker id {:?} is also a registered agency",
                options.broker_id
            );
        }
        let broker = Account::new(
            ns,
            &options.broker_id,
            // Declares the exchanges, the ingress and the inboxes.
            format!(
                "^({}|{}|{}\\..+)$",
                q(names.ingress_exchange()),
                q(names.deliver_exchange()),
                q(format!("{ns}.inbox"))
            ),
            // Publishes to the deliver exchange; binds its queues (write on the queue).
            format!(
                "^({}|{}|{}\\..+)$",
                q(names.ingress_queue()),
                q(names.deliver_exchange()),
                q(format!("{ns}.inbox"))
            ),
            // Consumes the ingress; binds from its exchanges (read on the exchange).
            format!(
                "^({}|{})$",
                q(names.ingress_queue()),
                q(names.deliver_exchange())
            ),
        )?;
        let agencies = agencies
            .iter()
            .map(|id| {
                Account::new(
                    ns,
                    id,
                    "^$".into(),
                    format!("^{}$", q(names.ingress_exchange())),
                    format!("^{}$", q(names.inbox_queue(id))),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Deployment {
            options,
            broker,
            agencies,
        })
    }

    /// The broker's account, then the agencies'.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        std::iter::once(&self.broker).chain(self.agencies.iter())
    }

    /// The AMQP URL (with credentials) of account `id`.
    pub fn url(&self, id: &str) -> Option<String> {
        let a = self.accounts().find(|a| a.id == id)?;
        Some(format!(
            "{}://{}:{}@{}/{}",
            self.options.scheme,
            url_encode(&a.user),
            url_encode(&a.password),
            self.options.host,
            url_encode(&self.options.vhost)
        ))
    }

    /// The secrets file: `id = "amqp://user:password@host/vhost"` per account.
    pub fn secrets_toml(&self) -> String {
        let map: BTreeMap<String, String> = self
            .accounts()
            .map(|a| (a.id.clone(), self.url(&a.id).unwrap_or_default()))
            .collect();
        format!(
            "# RabbitMQ accounts of vhost {:?}, generated by `mev deploy rabbitmq`.\n\
             # Secret: keep mode 0600. Account id = AMQP URL with its credentials.\n{}",
            self.options.vhost,
            toml::to_string(&map).unwrap_or_default()
        )
    }

    fn queue_arguments(&self, inbox: bool) -> Value {
        let mut args = serde_json::Map::new();
        if self.options.quorum {
            args.insert("x-queue-type".into(), json!("quorum"));
        }
        if inbox && self.options.max_inbox_length > 0 {
            args.insert("x-max-length".into(), json!(self.options.max_inbox_length));
            args.insert("x-overflow".into(), json!("reject-publish"));
        }
        Value::Object(args)
    }

    /// The definitions, as `rabbitmqctl import_definitions` loads them.
    /// No passwords: only their salted hashes.
    pub fn definitions(&self) -> Value {
        let vhost = &self.options.vhost;
        let names = Names::new(self.options.namespace.clone());
        let users: Vec<Value> = self
            .accounts()
            .map(|a| {
                json!({
                    "name": a.user,
                    "password_hash": a.password_hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [],
                    "limits": {}
                })
            })
            .collect();
        let permissions: Vec<Value> = self
            .accounts()
            .map(|a| {
                json!({
                    "user": a.user,
                    "vhost": vhost,
                    "configure": a.configure,
                    "write": a.write,
                    "read": a.read
                })
            })
            .collect();
        let queue = |name: String, inbox: bool| {
            json!({
                "name": name,
                "vhost": vhost,
                "durable": true,
                "auto_delete": false,
                "arguments": self.queue_arguments(inbox)
            })
        };
        let mut queues = vec![queue(names.ingress_queue(), false)];
        queues.extend(
            self.agencies
                .iter()
                .map(|a| queue(names.inbox_queue(&a.id), true)),
        );
        let exchanges: Vec<Value> = [names.ingress_exchange(), names.deliver_exchange()]
            .into_iter()
            .map(|name| {
                json!({
                    "name": name,
                    "vhost": vhost,
                    "type": "direct",
                    "durable": true,
                    "auto_delete": false,
                    "internal": false,
                    "arguments": {}
                })
            })
            .collect();
        let binding = |source: String, queue: String, key: &str| {
            json!({
                "source": source,
                "vhost": vhost,
                "destination": queue,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {}
            })
        };
        let mut bindings = vec![binding(names.ingress_exchange(), names.ingress_queue(), "")];
        bindings.extend(
            self.agencies
                .iter()
                .map(|a| binding(names.deliver_exchange(), names.inbox_queue(&a.id), &a.id)),
        );
        json!({
            "users": users,
            "vhosts": [{ "name": vhost }],
            "permissions": permissions,
            "topic_permissions": [],
            "parameters": [],
            "global_parameters": [],
            "policies": [],
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings
        })
    }

    /// Writes the definitions to `out` and the secrets to `secrets` (mode 0600).
    pub fn write(&self, out: &Path, secrets: &Path) -> anyhow::Result<()> {
        if out == secrets {
            bail!("the secrets must go to a file other than the definitions");
        }
        let defs = serde_json::to_string_pretty(&self.definitions())?;
        write_private(secrets, self.secrets_toml().as_bytes())
            .with_context(|| format!("writing {}", secrets.display()))?;
        std::fs::write(out, defs + "\n").with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    }
}

/// Writes `bytes` to `path`, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        opts.mode(0o600);
        let mut f = opts.open(path)?;
        // An existing file keeps its mode on open: narrow it before writing.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut f = opts.open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn password_hash_is_salt_then_salted_sha256() {
        let h = password_hash("secret", [1, 2, 3, 4]);
        let mut salted = vec![1, 2, 3, 4];
        salted.extend_from_slice(b"secret");
        let mut expect = vec![1, 2, 3, 4];
        expect.extend_from_slice(&mev_proto::envelope::sha256(&salted));
        assert_eq!(h, base64(&expect));
        assert_eq!(h.len(), 48);
    }

    #[test]
    fn agencies_may_only_publish_to_the_ingress_and_read_their_inbox() {
        let d =
            Deployment::new(["UZ-A".to_string(), "X.Y".to_string()], Options::default()).unwrap();
        let a = &d.agencies[0];
        assert_eq!(a.user, "mev.UZ-A");
        assert_eq!(a.configure, "^$");
        assert_eq!(a.write, "^mev\\.ingress$");
        assert_eq!(a.read, "^mev\\.inbox\\.UZ-A$");
        assert_eq!(d.agencies[1].read, "^mev\\.inbox\\.X\\.Y$");
        assert_ne!(d.agencies[0].password, d.agencies[1].password);
        let defs = d.definitions().to_string();
        for acc in d.accounts() {
            assert!(
                !defs.contains(&acc.password),
                "a password in the definitions"
            );
        }
        assert!(d.url("UZ-A").unwrap().starts_with("amqp://mev.UZ-A:"));
        assert!(d.url("UZ-A").unwrap().ends_with("@127.0.0.1:5672/mev"));
        assert!(Deployment::new(["MEV-EXCHANGE".to_string()], Options::default()).is_err());
    }

    #[test]
    fn secrets_are_written_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deployment::new(["UZ-A".to_string()], Options::default()).unwrap();
        let out = dir.path().join("defs.json");
        let secrets = default_secrets_path(&out);
        std::fs::write(&secrets, "old").unwrap();
        d.write(&out, &secrets).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let parsed: BTreeMap<String, String> =
            toml::from_str(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
        assert_eq!(parsed["UZ-A"], d.url("UZ-A").unwrap());
        assert_eq!(parsed["MEV-EXCHANGE"], d.url("MEV-EXCHANGE").unwrap());
        let defs: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(defs["users"].as_array().unwrap().len(), 2);
        assert_eq!(defs["queues"].as_array().unwrap().len(), 2);
    }
}
