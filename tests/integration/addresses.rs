//! Several broker addresses in `AMQP_ADDR`: a connection skips the ones
//! that refuse it, and an error names them all without their passwords.

use crate::support::amqp_addr;

#[tokio::test]
async fn a_list_skips_a_refused_address() {
    // Nothing listens on port 1: whichever address a connection starts
    // with (the start rotates), it ends on the broker.
    let list = format!("amqp://guest:hunter2@127.0.0.1:1/%2f,{}", amqp_addr());
    for _ in 0..3 {
        let conn = warren_shared::amqp::connect(&list, "address list probe")
            .await
            .unwrap();
        assert!(conn.status().connected());
        warren_shared::amqp::close(&conn, "probed").await;
    }
}

#[tokio::test]
async fn no_address_reachable_names_every_one() {
    let list = "amqp://u:hunter2@127.0.0.1:1/%2f, amqp://v:hunter3@127.0.0.1:2/%2f";
    let err = warren_shared::amqp::connect(list, "address list probe")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"),
        "{err}"
    );
    assert!(!err.contains("hunter"), "{err}");
}
