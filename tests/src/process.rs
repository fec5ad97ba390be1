//! The broker as a process of its own with its data directory where a test
//! puts it (a size-limited tmpfs), its standard error kept in a file, its
//! operators' endpoint on a port of its own, and its memory read from
//! `/proc/<pid>/status`; and [`Tmpfs`], a tmpfs the test mounts (root) and
//! always unmounts.

use crate::rig::Rig;
use mev_adapter::transport::{Topology, Transport};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A tmpfs mounted by the test on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`: "8m", "1g"). An error
    /// (not root, no mount) says why, for the test to skip with.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "mevtest",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes its size (`mount -o remount,size=`).
    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {} at size {size}: {}",
            self.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes used and in all (statvfs through `df`).
    pub fn usage(&self) -> String {
        let out = Command::new("df")
            .args(["-k", "--output=used,size"])
            .arg(self.path())
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .map(|l| {
                let v: Vec<&str> = l.split_whitespace().collect();
                format!("{} KiB used of {} KiB", v[0], v[1])
            })
            .unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it now, freed
            // when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// A broker process (`mev-test-broker`, what `mev broker --config` runs).
pub struct BrokerProcess {
    child: Option<Child>,
    /// Its standard error (where it says why it stopped).
    pub stderr: PathBuf,
    /// Its operators' endpoint.
    pub http: SocketAddr,
}

/// A loopback port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl BrokerProcess {
    /// Starts `exe` with the rig's broker config, its data in `data_dir`,
    /// redb's cache at `cache_mib` if given, and its endpoint on a free
    /// port; returns once it consumes the ingress. `name` names its config
    /// and standard-error files in the rig's directory.
    pub async fn spawn(
        rig: &Rig,
        exe: &str,
        data_dir: &Path,
        cache_mib: Option<u32>,
        name: &str,
    ) -> BrokerProcess {
        let mut config = rig.broker_config();
        config.broker.data_dir = data_dir.to_path_buf();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        config.http.listen = http.to_string();
        config.http.queue_poll_secs = 1;
        if let Some(c) = cache_mib {
            config.store.cache_mib = c;
        }
        let path = rig.dir().join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&config).expect("config to TOML"))
            .expect("write config");
        let stderr = rig.dir().join(format!("{name}.stderr"));
        let child = Command::new(exe)
            .arg(&path)
            .env("RUST_LOG", "info,lapin=off")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let mut p = BrokerProcess {
            child: Some(child),
            stderr,
            http,
        };
        let admin = rig.admin();
        let ingress = admin.names().ingress_queue();
        let deadline = Instant::now() + crate::WAIT;
        loop {
            if let Ok(d) = admin.queue_depth(&ingress).await {
                if d.consumers > 0 {
                    break;
                }
            }
            if let Some(status) = p.try_wait() {
                panic!("the broker exited at start ({status}): {}", p.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not consume its ingress within {:?}: {}",
                crate::WAIT,
                p.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for the broker"))
    }

    /// Waits (at most `limit`) for it to exit by itself.
    pub async fn exited_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not exit within {limit:?}: {}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote to standard error so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a clean stop), then waits at most `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM");
        self.exited_within(limit).await
    }

    /// `VmRSS` and `VmHWM` (resident now, and its peak) in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Waits (at most [`crate::WAIT`]) for `/readyz` to say 200: its first
    /// queue poll takes up to a second.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + crate::WAIT;
        loop {
            let r = self.readyz().await;
            if r.as_ref().is_some_and(|(s, _)| *s == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not 200 within {:?}: {r:?}",
                crate::WAIT
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /readyz`: the status and the body (None if it does not answer).
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let url = format!("http://{}/readyz", self.http);
        tokio::task::spawn_blocking(move || {
            mev_cli::status::client::get(&url, Duration::from_secs(2)).ok()
        })
        .await
        .ok()
        .flatten()
        .map(|r| (r.status, r.body))
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
