//! A RabbitMQ cluster the run owns (`--cluster N`), and its faults
//! (`--node-kills K`).
//!
//! N nodes on this machine, each with its own node name
//! (`{tag}-{i}@localhost`), AMQP and distribution ports (free ones, on
//! 127.0.0.1), configuration and data directory under the run's
//! directory, sharing an Erlang cookie of their own; the second and later
//! nodes join the first with `rabbitmqctl join_cluster`. The machine's own
//! broker is never touched. The scripts are run directly (Debian's
//! `/usr/lib/rabbitmq/bin`, else from `PATH`), as the user running the
//! program.
//!
//! A node kill kills one node's Erlang VM with SIGKILL and starts it
//! again in the background while the workload goes on; two steps later,
//! once the cluster has all its nodes running again, a second node's
//! broker is stopped (`stop_app`) and started again (`start_app`). At no
//! moment are two nodes down, so quorum queues keep their majority (see
//! [`NodeFaults`]).
//!
//! When the run ends, whatever its outcome (an error, a panic, SIGTERM),
//! the [`Cluster`] kills every node with SIGKILL (every Erlang VM whose
//! home is its directory) and deletes its data; the nodes' logs stay with
//! the run's directory.

use anyhow::{Context, bail};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use warren_harness::child::{Signal, signal};

/// How long a node may take to start, or to join.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// With `--cluster N`: starts the run's cluster (killed when the run
/// ends, or on a signal), and points `args` at it, on quorum queues.
pub fn for_run(
    args: &mut crate::RunArgs,
    dir: &std::path::Path,
    ns: &str,
) -> anyhow::Result<Option<Arc<Cluster>>> {
    if args.node_kills > 0 && args.cluster < 3 {
        bail!("--node-kills needs --cluster 3 or more (a quorum survives one node down)");
    }
    if args.cluster == 0 {
        return Ok(None);
    }
    if args.broker_restarts > 0 {
        bail!(
            "--broker-restarts restarts the machine's broker, which a --cluster run does not use: pass --broker-restarts 0"
        );
    }
    let booting = Instant::now();
    let cluster = Arc::new(Cluster::start(args.cluster, dir, ns)?);
    kill_on_signal(&cluster);
    println!(
        "chaos: cluster of {} ({}) running after {:.1} s",
        args.cluster,
        cluster.names().join(", "),
        booting.elapsed().as_secs_f64()
    );
    args.amqp_addr = cluster.addresses();
    args.queue_type = warren_shared::QueueType::Quorum;
    Ok(Some(cluster))
}

/// One node: its name, ports and directory.
struct Node {
    name: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// Its Erlang VM's pid, read from its pid file once it started (kept
    /// here too: the file may be gone when the run's directory is).
    vm: Mutex<Option<u32>>,
}

impl Node {
    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// Reads its VM's pid from the pid file, and remembers it.
    fn read_pid(&self) -> anyhow::Result<u32> {
        let text = std::fs::read_to_string(self.pid_file())
            .with_context(|| format!("{}'s pid file", self.name))?;
        let pid = text.trim().parse().context("a pid")?;
        *self.vm.lock().expect("not poisoned") = Some(pid);
        Ok(pid)
    }

    /// The pid of its Erlang VM, while it lives.
    fn pid(&self) -> Option<u32> {
        let pid = (*self.vm.lock().expect("not poisoned"))?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    fn port_open(&self) -> bool {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        )
        .is_ok()
    }
}

/// The cluster: its nodes, and the directory holding their cookie,
/// configuration, data and logs.
pub struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` nodes under `dir`, named after `tag`, and joins them
    /// into one cluster; fails unless all `n` run as one within
    /// [`BOOT_TIMEOUT`] each.
    pub fn start(n: usize, dir: &Path, tag: &str) -> anyhow::Result<Cluster> {
        let dir = dir.join("cluster");
        std::fs::create_dir_all(&dir)?;
        write_cookie(&dir)?;
        let mut cluster = Cluster {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        for i in 1..=n {
            let node = Node {
                name: format!("{tag}-{i}@localhost"),
                port: free_port()?,
                dist_port: free_port()?,
                dir: dir.join(format!("node{i}")),
                vm: Mutex::new(None),
            };
            std::fs::create_dir_all(&node.dir)?;
            std::fs::write(
                node.dir.join("rabbitmq.conf"),
                format!(
                    "listeners.tcp.default = 127.0.0.1:{}\nloopback_users.guest = true\n",
                    node.port
                ),
            )?;
            std::fs::write(node.dir.join("enabled_plugins"), "[].\n")?;
            std::fs::write(node.dir.join("rabbitmq-env.conf"), "")?;
            cluster.nodes.push(node);
        }
        // Boot them side by side: most of the set-up's time.
        for i in 0..n {
            cluster.launch(i)?;
        }
        for i in 0..n {
            cluster.await_node(i)?;
        }
        let first = cluster.nodes[0].name.clone();
        for i in 1..n {
            cluster.ctl(i, &["stop_app"])?;
            cluster.ctl(i, &["join_cluster", &first])?;
            cluster.ctl(i, &["start_app"])?;
        }
        cluster.await_running(n)?;
        Ok(cluster)
    }

    /// The AMQP addresses of the nodes, comma-separated, for `AMQP_ADDR`.
    pub fn addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' names.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// A command running the RabbitMQ script `tool` for node `i`: its
    /// environment names the node's ports and files, so that nothing of the
    /// machine's own broker (`/etc/rabbitmq`, its cookie) is read.
    fn command(&self, i: usize, tool: &str) -> Command {
        let node = &self.nodes[i];
        let debian = Path::new("/usr/lib/rabbitmq/bin").join(tool);
        let mut cmd = Command::new(if debian.exists() {
            debian
        } else {
            PathBuf::from(tool)
        });
        cmd.env("HOME", &self.dir)
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", node.port.to_string())
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                node.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", node.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", node.pid_file())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null());
        cmd
    }

    /// `rabbitmqctl -n {node i} args...`; its output, or an error with it.
    fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(i, "rabbitmqctl")
            .args(["-n", &self.nodes[i].name])
            .args(args)
            .output()
            .context("run rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl -n {} {}: {}{}",
                self.nodes[i].name,
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts node `i`'s VM in the background (`rabbitmq-server -detached`).
    fn launch(&self, i: usize) -> anyhow::Result<()> {
        // A killed node leaves its pid file: `wait` must not read the old one.
        let _ = std::fs::remove_file(self.nodes[i].pid_file());
        let status = self
            .command(i, "rabbitmq-server")
            .arg("-detached")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run rabbitmq-server")?;
        if !status.success() {
            bail!(
                "rabbitmq-server -detached failed for {}",
                self.nodes[i].name
            );
        }
        Ok(())
    }

    /// Waits until node `i`'s broker has started (its pid file written,
    /// then its boot finished).
    fn await_node(&self, i: usize) -> anyhow::Result<()> {
        let pid_file = self.nodes[i].pid_file();
        let timeout = BOOT_TIMEOUT.as_millis().to_string();
        self.ctl(
            i,
            &["wait", &pid_file.to_string_lossy(), "--timeout", &timeout],
        )?;
        self.nodes[i].read_pid()?;
        self.ctl(
            i,
            &[
                "await_startup",
                "--timeout",
                &BOOT_TIMEOUT.as_secs().to_string(),
            ],
        )?;
        Ok(())
    }

    /// The nodes that some running node reports as running.
    fn running(&self) -> anyhow::Result<Vec<String>> {
        let mut last = None;
        for i in 0..self.nodes.len() {
            match self.ctl(i, &["cluster_status", "--formatter", "json"]) {
                Ok(out) => {
                    let status: serde_json::Value =
                        serde_json::from_str(&out).context("cluster_status's JSON")?;
                    return Ok(status["running_nodes"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|n| n.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no nodes")))
    }

    /// Waits until `n` nodes run in the cluster, within [`BOOT_TIMEOUT`].
    fn await_running(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let running = self.running()?;
            if running.len() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {running:?} of {n} nodes running after {BOOT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Kills node `i`'s VM with SIGKILL and waits until it is gone.
    fn kill(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let Some(pid) = node.pid() else {
            bail!("{} has no live process to kill", node.name);
        };
        signal(pid, Signal::Kill);
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.pid().is_some() || node.port_open() {
            if Instant::now() > deadline {
                bail!("{} (pid {pid}) still runs 30 s after SIGKILL", node.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts node `i` again (after [`Cluster::kill`]) and waits until
    /// the cluster runs all its nodes.
    fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.launch(i)?;
        self.await_node(i)?;
        self.await_running(self.nodes.len())
    }

    /// Stops node `i`'s broker (`stop_app`), starts it again
    /// (`start_app`) and waits until the cluster runs all its nodes; the
    /// seconds that took.
    fn stop_and_start(&self, i: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        self.ctl(i, &["stop_app"])?;
        self.ctl(i, &["start_app"])?;
        self.await_running(self.nodes.len())?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Closes every client connection on every node
    /// (`close_all_connections` on each); fails only when no node could.
    pub fn disconnect_all(&self, reason: &str) -> anyhow::Result<()> {
        let mut closed = 0;
        let mut last = None;
        for i in 0..self.nodes.len() {
            match self.ctl(i, &["close_all_connections", reason]) {
                Ok(_) => closed += 1,
                Err(e) => last = Some(e),
            }
        }
        match (closed, last) {
            (0, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Checks with `rabbitmqctl list_queues` that every queue the run
    /// left (exclusive ones aside) is a durable quorum queue, and prints
    /// the verdict; an error only when the check cannot be made.
    pub fn check_quorum(&self) -> anyhow::Result<bool> {
        let (queues, odd) = self.non_quorum_queues()?;
        let ok = odd.is_empty();
        println!(
            "{:<46} {:<6} {queues} queues, {} not quorum{}{}",
            "cluster: every queue a durable quorum queue",
            if ok { "PASS" } else { "FAIL" },
            odd.len(),
            if ok { "" } else { ": " },
            odd.join(", ")
        );
        Ok(ok)
    }

    /// The queues the cluster holds that are not quorum queues (exclusive
    /// ones aside, which go with their connection): `name (type)`. The
    /// cluster is the run's own, so every queue in it is the run's.
    fn non_quorum_queues(&self) -> anyhow::Result<(usize, Vec<String>)> {
        let out = self.ctl(
            0,
            &[
                "list_queues",
                "name",
                "type",
                "durable",
                "exclusive",
                "--formatter",
                "json",
            ],
        )?;
        let queues: Vec<serde_json::Value> =
            serde_json::from_str(&out).context("list_queues's JSON")?;
        let shared: Vec<&serde_json::Value> = queues
            .iter()
            .filter(|q| q["exclusive"] != serde_json::Value::Bool(true))
            .collect();
        let odd = shared
            .iter()
            .filter(|q| q["type"] != "quorum" || q["durable"] != serde_json::Value::Bool(true))
            .map(|q| format!("{} ({}, durable {})", q["name"], q["type"], q["durable"]))
            .collect();
        Ok((shared.len(), odd))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl Cluster {
    /// Kills every node (their data is deleted next: no need to stop them
    /// gracefully) and deletes their data; the logs stay. Besides the
    /// nodes' recorded pids, every Erlang VM whose home is this cluster's
    /// directory goes too (a node being started again, whose pid is not
    /// read yet; a `rabbitmqctl` under way), swept until none is left.
    fn kill_all(&self) {
        for node in &self.nodes {
            if let Some(pid) = node.pid() {
                signal(pid, Signal::Kill);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while quiet < 3 && Instant::now() < deadline {
            let vms = vms_at_home(&self.dir);
            quiet = if vms.is_empty() { quiet + 1 } else { 0 };
            for pid in vms {
                signal(pid, Signal::Kill);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in vms_at_home(&self.dir) {
            eprintln!("chaos: a VM of the cluster (pid {pid}) outlived SIGKILL");
        }
        for node in &self.nodes {
            let _ = std::fs::remove_dir_all(node.dir.join("mnesia"));
        }
    }
}

/// The processes whose command line holds `-home {dir}`: the Erlang VMs
/// started with this cluster's directory as their home (its nodes, its
/// `rabbitmqctl` calls), read from `/proc`.
fn vms_at_home(dir: &Path) -> Vec<u32> {
    let home = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let mut args = cmd.split(|b| *b == 0);
                // `-home` followed by exactly this directory.
                let mut previous_home = false;
                args.any(|a| {
                    let hit = previous_home && a == home;
                    previous_home = a == b"-home";
                    hit
                })
            })
        })
        .collect()
}

/// On ctrl-c or SIGTERM (CI's `timeout`), kills the cluster's nodes and
/// exits (130), keeping the run's directory: the nodes run detached and
/// would outlive the program otherwise. Holds the cluster weakly: the
/// run's end drops (and kills) it as usual.
pub fn kill_on_signal(cluster: &Arc<Cluster>) {
    let cluster = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if let Some(cluster) = cluster.upgrade() {
            cluster.kill_all();
            eprintln!(
                "chaos: interrupted; the cluster's nodes are killed, their logs are in {}",
                cluster.dir.display()
            );
        }
        std::process::exit(130);
    });
}

/// The cluster's own Erlang cookie, written before any node starts (nodes
/// started side by side would each create a different one).
fn write_cookie(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(".erlang.cookie");
    let cookie: String = (0..20).map(|_| fastrand::uppercase()).collect();
    std::fs::write(&path, cookie)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
    Ok(())
}

/// A port nothing listens on now (the kernel's pick, released at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The node faults of a run. Kill `k` kills node `k % n` with SIGKILL and
/// starts it again in the background, while the workload and the other
/// faults go on; the stop that follows it (two steps later: the run waits
/// for the restart before that step's chunk goes in) stops the node after
/// the last one killed (`stop_app`) and starts it again (`start_app`).
/// Each operation first waits for a restart under way: two nodes are
/// never down at once, so quorum queues keep their majority. Each prints
/// how many workflows submitted had not finished when its node went
/// down.
pub struct NodeFaults {
    pub cluster: Arc<Cluster>,
    /// The restart of the last node killed, and when it was killed.
    restarting: Option<(tokio::task::JoinHandle<anyhow::Result<()>>, Instant)>,
    kills: usize,
}

impl NodeFaults {
    pub fn new(cluster: Arc<Cluster>) -> NodeFaults {
        NodeFaults {
            cluster,
            restarting: None,
            kills: 0,
        }
    }

    /// Kills the next node, and starts it again in the background.
    pub async fn kill(&mut self, unfinished: usize) -> anyhow::Result<()> {
        self.finish().await?;
        let i = self.kills % self.cluster.nodes.len();
        self.kills += 1;
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.kill(i)).await??;
        let killed = Instant::now();
        println!(
            "node fault: {} killed with SIGKILL ({unfinished} workflows unfinished)",
            self.cluster.nodes[i].name
        );
        let cluster = self.cluster.clone();
        self.restarting = Some((
            tokio::task::spawn_blocking(move || cluster.restart(i)),
            killed,
        ));
        Ok(())
    }

    /// Once the last node killed runs again, stops the node after it and
    /// starts it again.
    pub async fn stop(&mut self, unfinished: usize) -> anyhow::Result<()> {
        self.finish().await?;
        let i = self.kills % self.cluster.nodes.len();
        let cluster = self.cluster.clone();
        let took = tokio::task::spawn_blocking(move || cluster.stop_and_start(i)).await??;
        println!(
            "node fault: {} stopped ({unfinished} workflows unfinished), all nodes running again after {took:.1} s",
            self.cluster.nodes[i].name
        );
        Ok(())
    }

    /// Waits until the last node killed runs again, if one is restarting.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        if let Some((restart, killed)) = self.restarting.take() {
            restart.await??;
            println!(
                "node fault: all nodes running again {:.1} s after the kill",
                killed.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}
