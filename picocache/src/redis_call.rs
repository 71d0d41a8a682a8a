//! Commands of one Redis operation within one deadline: every socket read
//! and write of each command ends by the operation's deadline (the
//! connection, `redis_conn.rs`, sets what is left as the socket's timeout
//! before each one), so an operation that sends several commands (a script
//! the server has not cached: `EVALSHA`, then `EVAL`) or whose answer
//! trickles in still ends within its timeout in total.

use std::time::Instant;

use ::redis::{cmd, Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind};

use super::conn::RedisConn;

/// A Lua script: its code, and the SHA-1 that `EVALSHA` names it by.
pub(super) struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    pub(super) fn new(code: String) -> Lua {
        let hash = ::redis::Script::new(&code).get_hash().to_string();
        Lua { code, hash }
    }
}

/// A connection during one operation, which must have ended by `deadline`.
pub(super) struct Timed<'a> {
    conn: &'a mut RedisConn,
    deadline: Instant,
}

impl<'a> Timed<'a> {
    pub(super) fn new(conn: &'a mut RedisConn, deadline: Instant) -> Timed<'a> {
        Timed { conn, deadline }
    }

    /// Sends `command`, waiting at most what is left of the operation; one
    /// that would start after the deadline fails as a timeout unsent.
    pub(super) fn query<T: FromRedisValue>(&mut self, command: &Cmd) -> RedisResult<T> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the operation's time ran out",
            )
            .into());
        }
        self.conn.set_deadline(self.deadline);
        command.query(self.conn)
    }

    /// Runs `lua` with `keys` keys, then the other arguments `args` adds:
    /// `EVALSHA`, and `EVAL` if the server does not have the script (which
    /// caches it for the next calls).
    pub(super) fn eval<T: FromRedisValue>(
        &mut self,
        lua: &Lua,
        keys: usize,
        args: impl Fn(&mut Cmd),
    ) -> RedisResult<T> {
        let mut c = cmd("EVALSHA");
        c.arg(&lua.hash).arg(keys);
        args(&mut c);
        match self.query(&c) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut c = cmd("EVAL");
                c.arg(&lua.code).arg(keys);
                args(&mut c);
                self.query(&c)
            }
            r => r,
        }
    }
}
