//! The broker permissions of each role in a namespace: what
//! docs/security.md tables, what `warren permissions` prints as
//! `rabbitmqctl` commands, and what the roles test grants its users.
//!
//! RabbitMQ checks three regular expressions per user and vhost against
//! the names of exchanges and queues: *configure* (declare, delete),
//! *write* (publish to an exchange; bind to a queue) and *read* (consume
//! from a queue; bind from an exchange); and, per topic exchange, topic
//! permissions whose regular expressions match the routing key of a
//! publish (*write*) or the key of a binding (*read*). A user with no topic
//! permission on an exchange may use every key there.
//!
//! The topology is laid out so that each role's grant is narrow: the task
//! exchange, the control exchange and the default exchange (which routes
//! to every queue by name) are the scheduler's alone; workers reach the
//! results through `{ns}.results` and their own pools' queues through the
//! topic exchange `{ns}.requeue`, whose keys their topic permissions name.

/// Who connects to the broker, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Owns the namespace's topology, dispatches tasks, takes results and
    /// requests, publishes reports, events and control notices.
    Scheduler,
    /// Runs the tasks of these pools (task queue names, e.g. `default`).
    Worker {
        /// The pools it serves.
        queues: Vec<String>,
    },
    /// Submits workflows and control requests, reads its own replies and
    /// its workflows' progress.
    Producer,
    /// Reads the events exchange (state changes, progress, heartbeats).
    Observer,
}

impl Role {
    /// The role's name in docs and in `warren permissions`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Worker { .. } => "worker",
            Role::Producer => "producer",
            Role::Observer => "observer",
        }
    }
}

/// Topic permissions on one topic exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermission {
    /// The exchange they apply to.
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Binding keys the user may bind with.
    pub read: String,
}

/// A role's permissions on the namespace's vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Resources the user may declare and delete.
    pub configure: String,
    /// Exchanges it may publish to, queues it may bind.
    pub write: String,
    /// Queues it may consume, exchanges it may bind from.
    pub read: String,
    /// Per topic exchange, the keys it may use.
    pub topics: Vec<TopicPermission>,
}

/// Server-named queues (reply queues, workers' control queues, observers'
/// queues): exclusive to the connection that declared them, so a grant on
/// the pattern gives nobody another's queue.
const SERVER_NAMED: &str = r"amq\.gen-.*";

/// `s` with every regular-expression metacharacter escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The permissions of `role` in namespace `namespace`.
pub fn permissions(namespace: &str, role: &Role) -> Permissions {
    let ns = escape(namespace);
    match role {
        Role::Scheduler => Permissions {
            configure: format!("^({ns}\\..*|{SERVER_NAMED})$"),
            // The default exchange: replies, and forwards to partitions.
            write: format!("^({ns}\\..*|{SERVER_NAMED}|amq\\.default)$"),
            read: format!("^({ns}\\..*|{SERVER_NAMED})$"),
            topics: Vec::new(),
        },
        Role::Worker { queues } => {
            let pools = queues
                .iter()
                .map(|q| escape(q))
                .collect::<Vec<_>>()
                .join("|");
            Permissions {
                configure: format!("^({ns}\\.(tasks|suspect)\\.({pools})|{SERVER_NAMED})$"),
                write: format!(
                    "^({ns}\\.(results|requeue|dead|events)|{ns}\\.(tasks|suspect)\\.({pools})|{SERVER_NAMED})$"
                ),
                read: format!(
                    "^({ns}\\.(tasks|suspect)\\.({pools})|{ns}\\.(control|requeue)|{SERVER_NAMED})$"
                ),
                topics: vec![
                    TopicPermission {
                        exchange: format!("{namespace}.requeue"),
                        write: format!("^(tasks|suspect)\\.({pools})$"),
                        read: format!("^(tasks|suspect)\\.({pools})$"),
                    },
                    TopicPermission {
                        exchange: format!("{namespace}.events"),
                        write: "^worker\\.".into(),
                        read: "^$".into(),
                    },
                ],
            }
        }
        Role::Producer => Permissions {
            configure: format!("^{SERVER_NAMED}$"),
            write: format!("^({ns}\\.workflows|{SERVER_NAMED})$"),
            read: format!("^({ns}\\.events|{SERVER_NAMED})$"),
            topics: vec![TopicPermission {
                exchange: format!("{namespace}.events"),
                write: "^$".into(),
                read: "^workflow\\..+\\.progress$".into(),
            }],
        },
        Role::Observer => Permissions {
            configure: format!("^{SERVER_NAMED}$"),
            write: format!("^{SERVER_NAMED}$"),
            read: format!("^({ns}\\.events|{SERVER_NAMED})$"),
            topics: Vec::new(),
        },
    }
}

/// The `rabbitmqctl` commands that grant `user` the role's permissions on
/// `vhost`, one per line, shell-quoted.
pub fn rabbitmqctl_commands(vhost: &str, user: &str, p: &Permissions) -> Vec<String> {
    let q = shell_quote;
    let mut out = vec![format!(
        "rabbitmqctl set_permissions -p {} {} {} {} {}",
        q(vhost),
        q(user),
        q(&p.configure),
        q(&p.write),
        q(&p.read)
    )];
    for t in &p.topics {
        out.push(format!(
            "rabbitmqctl set_topic_permissions -p {} {} {} {} {}",
            q(vhost),
            q(user),
            q(&t.exchange),
            q(&t.write),
            q(&t.read)
        ));
    }
    out
}

/// `s` in single quotes for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As RabbitMQ matches a permission: the whole name (the patterns are
    /// anchored) against the regular expression.
    fn matches(pattern: &str, name: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(name)
    }

    #[test]
    fn a_worker_reaches_its_own_pools_only() {
        let p = permissions(
            "acme",
            &Role::Worker {
                queues: vec!["gpu".into(), "io".into()],
            },
        );
        for q in ["acme.tasks.gpu", "acme.suspect.io"] {
            assert!(matches(&p.read, q), "read {q}");
            assert!(matches(&p.configure, q), "configure {q}");
        }
        for q in [
            "acme.tasks.cpu",
            "acme.workflows",
            "acme.results",
            "acme.tasks.gpu2",
        ] {
            assert!(!matches(&p.read, q), "read {q}");
        }
        for x in ["acme.results", "acme.requeue", "acme.events", "acme.dead"] {
            assert!(matches(&p.write, x), "write {x}");
        }
        for x in [
            "acme.workflows",
            "acme.tasks",
            "acme.control",
            "amq.default",
            "other.results",
        ] {
            assert!(!matches(&p.write, x), "write {x}");
        }
        let requeue = &p.topics[0];
        assert!(matches(&requeue.write, "suspect.gpu"));
        assert!(!matches(&requeue.write, "tasks.cpu"));
    }

    #[test]
    fn a_producer_submits_and_reads_its_replies_only() {
        let p = permissions("acme", &Role::Producer);
        assert!(matches(&p.write, "acme.workflows"));
        for x in [
            "acme.tasks",
            "acme.results",
            "acme.control",
            "amq.default",
            "acme.events",
        ] {
            assert!(!matches(&p.write, x), "write {x}");
        }
        assert!(matches(&p.read, "amq.gen-Xy12"));
        assert!(!matches(&p.read, "acme.tasks.default"));
        assert!(matches(&p.topics[0].read, "workflow.order-1.progress"));
        assert!(!matches(&p.topics[0].read, "workflow.order-1.succeeded"));
        assert!(!matches(&p.topics[0].read, "workflow.#"));
    }

    #[test]
    fn docs_security_md_shows_exactly_these_grants() {
        let doc = include_str!("../../docs/security.md");
        for role in [
            Role::Scheduler,
            Role::Worker {
                queues: vec!["default".into()],
            },
            Role::Producer,
            Role::Observer,
        ] {
            let user = format!("warren-{}", role.name());
            for line in rabbitmqctl_commands("/", &user, &permissions("warren", &role)) {
                assert!(doc.contains(&line), "docs/security.md lacks: {line}");
            }
        }
    }

    #[test]
    fn names_are_escaped_and_commands_quoted() {
        assert_eq!(escape("a.b+c"), r"a\.b\+c");
        let p = permissions("my.ns", &Role::Observer);
        assert!(matches(&p.read, "my.ns.events"));
        assert!(!matches(&p.read, "myXns.events"));
        let cmds = rabbitmqctl_commands("/", "o'brien", &p);
        assert_eq!(cmds.len(), 1);
        assert!(cmds[0].starts_with("rabbitmqctl set_permissions -p '/' 'o'\\''brien' "));
    }
}
