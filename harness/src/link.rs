//! A network link that a test can cut ([`Link`]): a TCP forwarder on
//! loopback between one process and one service (a scheduler and
//! PostgreSQL, a worker and the broker), made in the test's own process.
//!
//! Cut, it is a silent network, not a crash: connections stay open on
//! both sides, but not a byte (nor a close) crosses until it heals, and a
//! new connection is accepted and then hears nothing (as a connection
//! whose packets are dropped). What each side notices is what it would
//! notice across a real split: only its own timeouts (the database's
//! `idle_session_timeout` and `idle_in_transaction_session_timeout`, the
//! AMQP heartbeats, the scheduler's watchdog). Bytes held while cut are
//! delivered when it heals, as TCP retransmits them, if the other side is
//! still there. It can also add a delay to every chunk, or reset (close)
//! every connection through it.
//!
//! Why a forwarder and not network namespaces: see docs/reliability.md
//! (Network splits). The one thing it cannot show is TCP's own keepalives
//! and `tcp_user_timeout`: the forwarder's kernel answers them.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::AbortHandle,
};

/// What the link does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Forwards at once.
    Open,
    /// Forwards nothing and closes nothing until healed.
    Cut,
    /// Forwards each chunk after this delay.
    Delayed(Duration),
}

/// A cuttable TCP link to one service, listening on `127.0.0.1`.
pub struct Link {
    addr: SocketAddr,
    state: watch::Sender<State>,
    /// The accept loop and every connection's pumps, aborted by
    /// [`Link::reset`] (the pumps) and on drop (all).
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// The local ports of the link's live connections to the service: how
    /// the service names this link's sessions (PostgreSQL's
    /// `pg_stat_activity.client_port`).
    ports: Arc<Mutex<Vec<u16>>>,
    accept: AbortHandle,
}

impl Link {
    /// A link to `target`, open.
    pub async fn to(target: SocketAddr) -> std::io::Result<Link> {
        Link::open(target)
    }

    /// As [`Link::to`], from synchronous code inside a Tokio runtime.
    pub fn open(target: SocketAddr) -> std::io::Result<Link> {
        Link::open_on(SocketAddr::from(([127, 0, 0, 1], 0)), target)
    }

    /// A link listening on `bind` (port 0: any free one), e.g. the outside
    /// address of a [`crate::netns::Host`], so that a process inside it
    /// reaches a service that listens on loopback only.
    pub fn open_on(bind: SocketAddr, target: SocketAddr) -> std::io::Result<Link> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State::Open);
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let accept = {
            let (state, tasks, ports) = (state.subscribe(), tasks.clone(), ports.clone());
            tokio::spawn(async move {
                while let Ok((down, _)) = listener.accept().await {
                    let state = state.clone();
                    let pumps = tasks.clone();
                    let ports = ports.clone();
                    let task = tokio::spawn(async move {
                        // A connection made across a cut hears nothing
                        // until it heals.
                        passable(&mut state.clone()).await;
                        let Ok(up) = TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = down.set_nodelay(true);
                        let _ = up.set_nodelay(true);
                        let port = up.local_addr().map(|a| a.port()).unwrap_or(0);
                        ports.lock().expect("not poisoned").push(port);
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        let a = tokio::spawn(pump(dr, uw, state.clone()));
                        let b = tokio::spawn(pump(ur, dw, state));
                        pumps
                            .lock()
                            .expect("not poisoned")
                            .extend([a.abort_handle(), b.abort_handle()]);
                        let _ = tokio::join!(a, b);
                        ports.lock().expect("not poisoned").retain(|&p| p != port);
                    });
                    tasks
                        .lock()
                        .expect("not poisoned")
                        .push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Ok(Link {
            addr,
            state,
            tasks,
            ports,
            accept,
        })
    }

    /// Where the processes under test connect instead of the service.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A silent split: nothing crosses, nothing is closed.
    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    /// Traffic flows again (what was held first).
    pub fn heal(&self) {
        self.state.send_replace(State::Open);
    }

    /// Every chunk waits `delay` (zero: none).
    pub fn delay(&self, delay: Duration) {
        self.state.send_replace(if delay.is_zero() {
            State::Open
        } else {
            State::Delayed(delay)
        });
    }

    /// Closes every connection through the link (both sides see a reset).
    pub fn reset(&self) {
        for t in self.tasks.lock().expect("not poisoned").drain(..) {
            t.abort();
        }
    }

    /// The local ports of its live connections to the service.
    pub fn upstream_ports(&self) -> Vec<u16> {
        self.ports.lock().expect("not poisoned").clone()
    }

    pub fn state(&self) -> State {
        *self.state.borrow()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

/// Waits until the link is not cut; returns the delay to apply.
async fn passable(state: &mut watch::Receiver<State>) -> Duration {
    loop {
        match *state.borrow_and_update() {
            State::Open => return Duration::ZERO,
            State::Delayed(d) => return d,
            State::Cut => {}
        }
        if state.changed().await.is_err() {
            // The link is gone: hold forever (its tasks are aborted).
            std::future::pending::<()>().await;
        }
    }
}

/// Copies `from` to `to` while the link lets it: a chunk read while cut
/// (or a close) waits for the heal.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let delay = passable(&mut state).await;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

/// `url` (`scheme://user:pass@host:port/rest`) with its host and port
/// replaced by `addr`: the same service, reached through a link.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let host_start = rest
        .find('/')
        .map_or(rest, |slash| &rest[..slash])
        .rfind('@')
        .map_or(0, |at| at + 1);
    let host_end = rest[host_start..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| host_start + i);
    format!(
        "{}{}{addr}{}",
        &url[..scheme_end],
        &rest[..host_start],
        &rest[host_end..]
    )
}

/// The `host:port` of `url` as a socket address (names resolved).
pub fn target_of(url: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the service")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_replaces_only_the_host_and_port() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for (url, expected) in [
            (
                "postgres://postgres:postgres@127.0.0.1:5432/postgres",
                "postgres://postgres:postgres@127.0.0.1:4000/postgres",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5",
                "amqp://guest:guest@127.0.0.1:4000/%2f?heartbeat=5",
            ),
            ("amqp://localhost:5672", "amqp://127.0.0.1:4000"),
        ] {
            assert_eq!(via(url, a), expected);
        }
        assert_eq!(
            target_of("postgres://u:p@127.0.0.1:5432/db").unwrap(),
            "127.0.0.1:5432".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_cut_holds_bytes_until_it_heals() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let link = Link::to(target).await.unwrap();
        let mut c = TcpStream::connect(link.addr()).await.unwrap();
        let mut buf = [0u8; 4];
        c.write_all(b"ping").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        link.cut();
        c.write_all(b"pong").await.unwrap();
        let silent = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut buf)).await;
        assert!(silent.is_err(), "nothing crosses a cut");
        link.heal();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        link.reset();
        let closed = c.read(&mut buf).await;
        assert!(matches!(closed, Ok(0) | Err(_)), "a reset closes");
    }
}
