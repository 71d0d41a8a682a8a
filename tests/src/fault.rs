//! Real network faults for the tests: a TCP proxy in front of a real server
//! that can turn into a black hole (it keeps accepting connections and
//! reading what clients send, and never answers) or into a slow endpoint
//! (every answer arrives a set delay after the server sent it, in order),
//! and a plain black-hole endpoint with no server behind it. Only
//! `std::net`, on loopback.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct State {
    /// Whether the proxy is a black hole now.
    black_hole: AtomicBool,
    /// Changes each time the mode changes: a connection from another epoch
    /// is cut (its streams were frozen mid-protocol).
    epoch: AtomicU64,
    /// Bytes forwarded from clients to the server.
    upstream_bytes: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Connections held open without an answer.
    held: Mutex<Vec<TcpStream>>,
    /// How long the server's bytes wait before they go to the client.
    delay: Mutex<Duration>,
    /// The local ports of every connection opened to the server.
    upstream_ports: Mutex<Vec<u16>>,
    stop: AtomicBool,
}

/// A TCP proxy to `upstream` (or, without one, a black hole) on an
/// ephemeral loopback port; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy forwarding to `upstream` (`host:port`).
    pub fn to(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream}: {e}"));
        Self::start(Some(upstream))
    }

    /// An endpoint that accepts every connection and never answers.
    pub fn black_hole() -> Proxy {
        let p = Self::start(None);
        p.state.black_hole.store(true, Ordering::SeqCst);
        p
    }

    fn start(upstream: Option<SocketAddr>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(State {
            black_hole: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            upstream_bytes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            upstream_ports: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => continue,
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                client.set_nonblocking(false).unwrap();
                let server = match upstream {
                    Some(u) if !st.black_hole.load(Ordering::SeqCst) => {
                        TcpStream::connect_timeout(&u, Duration::from_secs(5)).ok()
                    }
                    _ => None,
                };
                match server {
                    Some(server) => {
                        if let Ok(a) = server.local_addr() {
                            st.upstream_ports.lock().unwrap().push(a.port());
                        }
                        let epoch = st.epoch.load(Ordering::SeqCst);
                        pump(
                            &st,
                            epoch,
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            true,
                        );
                        pump(&st, epoch, server, client, false);
                    }
                    None => st.held.lock().unwrap().push(client),
                }
            }
        });
        Proxy { addr, state }
    }

    /// The proxy's `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (start, end) = host_port_span(url);
        format!("{}{}{}", &url[..start], self.addr, &url[end..])
    }

    /// From now on the proxy is a black hole: open connections freeze (what
    /// clients send is read and dropped, nothing comes back), new ones are
    /// accepted and never answered.
    pub fn black_out(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
        self.state.black_hole.store(true, Ordering::SeqCst);
    }

    /// Forwards again: frozen connections are cut (their clients see them
    /// close), new ones reach the server.
    pub fn restore(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
        self.state.black_hole.store(false, Ordering::SeqCst);
        for c in self.state.held.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// From now on every byte the server sends reaches its client `delay`
    /// after the proxy read it (a slow link or an overloaded server: the
    /// answers come, late, in order, on the same connections); bytes already
    /// on their way keep the delay they had. `Duration::ZERO` ends it.
    pub fn slow_down(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Bytes forwarded from clients to the server so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.state.upstream_bytes.load(Ordering::SeqCst)
    }

    /// The local ports of every connection the proxy opened to the server
    /// (as the server sees them: `127.0.0.1:PORT`).
    pub fn upstream_ports(&self) -> Vec<u16> {
        self.state.upstream_ports.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.restore();
    }
}

/// Writes what comes through `rx` to `to`, each chunk once its due time
/// has come; closes `to` when the sender is gone.
fn deliver(rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: TcpStream) {
    thread::spawn(move || {
        for (due, bytes) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Copies `from` to `to` until either closes, the proxy stops, or the mode
/// changes; while the proxy is a black hole, reads and drops. The server's
/// bytes (`!upstream`) go through a delay line ([`Proxy::slow_down`]).
fn pump(st: &Arc<State>, epoch: u64, mut from: TcpStream, mut to: TcpStream, upstream: bool) {
    let st = st.clone();
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let late = (!upstream).then(|| {
        let (tx, rx) = mpsc::channel();
        deliver(rx, to.try_clone().unwrap());
        tx
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if st.stop.load(Ordering::SeqCst) {
                break;
            }
            let now = st.epoch.load(Ordering::SeqCst);
            let frozen = now != epoch;
            if frozen && !st.black_hole.load(Ordering::SeqCst) {
                break; // restored: cut this frozen connection
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if frozen || st.epoch.load(Ordering::SeqCst) != epoch {
                        continue; // black hole: swallow
                    }
                    if upstream {
                        st.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    let sent = match &late {
                        Some(tx) => {
                            let due = Instant::now() + *st.delay.lock().unwrap();
                            tx.send((due, buf[..n].to_vec())).is_ok()
                        }
                        None => to.write_all(&buf[..n]).is_ok(),
                    };
                    if !sent {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        match late {
            // The delay line closes `to` once it has delivered what it holds.
            Some(tx) => drop(tx),
            None => {
                let _ = to.shutdown(Shutdown::Both);
            }
        }
    });
}

/// The byte span of `host:port` in a URL (`scheme://[user[:pw]@]host:port[/...]`).
fn host_port_span(url: &str) -> (usize, usize) {
    let start = url.find("://").expect("a URL with a scheme") + 3;
    let rest = &url[start..];
    let end_of_authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end_of_authority].rfind('@').map_or(0, |i| i + 1);
    (start + at, start + end_of_authority)
}

/// The `host:port` of a URL.
pub fn host_port(url: &str) -> String {
    let (s, e) = host_port_span(url);
    url[s..e].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = "postgresql://u:p@127.0.0.1:5440/db?x=1";
        assert_eq!(host_port(u), "127.0.0.1:5440");
        let p = Proxy::black_hole();
        assert_eq!(
            p.url_for(u),
            format!("postgresql://u:p@{}/db?x=1", p.addr())
        );
        assert_eq!(host_port("redis://127.0.0.1:6390/0"), "127.0.0.1:6390");
    }
}
