//! The backend's own connection to a Redis server, whose every socket read
//! and write ends by the deadline of the operation in progress.
//!
//! The redis crate's sync `Connection` hides its socket: its timeouts bound
//! each read, so an answer that trickles in (every read making some
//! progress) could hold an operation for as long as the server liked.
//! [`RedisConn`] owns its stream (TCP, a Unix socket, or TLS over TCP with
//! rustls) and, before each read or write, sets the socket's timeout to what
//! is left until [`RedisConn::set_deadline`]'s instant, failing with a
//! [`io::ErrorKind::TimedOut`] error once it has passed. It implements
//! [`ConnectionLike`], so the crate's commands, scripts and value
//! conversions run on it; replies are parsed with the crate's [`Parser`].
//! Any failure to send or read (a timeout included) leaves the reply
//! stream out of step: the connection then says it is closed
//! ([`ConnectionLike::is_open`]) and is never used again.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{
    cmd, Cmd, ConnectionAddr, ConnectionInfo, ConnectionLike, ErrorKind, Parser, RedisError,
    RedisResult, ServerErrorKind, Value,
};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the operation's time ran out")
}

enum Sock {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

/// A socket whose reads and writes each end by `deadline`.
struct Bounded {
    sock: Sock,
    deadline: Instant,
}

impl Bounded {
    /// What is left until the deadline, set as the socket's timeout for the
    /// next read (`read`) or write; an error once nothing is left.
    fn arm(&self, read: bool) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let left = Some(left);
        match (&self.sock, read) {
            (Sock::Tcp(s), true) => s.set_read_timeout(left),
            (Sock::Tcp(s), false) => s.set_write_timeout(left),
            #[cfg(unix)]
            (Sock::Unix(s), true) => s.set_read_timeout(left),
            #[cfg(unix)]
            (Sock::Unix(s), false) => s.set_write_timeout(left),
        }
    }

    /// Runs `op` on the socket until it does not time out early: a socket
    /// timeout (or an interruption) before the deadline tries again with
    /// what is left, one at the deadline is [`timed_out`].
    fn bounded<T>(
        &mut self,
        read: bool,
        mut op: impl FnMut(&mut Sock) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            self.arm(read)?;
            match op(&mut self.sock) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                r => return r,
            }
        }
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bounded(true, |s| match s {
            Sock::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Sock::Unix(s) => s.read(buf),
        })
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bounded(false, |s| match s {
            Sock::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Sock::Unix(s) => s.write(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Stream {
    Plain(Bounded),
    Tls(Box<StreamOwned<ClientConnection, Bounded>>),
}

impl Stream {
    fn bounded(&mut self) -> &mut Bounded {
        match self {
            Stream::Plain(b) => b,
            Stream::Tls(t) => t.get_mut(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(b) => b.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(b) => b.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(b) => b.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// Opens [`RedisConn`]s to one server (parsed from its URL by the redis
/// crate), keeping the TLS settings once built.
pub(super) struct Connector {
    info: ConnectionInfo,
    tls: Mutex<Option<Arc<ClientConfig>>>,
}

impl Connector {
    pub(super) fn new(info: ConnectionInfo) -> Connector {
        Connector {
            info,
            tls: Mutex::new(None),
        }
    }

    /// A connection, handshake done (AUTH, SELECT), within `timeout`.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<RedisConn> {
        let deadline = super::guard::later(Instant::now(), timeout);
        let plain = |sock| Stream::Plain(Bounded { sock, deadline });
        let stream = match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => plain(Sock::Tcp(tcp(host, *port, deadline)?)),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                let config = self.tls_config(*insecure)?;
                let name = ServerName::try_from(host.as_str())?.to_owned();
                let tls = ClientConnection::new(config, name)?;
                let sock = Sock::Tcp(tcp(host, *port, deadline)?);
                Stream::Tls(Box::new(StreamOwned::new(tls, Bounded { sock, deadline })))
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => plain(Sock::Unix(UnixStream::connect(path)?)),
            _ => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "this kind of Redis address is not supported here",
                )))
            }
        };
        let settings = self.info.redis_settings();
        let mut conn = RedisConn {
            stream,
            parser: Parser::new(),
            db: settings.db(),
            open: true,
            resp3: settings.protocol().supports_resp3(),
        };
        conn.handshake(settings.username(), settings.password())?;
        Ok(conn)
    }

    /// The TLS settings: the system's trusted certificates (read once), or
    /// none checked for an `#insecure` URL.
    fn tls_config(&self, insecure: bool) -> RedisResult<Arc<ClientConfig>> {
        let mut kept = self.tls.lock();
        if let Some(c) = &*kept {
            return Ok(c.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = if insecure {
            let mut c = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth();
            c.enable_sni = false;
            c
        } else {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                if let Some(e) = found.errors.into_iter().next() {
                    return Err(e.into());
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let config = Arc::new(config);
        *kept = Some(config.clone());
        Ok(config)
    }
}

/// A TCP connection to `host:port` (each address in turn) by `deadline`.
fn tcp(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the host resolved to no address")
    }))
}

/// Accepts any certificate (`rediss://...#insecure`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to a Redis server; see the [module docs](self).
pub(super) struct RedisConn {
    stream: Stream,
    parser: Parser,
    db: i64,
    /// False once a send or a read failed: the replies are out of step.
    open: bool,
    /// The URL asked for RESP3 (`?protocol=resp3`): `HELLO 3`, and push
    /// messages between replies are skipped.
    resp3: bool,
}

impl RedisConn {
    /// Every read and write from now on must end by `deadline`.
    pub(super) fn set_deadline(&mut self, deadline: Instant) {
        self.stream.bounded().deadline = deadline;
    }

    fn send(&mut self, bytes: &[u8]) -> RedisResult<()> {
        if !self.open {
            return Err(RedisError::from(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection broke earlier",
            )));
        }
        let r = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
        if r.is_err() {
            self.open = false;
        }
        Ok(r?)
    }

    /// The next reply (push messages skipped).
    fn recv(&mut self) -> RedisResult<Value> {
        loop {
            match self.parser.parse_value(&mut self.stream) {
                Ok(Value::Push { .. }) => continue,
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.open = false;
                    return Err(e);
                }
            }
        }
    }

    /// What the redis crate's connection did on opening: authenticate with
    /// the URL's user and password (again without the user for a server
    /// older than ACLs), select the URL's database.
    fn handshake(&mut self, user: Option<&str>, password: Option<&str>) -> RedisResult<()> {
        let mut with_user = true;
        loop {
            let mut cmds: Vec<Cmd> = Vec::new();
            if self.resp3 {
                let mut hello = cmd("HELLO");
                hello.arg(3);
                if let Some(pw) = password {
                    hello.arg("AUTH").arg(user.unwrap_or("default")).arg(pw);
                }
                cmds.push(hello);
            } else if let Some(pw) = password {
                let mut auth = cmd("AUTH");
                if let (Some(u), true) = (user, with_user) {
                    auth.arg(u);
                }
                cmds.push(auth.arg(pw).clone());
            }
            let authenticates = !cmds.is_empty();
            if self.db != 0 {
                cmds.push(cmd("SELECT").arg(self.db).clone());
            }
            if cmds.is_empty() {
                return Ok(());
            }
            let packed: Vec<u8> = cmds.iter().flat_map(|c| c.get_packed_command()).collect();
            let replies = self.req_packed_commands(&packed, 0, cmds.len())?;
            let mut replies = replies.into_iter();
            if authenticates {
                match replies.next() {
                    Some(Value::ServerError(e)) => {
                        let old_server = e
                            .details()
                            .is_some_and(|d| d.contains("wrong number of arguments for 'auth'"));
                        if old_server && user.is_some() && with_user && !self.resp3 {
                            with_user = false;
                            continue;
                        }
                        return Err(RedisError::from((
                            ErrorKind::AuthenticationFailed,
                            "Password authentication failed",
                        )));
                    }
                    Some(_) => {}
                    None => return Err(missing("AUTH")),
                }
            }
            if self.db != 0 {
                match replies.next() {
                    Some(Value::ServerError(e)) => {
                        return Err(RedisError::from((
                            ErrorKind::Server(ServerErrorKind::ResponseError),
                            "Redis server refused to switch database",
                            e.details().unwrap_or_default().to_string(),
                        )))
                    }
                    Some(_) => {}
                    None => return Err(missing("SELECT")),
                }
            }
            return Ok(());
        }
    }
}

fn missing(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Client, "a reply is missing", what.to_string()))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send(cmd)?;
        self.recv()
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send(cmd)?;
        let mut out = Vec::with_capacity(count);
        for i in 0..offset + count {
            let v = self.recv()?;
            if i >= offset {
                out.push(v);
            } else if let Value::ServerError(e) = v {
                // Read the rest, so the replies stay in step.
                for _ in i + 1..offset + count {
                    self.recv()?;
                }
                return Err(e.into());
            }
        }
        Ok(out)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection (no handshake: database 0, no password) to a local
    /// server that `serve` plays.
    fn pair(serve: impl FnOnce(TcpStream) + Send + 'static) -> RedisConn {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || serve(l.accept().unwrap().0));
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        let c = Connector::new(client.get_connection_info().clone());
        c.connect(Duration::from_secs(5)).unwrap()
    }

    fn ends_by_deadline(mut conn: RedisConn, command: &[u8]) {
        let t = Instant::now();
        conn.set_deadline(t + Duration::from_millis(200));
        let r = conn.req_packed_command(command);
        let took = t.elapsed();
        assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(!conn.is_open(), "a timed-out connection is out of step");
        assert!(conn.req_packed_command(b"*1\r\n$4\r\nPING\r\n").is_err());
    }

    #[test]
    fn a_trickling_reply_ends_at_the_deadline() {
        let conn = pair(|mut s| {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let reply = format!("${}\r\n{}\r\n", 450, "v".repeat(450));
            for b in reply.bytes() {
                if s.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        ends_by_deadline(conn, b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn a_send_the_server_does_not_take_ends_at_the_deadline() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let conn = pair(move |s| {
            // Never reads; keeps the socket open until the test ends.
            let _ = rx.recv();
            drop(s);
        });
        let mut big = b"*2\r\n$3\r\nGET\r\n$67108864\r\n".to_vec();
        big.resize(big.len() + (64 << 20), b'x');
        ends_by_deadline(conn, &big);
        drop(tx);
    }
}
