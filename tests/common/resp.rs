//! A RESP test client, a 2-shard corekv with its RESP listener, and a real
//! redis-server, for the tests that compare corekv's Redis protocol with
//! Redis's own (tests/resp*.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A corekv server with two shards (`extra`: more flags) and its RESP address.
pub fn start_two_shards(dir: &std::path::Path, extra: &[&str]) -> (super::Server, SocketAddr) {
    let mut args = vec!["--shards", "2"];
    args.extend_from_slice(extra);
    let server = super::start_server(dir, &args);
    let resp = server.resp.expect("the RESP listener is on");
    (server, resp)
}

/// One command given as text arguments, and its reply.
pub fn cmd(c: &mut Conn, args: &[&str]) -> V {
    let a: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    c.cmd(&a)
}

/// `count` keys `prefix0..`, alternating between the shards of a 2-shard
/// server (first on shard 0).
pub fn keys_across_shards(prefix: &str, count: usize) -> Vec<String> {
    use corekv::core::hash::shard_for_key;
    let all: Vec<String> = (0..256).map(|i| format!("{prefix}{i}")).collect();
    let mut out = Vec::new();
    let (mut on0, mut on1) = (
        all.iter().filter(|k| shard_for_key(k.as_bytes(), 2).0 == 0),
        all.iter().filter(|k| shard_for_key(k.as_bytes(), 2).0 == 1),
    );
    while out.len() < count {
        let next = if out.len() % 2 == 0 {
            on0.next()
        } else {
            on1.next()
        };
        out.push(next.expect("enough keys on each shard").clone());
    }
    out
}

/// A RESP value as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1` (RESP2 nil bulk).
    NilBulk,
    /// `*-1` (RESP2 nil array).
    NilArray,
    /// `_` (RESP3 null).
    Null,
    Array(Vec<V>),
    Map(Vec<(V, V)>),
    Set(Vec<V>),
    Verbatim(String, Vec<u8>),
    Other(u8, String),
}

pub struct Conn {
    pub r: BufReader<TcpStream>,
    /// Where it connected (for failure messages: a reset socket has no peer).
    pub addr: SocketAddr,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn {
            r: BufReader::new(s),
            addr,
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&out).expect("send");
    }

    /// Several commands in one write, so the server reads them together.
    pub fn send_all(&mut self, cmds: &[&[&[u8]]]) {
        let mut out = Vec::new();
        for args in cmds {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.r.get_mut().write_all(&out).expect("send");
    }

    pub fn cmd(&mut self, args: &[&[u8]]) -> V {
        self.send(args);
        self.read()
    }

    pub fn line(&mut self) -> String {
        let mut l = Vec::new();
        if let Err(e) = self.r.read_until(b'\n', &mut l) {
            panic!("read a reply line from {}: {e}", self.addr);
        }
        assert!(
            l.ends_with(b"\r\n"),
            "reply line not CRLF-terminated: {l:?}"
        );
        l.truncate(l.len() - 2);
        String::from_utf8(l).expect("reply line is text")
    }

    pub fn read(&mut self) -> V {
        let l = self.line();
        let (t, rest) = (l.as_bytes()[0], &l[1..]);
        let n = || rest.parse::<i64>().expect("a length");
        match t {
            b'+' => V::Simple(rest.into()),
            b'-' => V::Err(rest.into()),
            b':' => V::Int(n()),
            b'_' => V::Null,
            b'$' | b'=' if n() < 0 => V::NilBulk,
            b'$' | b'=' => {
                let mut b = vec![0; n() as usize + 2];
                self.r.read_exact(&mut b).expect("bulk bytes");
                b.truncate(b.len() - 2);
                if t == b'=' {
                    let text = b.split_off(4);
                    V::Verbatim(String::from_utf8_lossy(&b).into(), text)
                } else {
                    V::Bulk(b)
                }
            }
            b'*' if n() < 0 => V::NilArray,
            b'*' => V::Array((0..n()).map(|_| self.read()).collect()),
            b'~' => V::Set((0..n()).map(|_| self.read()).collect()),
            b'%' => V::Map((0..n()).map(|_| (self.read(), self.read())).collect()),
            other => V::Other(other, rest.into()),
        }
    }
}

pub fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A redis-server on a free port, killed on drop.
pub struct Redis {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A redis-server (`extra`: more flags) on a free port, once it answers.
///
/// The port is free when picked but may be taken before redis-server binds
/// it (seen twice in ~40 runs: the test then talked to another listener,
/// which reset its connection mid-script). So the server that answers must
/// report this redis-server's pid in INFO; if it does not, or redis-server
/// exits, another port is tried.
pub fn start_redis(extra: &[&str]) -> Option<Redis> {
    let Some(bin) = which("redis-server") else {
        eprintln!("SKIPPED: redis-server is not installed (CI installs redis-server)");
        return None;
    };
    let mut tried = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // corekv has one database: SELECT 1 gets the same error from both.
            .args(["--databases", "1"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut redis = Redis {
            child,
            addr,
            _dir: dir,
        };
        match wait_answering(&mut redis) {
            Ok(()) => return Some(redis),
            Err(why) => tried.push(format!("port {port}: {why}")),
        }
    }
    panic!("redis-server did not start: {tried:?}")
}

/// Wait until `redis` answers on its port as itself (its pid in INFO).
fn wait_answering(redis: &mut Redis) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = redis.child.id();
    loop {
        if let Ok(Some(status)) = redis.child.try_wait() {
            return Err(format!("redis-server exited ({status})"));
        }
        if TcpStream::connect(redis.addr).is_ok() {
            let mut c = Conn::open(redis.addr);
            // With users configured PING answers NOAUTH: up all the same,
            // and INFO is refused too, so the pid cannot be checked then.
            match c.cmd(&[b"INFO", b"server"]) {
                V::Bulk(info) => {
                    let info = String::from_utf8_lossy(&info);
                    if info.contains(&format!("process_id:{pid}\r\n")) {
                        return Ok(());
                    }
                    return Err(format!("another server answers there: {info}"));
                }
                V::Err(e) if e.starts_with("NOAUTH") => return Ok(()),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err("no answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
