//! A server of its own for one test (`tests/servers/instance.sh`): a
//! PostgreSQL or MariaDB with extra server options (`max_connections=20`, a
//! small `max_allowed_packet`) on a free loopback port, in its own state
//! dir under `/tmp`, stopped and deleted when the [`Instance`] is dropped.
//! The shared servers of `start.sh` are never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The exit status of `instance.sh start` when the server is not installed.
const NOT_INSTALLED: i32 = 77;

/// A running server of one test; stopped (and its state deleted) on drop.
#[derive(Debug)]
pub struct Instance {
    kind: String,
    dir: PathBuf,
    port: u16,
    url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/instance.sh")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().unwrap().port()
}

impl Instance {
    /// Starts a `kind` (`"postgres"` or `"mysql"`) server with `options`
    /// (server command-line options, e.g. `["-c", "max_connections=20"]`).
    /// `None` when the server is not installed, after [`crate::missing`]
    /// said so (in CI that panics). Panics if it does not start.
    pub fn start(kind: &str, options: &[&str]) -> Option<Instance> {
        // Directly under /tmp: the postgres user must reach the data dir.
        let dir = tempfile::Builder::new()
            .prefix(&format!("picocache-{kind}-"))
            .tempdir_in("/tmp")
            .expect("a state dir under /tmp")
            .keep();
        let port = free_port();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", kind])
            .arg(&dir)
            .arg(port.to_string())
            .args(options)
            .output()
            .unwrap_or_else(|e| panic!("instance.sh start {kind}: {e}"));
        let inst = Instance {
            kind: kind.to_string(),
            dir,
            port,
            url: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        };
        if out.status.code() == Some(NOT_INSTALLED) {
            drop(inst);
            crate::missing(&format!(
                "a {kind} server of its own: {kind} is not installed"
            ));
            return None;
        }
        assert!(
            out.status.success() && !inst.url.is_empty(),
            "instance.sh start {kind} {options:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Some(inst)
    }

    /// The URL of its `picocache` user.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(script())
            .args(["stop", &self.kind])
            .arg(&self.dir)
            .arg(self.port.to_string())
            .output();
        match stopped {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "instance.sh stop {} failed: {}",
                self.kind,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("instance.sh stop {}: {e}", self.kind),
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
