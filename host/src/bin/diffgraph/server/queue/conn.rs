//! One Redis connection that survives a Redis restart: a command that fails
//! because the connection dropped (or Redis is still loading its AOF) is
//! retried on a fresh connection until `patience` runs out. Every user of
//! Redis in the server and the worker goes through [`Conn::run`], so a
//! restarted Redis costs a pause, not a lost job.
use redis::{Client, Connection, RedisError, RedisResult};
use std::time::{Duration, Instant};

/// `redis://HOST:PORT/N` checked and opened (no connection yet).
pub fn client(url: &str) -> Result<Client, String> {
    if !url.starts_with("redis://") && !url.starts_with("redis+unix://") {
        return Err(format!(
            "--queue `{url}`: expected redis://HOST:PORT/N (or redis+unix:///path)"
        ));
    }
    Client::open(url).map_err(|e| format!("--queue `{url}`: {e}"))
}

/// Errors worth a reconnect and a retry: the link, not the command.
pub fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("LOADING" | "TRYAGAIN" | "MASTERDOWN"))
}

pub struct Conn {
    client: Client,
    conn: Option<Connection>,
    /// How long a command keeps retrying while Redis is unreachable.
    pub patience: Duration,
}

impl Conn {
    pub fn new(client: Client) -> Conn {
        Conn {
            client,
            conn: None,
            patience: Duration::from_secs(120),
        }
    }

    /// Connects now; an error if Redis cannot be reached within 5 s.
    pub fn connect(client: Client) -> Result<Conn, String> {
        let mut c = Conn::new(client);
        c.patience = Duration::from_secs(5);
        c.run(|c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| format!("cannot reach Redis: {e}"))?;
        c.patience = Duration::from_secs(120);
        Ok(c)
    }

    /// Runs `f` on a live connection; reconnects and retries on transient
    /// errors (backing off up to 0.5 s) until `patience` has passed.
    pub fn run<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let start = Instant::now();
        let mut wait = Duration::from_millis(20);
        loop {
            let attempt = match self.conn.as_mut() {
                Some(c) => f(c),
                None => match self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(2))
                {
                    Ok(c) => {
                        self.conn = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match attempt {
                Err(e) if transient(&e) && start.elapsed() < self.patience => {
                    self.conn = None;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    if transient(&e) {
                        self.conn = None;
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }
}
