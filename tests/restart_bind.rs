//! A restart right after kill -9 binds at once: the dead process's listening
//! sockets linger for milliseconds (its io_uring is torn down
//! asynchronously), and the start waits for them instead of failing with
//! ADDRESS_IN_USE (issue 22, finding 10: 3 of 6 immediate restarts failed).
//! A port another live process really holds is still refused, by name.

use crate::common;

#[test]
fn kill_9_then_start_at_once_binds() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    // (The admin endpoint takes port 0 here; it waits for a dying process's
    // socket the same way, through the same function.)
    let args = ["--shards", "2", "--listen", listen.as_str()];
    for i in 0..10 {
        let server = common::try_start_server(dir.path(), &args)
            .unwrap_or_else(|e| panic!("start {i} right after kill -9: {e}"));
        server
            .client()
            .put(b"k", format!("{i}").as_bytes())
            .unwrap();
        server.kill();
    }
    let server = common::start_server(dir.path(), &args);
    assert_eq!(
        server.client().get(b"k").unwrap().as_deref(),
        Some(&b"9"[..])
    );

    // A live server on the port: the second start is refused with the name,
    // after the short wait.
    let err = common::try_start_server(dir.path().join("other").as_path(), &args)
        .err()
        .expect("a port held by a live server is refused");
    assert!(err.contains("ADDRESS_IN_USE"), "{err}");
    server.stop();
}
