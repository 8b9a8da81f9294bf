//! A PostgreSQL server of a test's own ([`Cluster`]): `initdb` in a
//! temporary directory, listening on loopback on a free port, so that a
//! test can restart it (`pg_ctl restart -m fast` or `-m immediate`, what
//! `pg_ctlcluster ... restart` runs) without touching the machine's shared
//! server. Removed when dropped.
//!
//! It needs PostgreSQL's server programs (`/usr/lib/postgresql/*/bin`, or
//! `PG_BIN`); run as root, they run as the `postgres` user.

use std::{
    io,
    path::{Path, PathBuf},
    process::Command,
};

/// How a restart stops the server first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are ended, a checkpoint is written.
    Fast,
    /// The server dies at once; the start replays the WAL (crash recovery).
    Immediate,
}

/// A running server of the test's own.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `postgres` when run as root, else none (the current user).
    run_as: Option<&'static str>,
}

impl Cluster {
    /// Creates and starts a server on loopback (blocking; a few seconds).
    pub fn start() -> io::Result<Cluster> {
        Cluster::start_on(&[])
    }

    /// As [`Cluster::start`], listening on `also` besides loopback (the
    /// outside address of a [`crate::netns::Host`]).
    pub fn start_on(also: &[std::net::Ipv4Addr]) -> io::Result<Cluster> {
        let bin = bin_dir()?;
        let run_as = is_root().then_some("postgres");
        let dir = std::env::temp_dir().join(format!(
            "warren-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir)?;
        if let Some(user) = run_as {
            run(Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(&dir))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = Cluster {
            dir,
            bin,
            port,
            run_as,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap_or_default(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        std::fs::write(
            cluster.data().join("postgresql.auto.conf"),
            format!(
                "listen_addresses = '{}'\nport = {port}\nunix_socket_directories = '{}'\n\
                 fsync = off\nfull_page_writes = off\nautovacuum = off\nmax_connections = 200\n",
                std::iter::once("127.0.0.1".to_owned())
                    .chain(also.iter().map(|a| a.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
                cluster.dir.display()
            ),
        )?;
        // initdb trusts loopback only: the namespaces' pairs too.
        let hba = cluster.data().join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba)?;
        for a in also {
            let [x, y, z, _] = a.octets();
            rules.push_str(&format!("host all all {x}.{y}.{z}.0/24 trust\n"));
        }
        std::fs::write(&hba, rules)?;
        if let Some(user) = run_as {
            for file in ["postgresql.auto.conf", "pg_hba.conf"] {
                run(Command::new("chown")
                    .arg(format!("{user}:{user}"))
                    .arg(cluster.data().join(file)))?;
            }
        }
        cluster.ctl(&["start", "-w", "-t", "60"])?;
        Ok(cluster)
    }

    /// Where it listens, as Warren's store address.
    pub fn url(&self) -> String {
        self.url_at(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Its address at `host` (one of those it listens on).
    pub fn url_at(&self, host: std::net::Ipv4Addr) -> String {
        format!("postgres://postgres@{host}:{}/postgres", self.port)
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Restarts it, stopping it in `mode` first; returns once it accepts
    /// connections again (blocking).
    pub fn restart(&self, mode: StopMode) -> io::Result<()> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.ctl(&["restart", "-w", "-t", "60", "-m", mode])
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn ctl(&self, args: &[&str]) -> io::Result<()> {
        let data = self.data();
        let log = self.dir.join("server.log");
        let mut all = vec!["-D", data.to_str().unwrap_or_default()];
        all.extend(["-l", log.to_str().unwrap_or_default()]);
        all.extend(args);
        self.pg("pg_ctl", &all)
    }

    fn pg(&self, program: &str, args: &[&str]) -> io::Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        run(cmd.args(args).current_dir(&self.dir))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} failed: {}{}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` with `initdb`.
fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            Path::new(&bin.join("initdb"))
                .exists()
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server programs in /usr/lib/postgresql/*/bin (set PG_BIN)",
        )
    })
}
