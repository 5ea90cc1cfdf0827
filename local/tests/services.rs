//! `quiver-local up | status | down` on a private state directory and private ports, so that the
//! services the other tests use are not disturbed.

mod common;

use common::{show, PrivateStack};

#[test]
fn up_is_idempotent_and_down_stops_everything() {
    let stack = PrivateStack::new("up-test");
    stack.ok(&["up"]);
    let text = stack.ok(&["up"]);
    assert_eq!(
        text.matches("already answering").count(),
        3,
        "second up must reuse all three: {text}"
    );
    stack.ok(&["status"]);

    stack.ok(&["down"]);
    let status = stack.run(&["status"]);
    assert!(!status.status.success(), "status after down must fail: {}", show(&status));
    for port in [stack.pg, stack.valkey, stack.s3] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after down"
        );
    }
}
