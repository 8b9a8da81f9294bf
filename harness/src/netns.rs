//! A host of its own on this machine ([`Host`]): a network namespace
//! joined to the machine's by a veth pair with a /30 of its own
//! (`10.213.x.y`), for a process whose packets a test drops at the
//! kernel, so that TCP
//! itself is put to the test: keepalives and `tcp_user_timeout`, which a
//! userspace link (`link.rs`) answers for the silent peer. The cut takes
//! the pair's outside end down (see [`Host::cut`] for why not a queue
//! that drops everything). Nothing leaves
//! the machine: the pair's outside address is the machine's, reached by
//! the namespace's default route, and a service there listens on it (a
//! server of the test's own, or a link bound to it).
//!
//! Needs root and iproute2 (`ip`, `tc`); [`Host::available`] says whether
//! this machine can. Deleted when dropped.

use std::{
    io,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Hosts made by this process, to give each its own /30.
static MADE: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth pair to the machine.
#[derive(Debug)]
pub struct Host {
    /// The namespace's name.
    name: String,
    /// The outside end's interface name (in the machine's namespace).
    outside_if: String,
    /// The inside end's interface name.
    inside_if: String,
    /// The machine's address on the pair.
    pub outside: Ipv4Addr,
    /// The namespace's address.
    pub inside: Ipv4Addr,
}

impl Host {
    /// True when this process may make hosts (root, with `ip` and `tc`).
    pub fn available() -> bool {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let tool = |t: &str| Command::new(t).arg("-V").output().is_ok();
        root && tool("ip") && tool("tc")
    }

    /// Creates a namespace and its pair, both ends up.
    pub fn create() -> io::Result<Host> {
        let n = MADE.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // 10.213.a.b/30: a from the pid, b from the count (64 hosts per
        // process); the tag keeps names short (interface names: 15 bytes).
        let tag = format!("{:x}{:x}", pid & 0xfffff, n);
        let (a, b) = ((pid % 250) as u8, ((n % 64) * 4) as u8);
        let host = Host {
            name: format!("wn-{tag}"),
            outside_if: format!("wo-{tag}"),
            inside_if: format!("wi-{tag}"),
            outside: Ipv4Addr::new(10, 213, a, b + 1),
            inside: Ipv4Addr::new(10, 213, a, b + 2),
        };
        let ns = host.name.as_str();
        ip(&["netns", "add", ns])?;
        let made = (|| {
            ip(&[
                "link",
                "add",
                &host.outside_if,
                "type",
                "veth",
                "peer",
                "name",
                &host.inside_if,
            ])?;
            ip(&["link", "set", &host.inside_if, "netns", ns])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/30", host.outside),
                "dev",
                &host.outside_if,
            ])?;
            ip(&["link", "set", &host.outside_if, "up"])?;
            let inside = format!("{}/30", host.inside);
            for args in [
                vec![
                    "addr",
                    "add",
                    inside.as_str(),
                    "dev",
                    host.inside_if.as_str(),
                ],
                vec!["link", "set", host.inside_if.as_str(), "up"],
                vec!["link", "set", "lo", "up"],
            ] {
                let mut all = vec!["netns", "exec", ns, "ip"];
                all.extend(args);
                ip(&all)?;
            }
            Ok(())
        })();
        made.map(|()| host)
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Cuts the pair: its outside end goes down. Whatever the namespace
    /// sends is dropped by the pair without a word to the sender (the
    /// peer is down), and the machine's side has no route to it any more;
    /// no reset or ICMP crosses either way, so each end's TCP learns of it
    /// only from its keepalives or `tcp_user_timeout`. (A queue that drops
    /// every packet, `tc qdisc ... pfifo limit 0`, would not do: a packet
    /// dropped by the sender's own queue counts as local congestion, and
    /// Linux then retries keepalive probes for ever without counting them.)
    pub fn cut(&self) -> io::Result<()> {
        ip(&["link", "set", &self.outside_if, "down"])
    }

    /// Delays every packet both ways (needs the kernel's `sch_netem`).
    pub fn delay(&self, delay: std::time::Duration) -> io::Result<()> {
        self.qdisc(&["netem", "delay", &format!("{}ms", delay.as_millis())])
    }

    /// The pair works again (and any delay is gone).
    pub fn heal(&self) -> io::Result<()> {
        ip(&["link", "set", &self.outside_if, "up"])?;
        let _ = self.tc(&["qdisc", "del", "dev", &self.outside_if, "root"], false);
        let _ = self.tc(&["qdisc", "del", "dev", &self.inside_if, "root"], true);
        Ok(())
    }

    fn qdisc(&self, what: &[&str]) -> io::Result<()> {
        for (dev, inside) in [(&self.outside_if, false), (&self.inside_if, true)] {
            let mut args = vec!["qdisc", "replace", "dev", dev.as_str(), "root"];
            args.extend(what);
            self.tc(&args, inside)?;
        }
        Ok(())
    }

    fn tc(&self, args: &[&str], inside: bool) -> io::Result<()> {
        let mut c = if inside {
            self.command("tc")
        } else {
            Command::new("tc")
        };
        run(c.args(args))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes the inside end, and the pair with it.
        let _ = ip(&["link", "del", &self.outside_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} {:?} failed: {}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
