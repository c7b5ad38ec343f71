//! The shortest end-to-end path: a real server, a real client, a restart.

use crate::common;

#[test]
fn put_get_delete_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    assert_eq!(c.hello().unwrap().shard_count, 2);
    c.ping().unwrap();
    c.put(b"alpha", b"1").unwrap();
    c.put(b"beta", b"2").unwrap();
    assert!(c.delete(b"beta").unwrap());
    assert!(!c.delete(b"beta").unwrap());
    let (code, stderr) = server.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let server = common::start_server(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.get(b"alpha").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(c.get(b"beta").unwrap(), None);
}
