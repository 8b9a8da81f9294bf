//! amqps://: the whole system through a TLS endpoint with a certificate
//! made for the test, and a clear refusal when the certificate is not
//! trusted.

use crate::support::{DEADLINE, Env, amqp_addr};
use serde_json::json;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};
use warren_shared::{AmqpConfig, wire::WorkflowStatus};

/// `host:port` of the plain broker that `AMQP_ADDR` names.
fn broker_authority() -> String {
    let addr = amqp_addr();
    let rest = addr.split_once("://").map_or(addr.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}

/// A TLS terminator in front of the broker, as stunnel or a load balancer
/// would be. Returns its port and the PEM certificate it presents.
async fn tls_endpoint() -> (u16, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = broker_authority();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return; // the client refused our certificate
                };
                if let Ok(mut plain) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (port, made.cert.pem())
}

fn amqps(port: u16) -> String {
    format!("amqps://guest:guest@localhost:{port}/%2f")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_system_runs_over_amqps() {
    let (port, ca) = tls_endpoint().await;
    let mut env = Env::over(amqps(port), Some(ca)).await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("tls-worker");
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [
                {"id": "a", "type": "echo", "input": {"secret": "over tls"}},
                {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.secret}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["b"].output, Some(json!("over tls")));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_clearly() {
    let (port, _ca) = tls_endpoint().await;
    let untrusted = AmqpConfig::new(amqps(port), "wt-untrusted");
    let err = warren_producer::Client::connect(&untrusted)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect to RabbitMQ at amqps://guest:***@localhost"),
        "{err}"
    );
    assert!(!err.contains("guest:guest"), "password leaked: {err}");
    assert!(
        err.to_lowercase().contains("certificate"),
        "says why: {err}"
    );
}
