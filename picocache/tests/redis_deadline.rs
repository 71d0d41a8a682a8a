//! The Redis backend's `timeout` bounds a whole operation, however its reply
//! arrives: a reply that trickles in a byte at a time (every socket read
//! making progress, so no single read ever times out) is cut at the
//! operation's deadline, and the connection it desynchronised is never used
//! again.
//!
//! The server is the real one of `PICOCACHE_REDIS_URL` (written by
//! `tests/servers/start.sh`), reached through a TCP proxy in this file. A
//! missing server fails the test in CI (`CI=true`) and elsewhere prints a
//! `SKIPPED` line.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::{Backend, Error, Limits, Namespace};

/// The server's URL in `var`, or `None` after saying the test is skipped.
fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(
                !ci,
                "{var} is not set; CI=true: every server must be there \
                 (tests/servers/start.sh, then source /tmp/picocache-servers/env.sh)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: redis_deadline: {var} is not set (run \
                 `bash tests/servers/start.sh` and `source /tmp/picocache-servers/env.sh`)"
            );
            None
        }
    }
}

fn redis_url() -> Option<String> {
    server_url("PICOCACHE_REDIS_URL")
}

/// `url` (`redis[s]://[auth@]host:port[/db][#insecure]`) split around its
/// `host:port`.
fn split_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").expect("a redis:// URL");
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let start = rest[..end].rfind('@').map_or(0, |a| a + 1);
    (
        format!("{scheme}://{}", &rest[..start]),
        rest[start..end].to_string(),
        rest[end..].to_string(),
    )
}

/// A TCP proxy in front of the server. While `slow` is set, the server's
/// bytes reach the client one at a time, 10 ms apart.
struct Trickle {
    port: u16,
    slow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    socks: Arc<Mutex<Vec<TcpStream>>>,
}

impl Trickle {
    fn new(upstream: &str) -> Trickle {
        let up = upstream
            .to_socket_addrs()
            .expect("the server's address")
            .next()
            .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let t = Trickle {
            port: listener.local_addr().unwrap().port(),
            slow: Arc::default(),
            stop: Arc::default(),
            accepted: Arc::default(),
            socks: Arc::default(),
        };
        let (slow, stop, accepted, socks) = (
            t.slow.clone(),
            t.stop.clone(),
            t.accepted.clone(),
            t.socks.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(up) else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::AcqRel);
                let mut s = socks.lock().unwrap();
                s.push(client.try_clone().unwrap());
                s.push(server.try_clone().unwrap());
                drop(s);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let never = Arc::new(AtomicBool::new(false));
                let (st1, st2) = (stop.clone(), stop.clone());
                thread::spawn(move || pipe(client, server, &never, &st1));
                let slow = slow.clone();
                thread::spawn(move || pipe(s2, c2, &slow, &st2));
            }
        });
        t
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for s in self.socks.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`, a byte every 10 ms while `slow` is set.
fn pipe(mut from: TcpStream, mut to: TcpStream, slow: &AtomicBool, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut i = 0;
        while i < n {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if slow.load(Ordering::Acquire) {
                if to.write_all(&buf[i..i + 1]).is_err() {
                    return;
                }
                i += 1;
                thread::sleep(Duration::from_millis(10));
            } else {
                if to.write_all(&buf[i..n]).is_err() {
                    return;
                }
                i = n;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn namespace(b: &RedisBackend, tag: &str) -> Arc<dyn Namespace> {
    let name = format!("redis_deadline_{tag}_{}", std::process::id());
    let ns = b.namespace(&name, Limits::default()).unwrap();
    ns.clear().unwrap();
    ns
}

/// A hit whose ~450-byte answer trickles in at 100 bytes/s (4.5 s) fails
/// at the operation's timeout (0.2 s), well under a generous 2 s; the
/// backend then works again, on a new connection (the timed-out one still
/// has the rest of the old answer coming: reusing it would read that answer
/// as the next command's).
#[test]
fn a_trickling_answer_costs_the_timeout_only() {
    let Some(url) = redis_url() else { return };
    trickled("plain", &url);
}

/// The same over TLS: rustls's reads of the socket are bounded too.
#[test]
fn a_trickling_tls_answer_costs_the_timeout_only() {
    let Some(url) = server_url("PICOCACHE_REDIS_TLS_URL") else {
        return;
    };
    trickled("tls", &url);
}

/// `url` with `timeout=0.2&connect_timeout=0.2` (before its fragment).
fn with_short_timeouts(url: &str) -> String {
    let (main, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let sep = if main.contains('?') { '&' } else { '?' };
    format!("{main}{sep}timeout=0.2&connect_timeout=0.2{fragment}")
}

fn trickled(tag: &str, url: &str) {
    let (head, hostport, tail) = split_url(url);
    let proxy = Trickle::new(&hostport);
    let purl = with_short_timeouts(&format!("{head}127.0.0.1:{}{tail}", proxy.port));
    let options = RedisOptions {
        pool_size: 1,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(50),
        ..RedisOptions::default()
    };
    let b = RedisBackend::connect(&purl, options).unwrap();
    let ns = namespace(&b, &format!("trickle_{tag}"));
    let value = vec![b'v'; 450];
    let other = vec![b'o'; 20];
    ns.put(b"k", &value, None).unwrap();
    ns.put(b"other", &other, None).unwrap();
    assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&value[..]));
    let before = proxy.accepted();

    proxy.slow.store(true, Ordering::Release);
    let t = Instant::now();
    let r = ns.get(b"k");
    let took = t.elapsed();
    let shown = r.as_ref().map(|v| v.as_ref().map(Vec::len));
    println!("FIGURE trickled redis hit ({tag}, timeout 0.2 s): {took:?}, {shown:?} (bytes)");
    assert!(
        matches!(&r, Err(Error::Unavailable { .. })),
        "a trickling answer fails as unavailable: {shown:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // The server is fast again; after the back-off, a new connection.
    proxy.slow.store(false, Ordering::Release);
    thread::sleep(Duration::from_millis(100));
    let got = ns.get(b"other").unwrap();
    assert_eq!(got.as_deref(), Some(&other[..]), "the answer to this get");
    assert_eq!(
        proxy.accepted(),
        before + 1,
        "the timed-out connection was dropped, one new one opened"
    );
    assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&value[..]));
    ns.clear().unwrap();
}

/// Not a check: how long 10,000 hits of a ~450-byte value take (run with
/// `--ignored --nocapture`, in release, to compare builds).
#[test]
#[ignore]
fn hit_timing() {
    let Some(url) = redis_url() else { return };
    let b = RedisBackend::connect(&url, RedisOptions::default()).unwrap();
    let ns = namespace(&b, "timing");
    let value = vec![b'v'; 450];
    ns.put(b"k", &value, None).unwrap();
    for _ in 0..1000 {
        ns.get(b"k").unwrap();
    }
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..10_000 {
            assert!(ns.get(b"k").unwrap().is_some());
        }
        let took = t.elapsed();
        println!(
            "FIGURE 10,000 redis hits (450 B), round {round}: {took:?} ({:.1} us each)",
            took.as_secs_f64() * 100.0
        );
    }
    ns.clear().unwrap();
}

/// The backend's own connection does the handshake the redis crate did: the
/// URL's database is selected (what one database holds, another does not
/// see), a refused password is the server's answer (`Error::Backend`), not
/// the server being away.
#[test]
fn the_handshake_selects_the_database_and_a_refused_password_is_an_error() {
    let Some(url) = redis_url() else { return };
    let (head, hostport, _) = split_url(&url);
    let prefix = format!("redis_deadline_db_{}", std::process::id());
    let options = || RedisOptions {
        prefix: prefix.clone(),
        ..RedisOptions::default()
    };
    let in3 = RedisBackend::connect(&format!("{head}{hostport}/3"), options()).unwrap();
    let in4 = RedisBackend::connect(&format!("{head}{hostport}/4"), options()).unwrap();
    let ns = in3.namespace("only_in_3", Limits::default()).unwrap();
    ns.put(b"k", b"v", None).unwrap();
    assert_eq!(
        in3.namespace_names().unwrap(),
        vec!["only_in_3".to_string()]
    );
    assert_eq!(in4.namespace_names().unwrap(), Vec::<String>::new());
    let other = in4.namespace("only_in_3", Limits::default()).unwrap();
    assert_eq!(other.get(b"k").unwrap(), None);
    ns.clear().unwrap();

    // RESP3 (`HELLO 3`) when the URL asks for it.
    let resp3 =
        RedisBackend::connect(&format!("{head}{hostport}/3?protocol=resp3"), options()).unwrap();
    let ns3 = resp3.namespace("only_in_3", Limits::default()).unwrap();
    ns3.put(b"k3", b"v3", None).unwrap();
    assert_eq!(ns3.get(b"k3").unwrap().as_deref(), Some(&b"v3"[..]));
    assert_eq!(ns3.get(b"absent").unwrap(), None);
    assert_eq!(ns3.stats().unwrap().entries, 1);
    ns3.clear().unwrap();

    // The test server has no password: AUTH is refused.
    if head == "redis://" {
        let r = RedisBackend::connect(&format!("redis://:wrong@{hostport}/0"), options());
        assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
        let r = RedisBackend::connect(&format!("redis://someone:wrong@{hostport}/0"), options());
        assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    }
}

/// Without `#insecure`, a `rediss://` server's certificate is checked (the
/// test server's is self-signed): connecting fails, promptly, as an error.
#[test]
fn tls_checks_the_certificate_unless_insecure() {
    let Some(url) = server_url("PICOCACHE_REDIS_TLS_URL") else {
        return;
    };
    let checked = url.trim_end_matches("#insecure");
    let t = Instant::now();
    let r = RedisBackend::connect(checked, RedisOptions::default());
    println!(
        "FIGURE verified TLS to a self-signed server: {:?}, {r:?}",
        t.elapsed()
    );
    assert!(
        matches!(r, Err(Error::Unavailable { .. } | Error::Backend { .. })),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}
