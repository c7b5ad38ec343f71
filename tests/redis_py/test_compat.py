"""corekv's Redis listener through a maintained client library (redis-py),
compared with a real redis-server in the same run (issue 20, "Tests").

Every test makes the same calls on both servers through redis-py and asserts
equal results: values, Python types, and for errors the exception class and
its message text. Where corekv differs from Redis by design, the test asserts
corekv's documented behaviour instead and names the row of
docs/redis-compatibility.md it checks.

Run by tests/redis_py.rs, which starts both servers:

    COREKV_PORT=... REDIS_PORT=... python3 -m unittest -v tests/redis_py/test_compat.py

Environment:
  COREKV_PORT, REDIS_PORT  the RESP ports of corekv and redis-server
  COREKV_PY_SELF_CHECK=1   COREKV_PORT is a second redis-server: checks the
                           tests themselves (corekv-only assertions skipped)
  COREKV_SHARD_KEYS        two keys that corekv places on different shards
                           (comma-separated; tests/redis_py.rs computes them)

Standard library and redis-py only; no test sleeps a fixed time to wait for a
condition: conditions are polled with a deadline.
"""

import os
import re
import socket
import threading
import time
import unittest

import redis

HOST = "127.0.0.1"
COREKV_PORT = int(os.environ.get("COREKV_PORT", "6380"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
# COREKV_PORT on a second redis-server: the tests check themselves, and the
# corekv-only assertions (its documented differences) are skipped.
SELF_CHECK = os.environ.get("COREKV_PY_SELF_CHECK") == "1"
SHARD_KEYS = os.environ.get("COREKV_SHARD_KEYS", "acct-0,acct-1").split(",")
TIMEOUT = 30  # seconds for any one reply; generous for a loaded machine


def client(port, **kw):
    # One connection per client, so per-connection state (name, protocol,
    # WATCH) is the connection the test thinks it is.
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=TIMEOUT,
        single_connection_client=kw.pop("single", True),
        **kw,
    )


def outcome(fn, c):
    """What fn(c) gives: ("ok", value) or ("err", exception class, text)."""
    try:
        return ("ok", fn(c))
    except redis.exceptions.RedisError as e:
        return ("err", type(e).__name__, str(e))


def raw(c, *args):
    """One command's reply as redis-py's parser gives it, without redis-py's
    per-command conversion (which turns `PING x` into False, for one)."""
    c.connection.send_command(*args)
    return c.connection.read_response()


def poll(cond, what, limit=20.0):
    """Wait until cond() is true (polled), or fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


class Both(unittest.TestCase):
    """Base: a redis-py client on each server, both flushed before each test."""

    def setUp(self):
        self.k = client(COREKV_PORT)
        self.r = client(REDIS_PORT)
        self.addCleanup(self.k.close)
        self.addCleanup(self.r.close)
        # docs/redis-compatibility.md, Server, FLUSHALL "differs": not atomic;
        # a previous test's cross-shard MSET not yet applied on a participant
        # shard may survive one pass: flush until empty.
        for c in (self.k, self.r):
            poll(lambda: c.flushall() and c.dbsize() == 0, "FLUSHALL to empty the server")

    def settled(self, n):
        """Wait until both servers count n keys. docs/redis-compatibility.md,
        Keys: "SCAN, KEYS and DBSIZE do not take locks": right after an
        MSET's OK corekv may not count its keys on the other shard yet."""
        for c in (self.k, self.r):
            poll(lambda: c.dbsize() == n, "DBSIZE to reach %d" % n)

    def same(self, fn, k=None, r=None):
        """fn on corekv and on redis gives the same value or the same error;
        returns that outcome."""
        ours, theirs = outcome(fn, k or self.k), outcome(fn, r or self.r)
        self.assertEqual(ours, theirs, "corekv (first) and redis differ")
        if ours[0] == "ok":
            self.assertEqual(type(ours[1]), type(theirs[1]))
        return ours

    def value(self, fn, want=None):
        """Like same(), and the call must succeed (with `want` if given)."""
        o = self.same(fn)
        self.assertEqual(o[0], "ok", o)
        if want is not None:
            self.assertEqual(o[1], want)
        return o[1]

    def error(self, fn, cls=redis.exceptions.ResponseError, text=None):
        """Like same(), and the call must fail with `cls` (and `text`)."""
        o = self.same(fn)
        self.assertEqual(o[0], "err", o)
        self.assertEqual(o[1], cls.__name__, o)
        if text is not None:
            self.assertEqual(o[2], text)
        return o[2]

    def script(self, calls):
        """Several raw commands (redis-py's parser, no per-command
        conversion), each compared."""
        for args in calls:
            with self.subTest(cmd=args):
                self.same(lambda c: raw(c, *args))

    def corekv_refuses(self, args, reason):
        """corekv's documented refusal of an unsupported command: Redis's
        generic error class with corekv's `unsupported command` text."""
        if SELF_CHECK:
            return
        with self.assertRaises(redis.exceptions.ResponseError) as cm:
            self.k.execute_command(*args)
        text = str(cm.exception)
        self.assertTrue(
            text.startswith("unsupported command '%s'" % args[0].lower())
            or text.startswith("unsupported command '%s'" % args[0]),
            text,
        )
        self.assertIn(reason, text)


class StringTests(Both):
    def test_get_set_and_options(self):
        v = self.value
        v(lambda c: c.get("missing"), None)
        v(lambda c: c.set("a", "1"), True)
        v(lambda c: c.get("a"), b"1")
        v(lambda c: c.set("a", "2", nx=True), None)
        v(lambda c: c.set("a", "3", xx=True), True)
        v(lambda c: c.set("b", "1", xx=True), None)
        v(lambda c: c.get("b"), None)
        v(lambda c: c.set("a", "4", get=True), b"3")
        v(lambda c: c.set("nx1", "v", nx=True, get=True), None)
        v(lambda c: c.set("nx1", "w", nx=True, get=True), b"v")
        v(lambda c: c.set("xx1", "v", xx=True, get=True), None)
        v(lambda c: c.exists("xx1"), 0)
        v(lambda c: c.set("bin", b"\x00\xff\r\n"), True)
        v(lambda c: c.get("bin"), b"\x00\xff\r\n")
        v(lambda c: c.set("empty", ""), True)
        v(lambda c: c.get("empty"), b"")
        # Numbers go over the wire as text, as redis-py sends them.
        v(lambda c: c.set("int", 42), True)
        v(lambda c: c.get("int"), b"42")
        self.error(lambda c: c.execute_command("SET", "a", "1", "NX", "XX"), text="syntax error")
        self.error(lambda c: c.execute_command("SET", "a", "1", "BOGUS"), text="syntax error")

    def test_setnx_getset_getdel(self):
        v = self.value
        v(lambda c: c.setnx("a", "x"), True)
        v(lambda c: c.setnx("a", "y"), False)
        v(lambda c: c.getset("a", "z"), b"x")
        v(lambda c: c.getset("new", "z"), None)
        v(lambda c: c.getdel("a"), b"z")
        v(lambda c: c.getdel("a"), None)
        v(lambda c: c.exists("a"), 0)

    def test_mget_mset_msetnx(self):
        v = self.value
        v(lambda c: c.mset({"k1": "v1", "k2": "v2", "k3": "v3"}), True)
        v(lambda c: c.mget("k1", "k2", "nope", "k3"), [b"v1", b"v2", None, b"v3"])
        v(lambda c: c.mget(["k3", "k3"]), [b"v3", b"v3"])
        v(lambda c: c.msetnx({"k1": "x", "k9": "y"}), False)
        v(lambda c: c.exists("k9"), 0)
        v(lambda c: c.msetnx({"k8": "x", "k9": "y"}), True)
        v(lambda c: c.mget("k8", "k9"), [b"x", b"y"])
        # The last of a repeated key wins, as Redis.
        v(lambda c: c.execute_command("MSET", "d", "1", "d", "2"), True)
        v(lambda c: c.get("d"), b"2")
        self.error(lambda c: c.execute_command("MSET", "k1"))
        self.error(lambda c: c.execute_command("MSET", "k1", "v", "k2"))
        self.error(lambda c: c.execute_command("MSETNX", "k1"))

    def test_append_strlen_ranges(self):
        v = self.value
        v(lambda c: c.append("ap", "hello"), 5)
        v(lambda c: c.append("ap", " world"), 11)
        v(lambda c: c.strlen("ap"), 11)
        v(lambda c: c.strlen("nope"), 0)
        v(lambda c: c.getrange("ap", 0, 4), b"hello")
        v(lambda c: c.getrange("ap", -5, -1), b"world")
        v(lambda c: c.getrange("ap", 10, 2), b"")
        v(lambda c: c.getrange("ap", 0, 100), b"hello world")
        v(lambda c: c.getrange("nope", 0, -1), b"")
        v(lambda c: c.substr("ap", 1, 3), b"ell")
        v(lambda c: c.setrange("sr", 5, "hi"), 7)
        v(lambda c: c.get("sr"), b"\x00\x00\x00\x00\x00hi")
        v(lambda c: c.setrange("sr", 0, "HELLO"), 7)
        v(lambda c: c.get("sr"), b"HELLOhi")
        v(lambda c: c.setrange("sr2", 0, ""), 0)
        v(lambda c: c.exists("sr2"), 0)
        self.error(lambda c: c.setrange("sr", -1, "x"), text="offset is out of range")
        self.error(lambda c: c.execute_command("GETRANGE", "ap", "x", "1"),
                   text="value is not an integer or out of range")

    def test_incr_family(self):
        v = self.value
        v(lambda c: c.incr("n"), 1)
        v(lambda c: c.incrby("n", 10), 11)
        v(lambda c: c.decr("n"), 10)
        v(lambda c: c.decrby("n", 3), 7)
        v(lambda c: c.incr("n", -8), -1)
        v(lambda c: c.get("n"), b"-1")
        notint = "value is not an integer or out of range"
        self.error(lambda c: c.execute_command("INCRBY", "n", "x"), text=notint)
        self.error(lambda c: c.execute_command("INCRBY", "n", "01"), text=notint)
        v(lambda c: c.set("s", "abc"), True)
        self.error(lambda c: c.incr("s"), text=notint)
        self.error(lambda c: c.execute_command("INCR", "s", "x"),
                   text="wrong number of arguments for 'incr' command")
        v(lambda c: c.set("big", "9223372036854775807"), True)
        self.error(lambda c: c.incr("big"), text="increment or decrement would overflow")
        v(lambda c: c.set("neg", "-9223372036854775808"), True)
        self.error(lambda c: c.decr("neg"), text="increment or decrement would overflow")
        self.error(lambda c: c.execute_command("DECRBY", "n", "-9223372036854775808"),
                   text="decrement would overflow")
        # A value with spaces or a leading "+" is not an integer for Redis.
        v(lambda c: c.set("sp", " 1"), True)
        self.error(lambda c: c.incr("sp"), text=notint)

    def test_incrbyfloat(self):
        v = self.value
        v(lambda c: c.incrbyfloat("f", 10.5), 10.5)
        v(lambda c: c.incrbyfloat("f", 0.25), 10.75)
        v(lambda c: c.incrbyfloat("f", -20), -9.25)
        v(lambda c: c.get("f"), b"-9.25")
        v(lambda c: c.set("e", "5.0e3"), True)
        v(lambda c: c.incrbyfloat("e", 200), 5200.0)
        v(lambda c: c.get("e"), b"5200")
        notfloat = "value is not a valid float"
        self.error(lambda c: c.execute_command("INCRBYFLOAT", "f", "abc"), text=notfloat)
        v(lambda c: c.set("s", "abc"), True)
        self.error(lambda c: c.incrbyfloat("s", 1), text=notfloat)
        self.error(lambda c: c.execute_command("INCRBYFLOAT", "f", "inf"),
                   text="increment would produce NaN or Infinity")
        # docs/redis-compatibility.md, Strings, INCRBYFLOAT "differs": 64-bit
        # doubles, so 0.1 + 0.2 is 0.30000000000000004 (Redis: 0.3).
        for c in (self.k, self.r):
            c.set("p", "0.1")
        self.assertEqual(self.r.incrbyfloat("p", 0.2), 0.3)
        if not SELF_CHECK:
            self.assertEqual(self.k.get("p"), b"0.1")
            self.assertEqual(self.k.incrbyfloat("p", 0.2), 0.30000000000000004)
            self.assertEqual(self.k.get("p"), b"0.30000000000000004")

    def test_bits(self):
        v = self.value
        v(lambda c: c.setbit("b", 7, 1), 0)
        v(lambda c: c.setbit("b", 7, 0), 1)
        v(lambda c: c.setbit("b", 100, 1), 0)
        v(lambda c: c.getbit("b", 100), 1)
        v(lambda c: c.getbit("b", 99), 0)
        v(lambda c: c.getbit("nope", 5), 0)
        v(lambda c: c.get("b"), b"\x00" * 12 + b"\x08")
        v(lambda c: c.set("s", "foobar"), True)
        v(lambda c: c.bitcount("s"), 26)
        v(lambda c: c.bitcount("s", 1, 1), 6)
        v(lambda c: c.bitcount("s", 1, 1, "BYTE"), 6)
        v(lambda c: c.bitcount("s", 5, 30, "BIT"), 17)
        v(lambda c: c.bitcount("nope"), 0)
        v(lambda c: c.set("z", b"\xff\xf0\x00"), True)
        v(lambda c: c.bitpos("z", 0), 12)
        v(lambda c: c.bitpos("z", 1, 2), -1)
        v(lambda c: c.bitpos("z", 1, 0, -1, "BIT"), 0)
        v(lambda c: c.bitpos("nope", 0), 0)
        v(lambda c: c.set("x", b"\x0f"), True)
        v(lambda c: c.set("y", b"\xf1\x01"), True)
        v(lambda c: c.bitop("AND", "and", "x", "y"), 2)
        v(lambda c: c.get("and"), b"\x01\x00")
        v(lambda c: c.bitop("OR", "or", "x", "y"), 2)
        v(lambda c: c.get("or"), b"\xff\x01")
        v(lambda c: c.bitop("XOR", "xor", "x", "y"), 2)
        v(lambda c: c.get("xor"), b"\xfe\x01")
        v(lambda c: c.bitop("NOT", "not", "x"), 1)
        v(lambda c: c.get("not"), b"\xf0")
        v(lambda c: c.bitop("AND", "gone", "nope", "nope2"), 0)
        v(lambda c: c.exists("gone"), 0)
        self.error(lambda c: c.bitop("NOT", "n", "x", "y"),
                   text="BITOP NOT must be called with a single source key.")
        self.error(lambda c: raw(c, "SETBIT", "b", "1", "2"),
                   text="bit is not an integer or out of range")
        self.error(lambda c: c.execute_command("SETBIT", "b", "-1", "1"),
                   text="bit offset is not an integer or out of range")
        self.error(lambda c: c.execute_command("BITOP", "NAND", "d", "x"), text="syntax error")

    def test_lcs(self):
        v = self.value
        v(lambda c: c.mset({"l1": "ohmytext", "l2": "mynewtext"}), True)
        v(lambda c: c.execute_command("LCS", "l1", "l2"), b"mytext")
        v(lambda c: c.execute_command("LCS", "l1", "l2", "LEN"), 6)
        v(lambda c: c.execute_command("LCS", "l1", "l2", "IDX"))
        v(lambda c: c.execute_command("LCS", "l1", "l2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"))
        v(lambda c: c.execute_command("LCS", "l1", "nope"), b"")
        self.error(lambda c: c.execute_command("LCS", "l1", "l2", "LEN", "IDX"))

    def test_unsupported_string_commands(self):
        # docs/redis-compatibility.md, Strings: "BITFIELD, BITFIELD_RO: not
        # supported yet".
        self.corekv_refuses(["BITFIELD", "b", "GET", "u4", "0"], "")
        self.corekv_refuses(["BITFIELD_RO", "b", "GET", "u4", "0"], "")


class EdgeCaseTests(Both):
    """Argument parsing and formatting corners, where a reimplementation is
    most likely to drift from Redis."""

    def test_integer_arguments(self):
        self.script([
            ("SET", "n", "10"),
            ("INCRBY", "n", "+1"),
            ("INCRBY", "n", "-0"),
            ("INCRBY", "n", " 1"),
            ("INCRBY", "n", "1 "),
            ("INCRBY", "n", "0x10"),
            ("INCRBY", "n", "1e3"),
            ("INCRBY", "n", ""),
            ("INCRBY", "n", "9223372036854775807"),
            ("INCRBY", "n", "9223372036854775808"),
            ("INCRBY", "n", "-9223372036854775809"),
            ("DECRBY", "n", "-9223372036854775807"),
            ("GET", "n"),
            ("SET", "m", "-0"),
            ("INCR", "m"),
            ("SET", "m", "00"),
            ("INCR", "m"),
            ("SET", "m", "18446744073709551615"),
            ("INCR", "m"),
            ("GETRANGE", "n", "0", "9223372036854775807"),
            ("GETRANGE", "n", "-9223372036854775808", "-1"),
            ("GETRANGE", "n", "0", "9223372036854775808"),
            ("SETRANGE", "s", "1e3", "x"),
            ("SETRANGE", "s", "+3", "x"),
            ("GET", "s"),
        ])

    def test_float_arguments(self):
        self.script([
            ("INCRBYFLOAT", "f", "1.5e2"),
            ("INCRBYFLOAT", "f", "-1.5E2"),
            ("GET", "f"),
            ("INCRBYFLOAT", "f", "3"),
            ("INCRBYFLOAT", "f", ".5"),
            ("INCRBYFLOAT", "f", "5."),
            ("INCRBYFLOAT", "f", "+2"),
            ("INCRBYFLOAT", "f", " 1"),
            ("INCRBYFLOAT", "f", "1 "),
            ("INCRBYFLOAT", "f", "0x10"),
            ("INCRBYFLOAT", "f", "-0x1.8p3"),
            ("INCRBYFLOAT", "f", "0x1p"),
            ("INCRBYFLOAT", "f", "0x"),
            ("INCRBYFLOAT", "f", "nan"),
            ("INCRBYFLOAT", "f", "-inf"),
            ("INCRBYFLOAT", "f", ""),
            ("GET", "f"),
            ("SET", "g", "  2"),
            ("INCRBYFLOAT", "g", "1"),
            ("SET", "g", "0x10"),
            ("INCRBYFLOAT", "g", "1"),
            ("INCRBYFLOAT", "g", "0.5"),
            ("INCRBYFLOAT", "g", "-0.25"),
            ("SET", "h", "7"),
            ("INCRBYFLOAT", "h", "-7"),
            ("GET", "h"),
        ])
        # docs/redis-compatibility.md, Strings, INCRBYFLOAT "differs": 64-bit
        # doubles where Redis has 80-bit long doubles: 100 + 1e20 rounds
        # away the 100, and 1e400 is infinite (refused).
        self.assertEqual(self.r.execute_command("INCRBYFLOAT", "big", "100"), 100.0)
        self.assertEqual(self.r.execute_command("INCRBYFLOAT", "big", "1e20"),
                         100000000000000000096.0)
        self.r.set("huge", "1e400")
        self.assertTrue(raw(self.r, "INCRBYFLOAT", "huge", "1").startswith(b"1000000000"))
        if not SELF_CHECK:
            self.k.set("big", "100")
            self.assertEqual(raw(self.k, "INCRBYFLOAT", "big", "1e20"), b"100000000000000000000")
            self.k.set("huge", "1e400")
            with self.assertRaises(redis.exceptions.ResponseError) as cm:
                self.k.incrbyfloat("huge", 1)
            self.assertEqual(str(cm.exception), "increment would produce NaN or Infinity")

    def test_bit_arguments(self):
        self.script([
            ("SET", "s", "foobar"),
            ("BITCOUNT", "s", "-1", "-1"),
            ("BITCOUNT", "s", "3", "1"),
            ("BITCOUNT", "s", "0"),
            ("BITCOUNT", "s", "0", "-1", "BOGUS"),
            ("BITCOUNT", "s", "-100", "100"),
            ("BITCOUNT", "s", "0", "-1", "bit"),
            ("SET", "ones", b"\xff\xff"),
            ("BITPOS", "ones", "0"),
            ("BITPOS", "ones", "0", "0"),
            ("BITPOS", "ones", "0", "0", "-1"),
            ("BITPOS", "ones", "1", "1", "0"),
            ("BITPOS", "ones", "2"),
            ("BITPOS", "ones", "0", "3", "5", "BIT"),
            ("BITPOS", "s", "1", "-1", "-1", "BIT"),
            ("GETBIT", "s", "4294967296"),
            ("GETBIT", "s", "-1"),
            ("SETBIT", "s", "x", "1"),
            ("SETBIT", "s", "0", "x"),
            ("BITOP", "and", "d"),
            ("BITOP", "OR", "d", "s", "ones", "nope"),
            ("GET", "d"),
        ])
        # docs: GETBIT "offset bound as SETBIT's", SETBIT "differs": the
        # offset must lie within value_bytes_max (Redis: 512 MB).
        self.assertEqual(self.r.getbit("s", 4294967295), 0)
        if not SELF_CHECK:
            with self.assertRaises(redis.exceptions.ResponseError) as cm:
                self.k.getbit("s", 4294967295)
            self.assertEqual(str(cm.exception), "bit offset is not an integer or out of range")

    def test_glob_patterns(self):
        names = ["a", "b", "c", "ab", "abc", "a*b", "a?b", "a[b", "a\\b", "hello",
                 "hallo", "hxllo", "hllo", "heeeello", "x", "-", "]", "^a", "\x00k",
                 "k\x00", "\xe2\x98\x83"]
        for c in (self.k, self.r):
            c.mset({n: "v" for n in names})
        self.settled(len(names))
        patterns = ["*", "?", "??", "a*", "*b", "a?b", "a\\*b", "a\\?b", "a[*]b",
                    "h?llo", "h*llo", "h[ae]llo", "h[^e]llo", "h[a-b]llo", "h[b-a]llo",
                    "[!a]", "[]]", "[^]]", "\\]", "a[b", "a[", "[a-", "\\", "a\\",
                    "a\\\\b", "*\x00*", "\xe2*", "[-]", "[a-c]", "[^a-c]", "***", "h*l*o"]
        for pat in patterns:
            with self.subTest(pattern=pat):
                self.value(lambda c: sorted(c.keys(pat)))
                self.value(lambda c: sorted(c.scan_iter(match=pat, count=1000)))

    def test_big_and_binary_values(self):
        big = os.urandom(1 << 20)
        v = self.value
        v(lambda c: c.set("big", big), True)
        v(lambda c: c.get("big") == big, True)
        v(lambda c: c.append("big", b"tail"), (1 << 20) + 4)
        v(lambda c: c.getrange("big", -4, -1), b"tail")
        v(lambda c: c.strlen("big"), (1 << 20) + 4)
        v(lambda c: c.object("encoding", "big"), b"raw")
        v(lambda c: c.set(b"\x00key\r\n", b"\x00"), True)
        v(lambda c: c.get(b"\x00key\r\n"), b"\x00")
        v(lambda c: raw(c, "LCS", "big", b"\x00key\r\n", "LEN"))
        v(lambda c: c.set("int", "-12345678901234"), True)
        v(lambda c: c.object("encoding", "int"), b"int")
        for val in ("0", "-0", "01", "+1", " 1", "9223372036854775807",
                    "9223372036854775808", "x" * 44, "x" * 45, "1.0"):
            with self.subTest(value=val):
                v(lambda c: c.set("e", val) and c.object("encoding", "e"))


class KeyTests(Both):
    def test_del_exists_touch_type(self):
        v = self.value
        v(lambda c: c.mset({"a": "1", "b": "2", "c": "3"}), True)
        v(lambda c: c.exists("a", "a", "nope", "b"), 3)
        v(lambda c: c.touch("a", "a", "nope"), 2)
        v(lambda c: c.type("a"), b"string")
        v(lambda c: c.type("nope"), b"none")
        v(lambda c: c.delete("a", "a", "nope"), 1)
        v(lambda c: c.unlink("b", "c"), 2)
        v(lambda c: c.exists("a", "b", "c"), 0)
        self.error(lambda c: c.execute_command("DEL"),
                   text="wrong number of arguments for 'del' command")
        self.error(lambda c: c.execute_command("EXISTS"),
                   text="wrong number of arguments for 'exists' command")

    def test_ttl_of_keys_without_expiry(self):
        v = self.value
        v(lambda c: c.set("a", "1"), True)
        v(lambda c: c.ttl("a"), -1)
        v(lambda c: c.ttl("nope"), -2)
        v(lambda c: c.pttl("a"), -1)
        v(lambda c: c.pttl("nope"), -2)
        v(lambda c: c.execute_command("EXPIRETIME", "a"), -1)
        v(lambda c: c.execute_command("PEXPIRETIME", "nope"), -2)
        v(lambda c: c.persist("a"), False)
        v(lambda c: c.persist("nope"), False)

    def test_keys_scan_dbsize(self):
        names = ["k%d" % i for i in range(300)] + ["a", "b", "ab", "x:1", "x:2"]
        for c in (self.k, self.r):
            c.mset({n: "v" for n in names})
        v = self.value
        self.settled(len(names))
        v(lambda c: c.dbsize(), len(names))
        # docs: KEYS "differs": corekv answers in key order; Redis's order is
        # unspecified, so compare as sets.
        v(lambda c: sorted(c.keys("*")), sorted(n.encode() for n in names))
        v(lambda c: sorted(c.keys("k1?")), sorted(("k1%d" % i).encode() for i in range(10)))
        v(lambda c: sorted(c.keys("[ab]")), [b"a", b"b"])
        v(lambda c: sorted(c.keys("x:*")), [b"x:1", b"x:2"])
        v(lambda c: c.keys("none*"), [])
        # SCAN: the cursor is opaque (docs: SCAN "differs"), the union of the
        # pages is every key exactly once, on both.
        for kw in ({}, {"count": 7}, {"match": "k2*", "count": 50},
                   {"match": "*", "count": 1000, "_type": "string"}):
            seen = self.value(lambda c: sorted(c.scan_iter(**kw)))
            self.assertEqual(len(seen), len(set(seen)), kw)
        v(lambda c: list(c.scan_iter(_type="hash")), [])
        v(lambda c: sorted(c.scan_iter(match="x:*", count=1000)), [b"x:1", b"x:2"])
        self.error(lambda c: c.execute_command("SCAN", "0", "COUNT", "0"), text="syntax error")
        self.error(lambda c: c.execute_command("SCAN", "0", "COUNT", "x"),
                   text="value is not an integer or out of range")
        self.error(lambda c: c.execute_command("SCAN", "0", "BOGUS", "1"), text="syntax error")
        self.error(lambda c: c.execute_command("SCAN", "x"), text="invalid cursor")
        v(lambda c: c.flushdb(), True)
        v(lambda c: c.dbsize(), 0)
        v(lambda c: c.set("a", "1"), True)
        v(lambda c: c.flushall(asynchronous=True), True)
        v(lambda c: c.dbsize(), 0)
        v(lambda c: c.set("a", "1"), True)
        v(lambda c: c.execute_command("FLUSHALL", "SYNC"), True)
        v(lambda c: c.dbsize(), 0)
        self.error(lambda c: c.execute_command("FLUSHALL", "NOW"), text="syntax error")

    def test_object_encoding_and_wait(self):
        v = self.value
        v(lambda c: c.mset({"i": "123", "s": "short", "r": "x" * 45}), True)
        v(lambda c: c.object("encoding", "i"), b"int")
        v(lambda c: c.object("encoding", "s"), b"embstr")
        v(lambda c: c.object("encoding", "r"), b"raw")
        v(lambda c: c.object("encoding", "nope"), None)
        self.error(lambda c: c.execute_command("OBJECT", "BOGUS", "i"),
                   text="unknown subcommand 'BOGUS'. Try OBJECT HELP.")
        # docs: OBJECT ENCODING "differs": the other OBJECT subcommands get
        # Redis's unknown-subcommand error (Redis answers FREQ with its LFU
        # policy error, REFCOUNT and IDLETIME with numbers).
        if not SELF_CHECK:
            for sub in ("FREQ", "REFCOUNT", "IDLETIME"):
                with self.assertRaises(redis.exceptions.ResponseError) as cm:
                    self.k.execute_command("OBJECT", sub, "i")
                self.assertEqual(str(cm.exception),
                                 "unknown subcommand '%s'. Try OBJECT HELP." % sub)
        # docs: WAIT "differs" only when more replicas than exist are asked
        # for with a timeout; WAIT 0 0 is the same on both.
        v(lambda c: c.execute_command("WAIT", "0", "0"), 0)
        self.error(lambda c: c.execute_command("WAIT", "x", "0"),
                   text="value is not an integer or out of range")
        self.error(lambda c: c.execute_command("WAIT", "0", "-1"),
                   text="timeout is negative")

    def test_rename_copy_randomkey(self):
        # docs/redis-compatibility.md, Keys: RENAME, RENAMENX, COPY (atomic
        # across shards, expiry moved with the value), RANDOMKEY.
        same, err = self.same, self.error
        for c in (self.k, self.r):
            c.set("a", "1", exat=4000000000)
            c.set("c", "3")
        err(lambda c: c.rename("nope", "b"), text="no such key")
        same(lambda c: c.rename("a", "b"))
        same(lambda c: (c.get("a"), c.get("b"), c.expiretime("b")))
        same(lambda c: c.renamenx("b", "c"))
        same(lambda c: c.copy("b", "c"))
        same(lambda c: c.copy("b", "c", replace=True))
        same(lambda c: (c.get("c"), c.expiretime("c")))
        err(lambda c: c.copy("b", "b"), text="source and destination objects are the same")
        same(lambda c: c.copy("nope", "d"))
        same(lambda c: c.renamenx("b", "e"))
        same(lambda c: (c.mget("b", "c", "e"), c.expiretime("e")))
        same(lambda c: c.randomkey() in (b"c", b"e"))
        for c in (self.k, self.r):
            c.flushall()
        same(lambda c: c.randomkey())
        # corekv has one database: COPY to another is refused (Redis copies).
        if not SELF_CHECK:
            with self.assertRaises(redis.exceptions.ResponseError) as cm:
                self.k.copy("x", "y", destination_db=1)
            self.assertIn("DB index is out of range", str(cm.exception))

    def test_unsupported_key_commands(self):
        # docs/redis-compatibility.md, Keys: "MOVE, SWAPDB: not supported",
        # "DUMP, RESTORE, MIGRATE: not supported".
        for c in (self.k, self.r):
            c.set("a", "1")
        self.corekv_refuses(["MOVE", "a", "1"], "one database")
        self.corekv_refuses(["DUMP", "a"], "")


class ErrorTests(Both):
    def test_error_texts(self):
        err = self.error
        err(lambda c: c.execute_command("FOO", "a", "b"),
            text="unknown command 'FOO', with args beginning with: 'a' 'b' ")
        err(lambda c: c.execute_command("foo"),
            text="unknown command 'foo', with args beginning with: ")
        # The data types corekv does not have get Redis's own unknown-command
        # error on corekv; on Redis they exist, so only corekv is checked.
        if not SELF_CHECK:
            with self.assertRaises(redis.exceptions.ResponseError) as cm:
                self.k.lpush("l", "x")
            self.assertEqual(
                str(cm.exception),
                "unknown command 'LPUSH', with args beginning with: 'l' 'x' ",
            )
        err(lambda c: c.execute_command("GET"),
            text="wrong number of arguments for 'get' command")
        err(lambda c: c.execute_command("GET", "a", "b"),
            text="wrong number of arguments for 'get' command")
        err(lambda c: c.execute_command("SET", "a"),
            text="wrong number of arguments for 'set' command")
        err(lambda c: c.execute_command("MGET"),
            text="wrong number of arguments for 'mget' command")
        err(lambda c: c.execute_command("SET", "a", "1", "GET", "EX"), text="syntax error")
        err(lambda c: c.execute_command("SELECT", "1"), text="DB index is out of range")
        err(lambda c: c.execute_command("SELECT", "x"),
            text="value is not an integer or out of range")
        err(lambda c: c.execute_command("INCRBY", "n", "1.5"),
            text="value is not an integer or out of range")
        err(lambda c: c.execute_command("CLIENT", "FOO"))
        err(lambda c: c.execute_command("COMMAND", "FOO"))
        err(lambda c: c.execute_command("CONFIG", "GET"),
            text="wrong number of arguments for 'config|get' command")
        err(lambda c: c.execute_command("HELLO", "4"),
            cls=redis.exceptions.ResponseError,
            text="NOPROTO unsupported protocol version")
        # AUTH without a password configured: Redis's text, on both.
        err(lambda c: c.execute_command("AUTH", "pw"))
        err(lambda c: c.execute_command("AUTH", "someone", "pw"))
        self.value(lambda c: c.execute_command("AUTH", "default", "pw"), True)
        # The connection still works after every error.
        self.value(lambda c: c.ping(), True)


class ConnectionTests(Both):
    def test_ping_echo_select_quit(self):
        v = self.value
        v(lambda c: c.ping(), True)
        v(lambda c: raw(c, "PING", "hello"), b"hello")
        v(lambda c: raw(c, "PING"), b"PONG")
        v(lambda c: c.echo("x y"), b"x y")
        v(lambda c: c.echo(b"\x00bin"), b"\x00bin")
        v(lambda c: c.execute_command("SELECT", "0"), True)
        self.error(lambda c: c.execute_command("PING", "a", "b"))
        v(lambda c: c.execute_command("QUIT"), True)
        # The server closed the connection; a new one works.
        for c in (self.k, self.r):
            c.connection.disconnect()
        v(lambda c: c.ping(), True)

    def test_client_names_ids_info(self):
        v = self.value
        v(lambda c: c.client_getname(), None)
        v(lambda c: c.client_setname("myname"), True)
        v(lambda c: c.client_getname(), "myname")
        self.error(lambda c: c.client_setname("bad name"))
        v(lambda c: c.client_setname(""), True)
        v(lambda c: c.client_getname(), None)
        self.error(lambda c: c.execute_command("CLIENT", "GETNAME", "x"))
        # Ids and addresses differ by value; their shape is compared, on the
        # fields corekv's CLIENT INFO has (docs: "CLIENT INFO shows id,
        # addresses, name, db, resp").
        for c in (self.k, self.r):
            c.client_setname("me")
            cid = c.client_id()
            self.assertIsInstance(cid, int)
            line = raw(c, "CLIENT", "INFO").decode()
            self.assertTrue(line.endswith("\n"), line)
            info = dict(f.split("=", 1) for f in line.split())
            self.assertEqual(int(info["id"]), cid)
            self.assertEqual(info["name"], "me")
            self.assertEqual(info["db"], "0")
            self.assertEqual(info["resp"], "2")
            self.assertTrue(info["addr"].startswith("127.0.0.1:"), info)
            self.assertTrue(info["laddr"].endswith(":%d" % c.connection.port), info)
        # redis-py's client_info() converts Redis's buffer and pub/sub
        # counters (idle, sub, psub, qbuf, omem, ...) to int: corekv's line
        # has every one of them (docs: CLIENT INFO "differs": the buffer
        # fields read 0), so it parses on both.
        for c in (self.k, self.r):
            info = c.client_info()
            self.assertEqual(info["name"], "me")
            self.assertEqual((info["db"], info["multi"], info["flags"]), (0, -1, "N"))
            self.assertEqual((info["sub"], info["psub"]), (0, 0))
            self.assertTrue(0 <= info["idle"] <= 1, info)

    def test_client_list_and_kill(self):
        # docs: CLIENT LIST "differs": the fields id addr laddr fd name age db
        # user resp (Redis has more); compared on those fields.
        common = ["id", "addr", "laddr", "fd", "name", "age", "db", "user", "resp"]
        for port, c in ((COREKV_PORT, self.k), (REDIS_PORT, self.r)):
            other = client(port)
            other.client_setname("victim")
            c.client_setname("killer")
            # Connections of earlier tests may still be listed for a moment
            # after they closed (docs: CLIENT KILL, "CLIENT LIST may show it
            # for a moment"): wait for exactly these two.
            poll(lambda: sorted(x["name"] for x in c.client_list()) == ["killer", "victim"],
                 "CLIENT LIST to show only this test's two clients")
            clients = c.client_list()
            for x in clients:
                for f in common:
                    self.assertIn(f, x)
            victim = next(x for x in clients if x["name"] == "victim")
            self.assertEqual(c.client_list(client_id=[victim["id"]])[0]["name"], "victim")
            self.assertEqual(len(c.client_list(_type="normal")), 2)
            # Filter form by ID, then the old form on a gone address.
            self.assertEqual(c.client_kill_filter(_id=victim["id"]), 1)
            with self.assertRaises(redis.exceptions.ConnectionError):
                other.connection.send_command("PING")
                other.connection.read_response()
            poll(lambda: len(c.client_list()) == 1, "the killed client to go")
            with self.assertRaises(redis.exceptions.ResponseError) as cm:
                c.client_kill(victim["addr"])
            self.assertEqual(str(cm.exception), "No such client")
            self.assertEqual(c.client_kill_filter(_id=victim["id"]), 0)
            self.assertEqual(c.client_kill_filter(_type="normal", skipme=True), 0)
            other.close()
            # The old form on a live address, then the ADDR, LADDR and USER
            # filters, and SKIPME no (the caller goes too, after its reply).
            for how in ("old", "addr", "laddr", "user"):
                victim = client(port)
                victim.client_setname("v")
                vinfo = next(x for x in c.client_list() if x["name"] == "v")
                if how == "old":
                    self.assertTrue(c.client_kill(vinfo["addr"]))
                elif how == "addr":
                    self.assertEqual(c.client_kill_filter(_id=None, addr=vinfo["addr"]), 1)
                elif how == "laddr":
                    # Every client of the server shares the local address.
                    self.assertEqual(c.client_kill_filter(laddr=vinfo["laddr"], skipme=True), 1)
                else:
                    self.assertEqual(c.client_kill_filter(user="default", skipme=True), 1)
                poll(lambda: len(c.client_list()) == 1, "the killed client to go (%s)" % how)
                victim.close()
            self.assertEqual(c.client_kill_filter(_id=c.client_id(), skipme=False), 1)
            with self.assertRaises(redis.exceptions.ConnectionError):
                c.connection.send_command("PING")
                c.connection.read_response()
            c.connection.disconnect()
            self.assertTrue(c.ping())
        self.error(lambda c: c.execute_command("CLIENT", "KILL", "ID", "x"))
        self.error(lambda c: c.execute_command("CLIENT", "KILL", "BOGUS", "1"), text="syntax error")
        self.error(lambda c: c.execute_command("CLIENT", "KILL", "TYPE", "bogus"))

    def test_hello_resp2(self):
        def hello(c, *args):
            reply = c.execute_command("HELLO", *args)
            d = dict(zip(reply[::2], reply[1::2]))
            # The connection id differs; corekv says version 7.0.15, the
            # Redis version its replies are tested against (docs: HELLO).
            d[b"id"] = None
            d[b"version"] = None
            return d

        d = self.value(lambda c: hello(c, "2"))
        self.assertEqual(d[b"server"], b"redis")
        self.assertEqual(d[b"proto"], 2)
        self.value(lambda c: hello(c, "2", "SETNAME", "n2"))
        self.value(lambda c: c.client_getname(), "n2")
        self.value(lambda c: c.execute_command("HELLO", "2", "AUTH", "default", "x")[0], b"server")
        self.error(lambda c: c.execute_command("HELLO", "x"),
                   text="Protocol version is not an integer or out of range")
        if not SELF_CHECK:
            self.assertEqual(self.k.execute_command("HELLO")[3], b"7.0.15")

    def test_reset(self):
        v = self.value
        v(lambda c: c.client_setname("n"), True)
        v(lambda c: raw(c, "RESET"), b"RESET")
        v(lambda c: c.client_getname(), None)


class ServerTests(Both):
    def test_time_lastsave_debug_sleep(self):
        now = time.time()
        for c in (self.k, self.r):
            secs, micros = c.time()
            self.assertIsInstance(secs, int)
            self.assertTrue(0 <= micros < 1_000_000)
            self.assertLess(abs(secs - now), 60)
            # docs: LASTSAVE "differs": corekv's is its start time; both are a
            # Unix time not in the future.
            self.assertLessEqual(c.lastsave().timestamp(), now + 60)
        self.value(lambda c: c.execute_command("DEBUG", "SLEEP", "0"), b"OK")
        self.value(lambda c: c.execute_command("DEBUG", "SLEEP", "0.01"), b"OK")

    def test_config_get(self):
        v = self.value
        v(lambda c: c.config_get("databases"), {"databases": "1"})
        v(lambda c: c.config_get("save"), {"save": ""})
        v(lambda c: c.config_get("no-such-param"), {})
        # docs: CONFIG GET "differs": appendonly is yes on corekv (every
        # write goes to its WAL), appendfsync follows --durability, and
        # maxclients is corekv's own limit.
        for c in (self.k, self.r):
            self.assertTrue(int(c.config_get("maxclients")["maxclients"]) > 0)
        if not SELF_CHECK:
            self.assertEqual(self.k.config_get("appendonly"), {"appendonly": "yes"})
            self.assertIn(self.k.config_get("appendfsync")["appendfsync"],
                          ("always", "everysec"))
        # docs: CONFIG SET of a parameter to the value it has answers OK on
        # both (a no-op); a change is refused on corekv with Redis's error
        # shape; unknown parameters and odd argument counts get Redis's
        # errors on both.
        same, err = self.same, self.error
        same(lambda c: c.config_set("save", ""))
        for c in (self.k, self.r):
            mc = c.config_get("maxclients")["maxclients"]
            self.assertTrue(c.config_set("maxclients", mc))
        err(lambda c: c.config_set("no-such-param", "1"),
            text="Unknown option or number of arguments for CONFIG SET - 'no-such-param'")
        err(lambda c: c.execute_command("CONFIG", "SET", "save"),
            text="wrong number of arguments for 'config|set' command")
        if not SELF_CHECK:
            with self.assertRaises(redis.exceptions.ResponseError) as cm:
                self.k.config_set("databases", "16")
            self.assertEqual(
                str(cm.exception),
                "CONFIG SET failed (possibly related to argument 'databases') - "
                "corekv has one database (docs/settings.md)",
            )
            with self.assertRaises(redis.exceptions.ResponseError):
                self.k.config_resetstat()

    def test_info_sections(self):
        for c in (self.k, self.r):
            c.mset({"a": "1", "b": "2", "c": "3"})
        self.settled(3)
        # Values differ (pids, uptimes, versions); the structure and the
        # keyspace counts are the same.
        ours, theirs = self.k.info(), self.r.info()
        for field in ["redis_version", "process_id", "tcp_port", "uptime_in_seconds",
                      "connected_clients", "maxclients", "total_connections_received",
                      "total_commands_processed", "used_memory", "used_memory_rss",
                      "maxmemory", "maxmemory_policy", "loading", "aof_enabled",
                      "aof_last_write_status", "rdb_bgsave_in_progress",
                      "rdb_last_bgsave_status"]:
            self.assertIn(field, ours)
            self.assertIn(field, theirs)
            self.assertEqual(type(ours[field]), type(theirs[field]), field)
        self.assertEqual(ours["tcp_port"], COREKV_PORT)
        self.assertEqual(theirs["tcp_port"], REDIS_PORT)
        self.value(lambda c: c.info("keyspace"), {"db0": {"keys": 3, "expires": 0, "avg_ttl": 0}})
        self.value(lambda c: sorted(c.info("server").keys()) and c.info("server")["tcp_port"] > 0,
                   True)
        self.value(lambda c: c.info("clients")["connected_clients"] >= 1, True)
        self.value(lambda c: "total_commands_processed" in c.info("stats"), True)
        # Memory and persistence come from what the shards publish: a real
        # resident size, not loading, the WAL healthy.
        self.value(lambda c: c.info("memory")["used_memory_rss"] > 1 << 20, True)
        self.value(lambda c: (c.info("persistence")["loading"],
                              c.info("persistence")["aof_last_write_status"]), (0, "ok"))
        if not SELF_CHECK:
            self.assertIn("corekv_version", ours)
            self.assertEqual(self.k.info("persistence")["corekv_status"], "serving")
            self.assertEqual(self.k.info("persistence")["aof_enabled"], 1)
        # Raw text: Redis's section headers and CRLF lines.
        for c in (self.k, self.r):
            text = raw(c, "INFO", "keyspace")
            self.assertTrue(text.startswith(b"# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0"), text)

    def test_command_count_info_docs(self):
        ours, theirs = self.k.command_count(), self.r.command_count()
        self.assertGreater(ours, 50)
        self.assertGreaterEqual(theirs, ours)
        # COMMAND INFO: name, arity, key positions as Redis for what corekv has.
        for name in ["get", "set", "mget", "mset", "del", "incr", "getrange", "ping"]:
            def info(c, name=name):
                (entry,) = raw(c, "COMMAND", "INFO", name)
                return entry[0], entry[1], entry[3:6]
            self.value(info)
        self.value(lambda c: raw(c, "COMMAND", "INFO", "nosuch"), [None])
        # COMMAND (all): every corekv command is a Redis command with the same
        # arity.
        ours = self.k.command()
        theirs = self.r.command()
        for name, entry in ours.items():
            self.assertIn(name, theirs)
            self.assertEqual(entry["arity"], theirs[name]["arity"], name)
        # COMMAND DOCS: summary, since and group present for a command.
        for c in (self.k, self.r):
            reply = raw(c, "COMMAND", "DOCS", "get")
            self.assertEqual(reply[0], b"get")
            doc = dict(zip(reply[1][::2], reply[1][1::2]))
            for field in (b"summary", b"since", b"group"):
                self.assertIn(field, doc)
            self.assertEqual(doc[b"group"], b"string")
            self.assertEqual(doc[b"since"], b"1.0.0")


class PipelineTests(Both):
    def test_thousand_commands_in_one_pipeline(self):
        def run(c):
            p = c.pipeline(transaction=False)
            for i in range(250):
                p.set("p%d" % i, i)
                p.incr("c")
                p.get("p%d" % (i // 2))
                p.append("log", "%d," % i)
            return p.execute()

        replies = self.value(run)
        self.assertEqual(len(replies), 1000)
        self.value(lambda c: c.get("c"), b"250")
        self.settled(252)

    def test_errors_inside_a_pipeline(self):
        def run(c):
            p = c.pipeline(transaction=False)
            p.set("a", "x")
            p.incr("a")
            p.execute_command("SET", "b", "1", "BOGUS")
            p.get("a")
            return [(type(x).__name__, str(x)) if isinstance(x, Exception) else x
                    for x in p.execute(raise_on_error=False)]

        self.value(run)


class TransactionTests(Both):
    def test_multi_exec_replies_and_errors(self):
        def run(c):
            p = c.pipeline(transaction=True)
            p.set("a", "1")
            p.incr("a")
            p.mset({"b": "x", "c": "y"})
            p.mget("a", "b", "c", "nope")
            p.incr("b")  # fails when it runs, the others still apply
            p.get("c")
            return [(type(x).__name__, str(x)) if isinstance(x, Exception) else x
                    for x in p.execute(raise_on_error=False)]

        self.value(run)
        self.value(lambda c: c.mget("a", "b", "c"), [b"2", b"x", b"y"])

        def queue_error(c):
            p = c.pipeline(transaction=True)
            p.set("d", "1")
            p.execute_command("NOSUCHCMD")
            p.execute()

        # redis-py reports the queuing error (EXECABORT on the wire).
        self.error(queue_error, text="Command # 2 (NOSUCHCMD) of pipeline caused error: "
                   "unknown command 'NOSUCHCMD', with args beginning with: ")
        self.value(lambda c: c.exists("d"), 0)
        self.error(lambda c: c.execute_command("EXEC"), text="EXEC without MULTI")
        self.error(lambda c: c.execute_command("DISCARD"), text="DISCARD without MULTI")

        def raw_multi(c):
            out = [c.execute_command("MULTI")]
            out.append(outcome(lambda c: c.execute_command("MULTI"), c))
            out.append(c.execute_command("SET", "q", "1"))
            out.append(outcome(lambda c: c.execute_command("WATCH", "q"), c))
            out.append(c.execute_command("DISCARD"))
            out.append(c.exists("q"))
            return out

        self.value(raw_multi)

    def test_exec_is_atomic_across_shards(self):
        # The two keys live on different corekv shards (tests/redis_py.rs
        # picks them). A transfer moves units from one to the other in one
        # MULTI/EXEC; a concurrent reader (MGET, and a read-only MULTI) must
        # always see the total unchanged.
        a, b = SHARD_KEYS[0], SHARD_KEYS[1]
        total = 2000
        for port, c in ((COREKV_PORT, self.k), (REDIS_PORT, self.r)):
            c.mset({a: 1000, b: 1000})
            stop = threading.Event()
            bad, reads = [], [0]

            def reader():
                rc = client(port)
                try:
                    while not stop.is_set():
                        reads[0] += 1
                        x, y = rc.mget(a, b)
                        if int(x) + int(y) != total:
                            bad.append(("mget", x, y))
                        p = rc.pipeline(transaction=True)
                        p.get(a)
                        p.get(b)
                        x, y = p.execute()
                        if int(x) + int(y) != total:
                            bad.append(("multi", x, y))
                except Exception as e:  # a reader that dies must fail the test
                    bad.append(("reader died", repr(e)))
                finally:
                    rc.close()

            t = threading.Thread(target=reader)
            t.start()
            try:
                for i in range(150):
                    n = (i % 7) + 1
                    p = c.pipeline(transaction=True)
                    p.decrby(a, n)
                    p.incrby(b, n)
                    p.execute()
                # The reader has overlapped the writes at least a little.
                poll(lambda: reads[0] >= 5, "the reader to read")
            finally:
                stop.set()
                t.join(TIMEOUT)
            self.assertEqual(bad, [], "port %d: a reader saw half a transfer" % port)
            moved = sum((i % 7) + 1 for i in range(150))
            self.assertEqual(c.mget(a, b), [str(1000 - moved).encode(), str(1000 + moved).encode()])

    def test_watch_conflict(self):
        for port, c in ((COREKV_PORT, self.k), (REDIS_PORT, self.r)):
            c.set("w", "1")
            other = client(port)
            # A change by another client between WATCH and EXEC: WatchError,
            # nothing written.
            with c.pipeline(transaction=True) as p:
                p.watch("w")
                self.assertEqual(p.get("w"), b"1")
                other.set("w", "2")
                p.multi()
                p.set("w", "from-tx")
                p.set("x", "from-tx")
                with self.assertRaises(redis.exceptions.WatchError):
                    p.execute()
            self.assertEqual(c.mget("w", "x"), [b"2", None])
            # No change: EXEC applies.
            with c.pipeline(transaction=True) as p:
                p.watch("w", "absent")
                p.multi()
                p.incr("w")
                self.assertEqual(p.execute(), [3])
            # A key that appears after WATCH conflicts too.
            with c.pipeline(transaction=True) as p:
                p.watch("absent")
                other.set("absent", "now")
                p.multi()
                p.set("y", "1")
                with self.assertRaises(redis.exceptions.WatchError):
                    p.execute()
            self.assertIsNone(c.get("y"))
            # UNWATCH forgets the watch.
            with c.pipeline(transaction=True) as p:
                p.watch("w")
                other.set("w", "9")
                p.unwatch()
                p.multi()
                p.set("y", "2")
                self.assertEqual(p.execute(), [True])
            # redis-py's transaction() helper retries on WatchError.
            attempts = [0]

            def bump(pipe):
                attempts[0] += 1
                cur = int(pipe.get("w"))
                if attempts[0] == 1:
                    other.set("w", "100")
                pipe.multi()
                pipe.set("w", cur + 1)

            c.transaction(bump, "w")
            self.assertEqual(attempts[0], 2)
            self.assertEqual(c.get("w"), b"101")
            other.close()
        self.error(lambda c: c.execute_command("WATCH"),
                   text="wrong number of arguments for 'watch' command")

    def test_watch_same_value_rewrite(self):
        # docs/redis-compatibility.md, Transactions, WATCH "differs": corekv
        # detects a change by value, so rewriting the same value does not
        # abort the EXEC; Redis aborts on any modification.
        results = {}
        for name, port, c in (("corekv", COREKV_PORT, self.k), ("redis", REDIS_PORT, self.r)):
            c.set("w", "same")
            other = client(port)
            with c.pipeline(transaction=True) as p:
                p.watch("w")
                other.set("w", "same")
                p.multi()
                p.set("z", "1")
                try:
                    results[name] = p.execute()
                except redis.exceptions.WatchError:
                    results[name] = "WatchError"
            other.close()
        self.assertEqual(results["redis"], "WatchError")
        if not SELF_CHECK:
            self.assertEqual(results["corekv"], [True])


class Resp3Tests(unittest.TestCase):
    """redis-py 4.3 speaks RESP2 only: RESP3 is checked on raw sockets after
    HELLO 3, reply bytes compared with Redis's (connection ids masked)."""

    def conn(self, port):
        s = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.addCleanup(s.close)
        return s.makefile("rwb")

    def read(self, f):
        """One whole reply's bytes (a minimal RESP3 reader)."""
        line = f.readline()
        self.assertTrue(line.endswith(b"\r\n"), line)
        t, rest = line[:1], line[1:-2]
        if t in b"$=!" and rest != b"-1":
            return line + f.read(int(rest) + 2)
        if t in b"*~>" and rest != b"-1":
            return line + b"".join(self.read(f) for _ in range(int(rest)))
        if t == b"%" or t == b"|":
            return line + b"".join(self.read(f) for _ in range(2 * int(rest)))
        return line

    def cmd(self, f, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        f.write(out)
        f.flush()
        return self.read(f)

    def test_resp3_replies_byte_for_byte(self):
        fs = [self.conn(COREKV_PORT), self.conn(REDIS_PORT)]
        for f in fs:
            self.cmd(f, "FLUSHALL")
        hello = [self.cmd(f, "HELLO", "3") for f in fs]
        for h in hello:
            self.assertTrue(h.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), h)
            self.assertIn(b"$5\r\nproto\r\n:3\r\n", h)
        script = [
            ("GET", "nope"),
            ("SET", "a", "1"),
            ("SET", "a", "2", "GET"),
            ("SET", "b", "1", "XX", "GET"),
            ("MGET", "a", "nope"),
            ("INCRBYFLOAT", "f", "1.5"),
            ("GETDEL", "nope"),
            ("EXISTS", "a"),
            ("CONFIG", "GET", "databases"),
            ("PING",),
            ("ECHO", "x"),
            ("CLIENT", "GETNAME"),
            ("OBJECT", "ENCODING", "nope"),
            ("LCS", "a", "f", "IDX"),
            ("GET",),
            ("FOO",),
            ("SELECT", "1"),
            ("MULTI",),
            ("GET", "a"),
            ("GET", "nope"),
            ("EXEC",),
            ("WATCH", "a"),
            ("KEYS", "nomatch*"),
            ("SCAN", "0", "MATCH", "nomatch*"),
            ("DBSIZE",),
            ("HELLO", "3", "SETNAME", "r3"),
            ("CLIENT", "GETNAME"),
            ("HELLO", "4"),
            ("COMMAND", "INFO", "nosuch"),
            ("TYPE", "a"),
            ("TTL", "nope"),
        ]
        for args in script:
            with self.subTest(cmd=args):
                # HELLO's connection id differs by value: masked.
                ours, theirs = (re.sub(rb"\$2\r\nid\r\n:\d+\r\n", b"ID", self.cmd(f, *args))
                                for f in fs)
                self.assertEqual(ours, theirs)
        # A WATCH conflict: EXEC answers RESP3's null on both.
        other = [self.conn(p) for p in (COREKV_PORT, REDIS_PORT)]
        for o in other:
            self.assertEqual(self.cmd(o, "SET", "a", "changed"), b"+OK\r\n")
        for f in fs:
            self.assertEqual(self.cmd(f, "MULTI"), b"+OK\r\n")
            self.assertEqual(self.cmd(f, "GET", "a"), b"+QUEUED\r\n")
            self.assertEqual(self.cmd(f, "EXEC"), b"_\r\n")
        # INFO and CLIENT INFO are verbatim strings ("=... txt:").
        for f in fs:
            for args in (("INFO", "server"), ("CLIENT", "INFO")):
                reply = self.cmd(f, *args)
                self.assertTrue(reply.startswith(b"="), reply[:20])
                self.assertEqual(reply.split(b"\r\n", 1)[1][:4], b"txt:")
        # Back to RESP2: nil bulk again.
        for f in fs:
            self.cmd(f, "HELLO", "2")
            self.assertEqual(self.cmd(f, "GET", "nope"), b"$-1\r\n")


class ExpiryTests(Both):
    """Key expiry (SET EX/PX, EXPIRE and friends, TTL, GETEX, lazy and active
    expiry), compared with redis-server like every other class."""

    def test_set_with_expiry(self):
        v = self.value
        v(lambda c: c.set("a", "1", ex=100), True)
        v(lambda c: 90 <= c.ttl("a") <= 100, True)
        v(lambda c: 90_000 <= c.pttl("a") <= 100_000, True)
        v(lambda c: c.set("b", "1", px=100_000), True)
        v(lambda c: 90_000 <= c.pttl("b") <= 100_000, True)
        at = int(time.time()) + 1000
        v(lambda c: c.set("c", "1", exat=at), True)
        v(lambda c: c.execute_command("EXPIRETIME", "c"), at)
        v(lambda c: c.set("d", "1", pxat=at * 1000 + 5), True)
        v(lambda c: c.execute_command("PEXPIRETIME", "d"), at * 1000 + 5)
        # A plain SET clears the TTL; KEEPTTL keeps it.
        v(lambda c: c.set("a", "2"), True)
        v(lambda c: c.ttl("a"), -1)
        v(lambda c: c.set("b", "2", keepttl=True), True)
        v(lambda c: 90 <= c.ttl("b") <= 100, True)
        v(lambda c: c.setex("e", 100, "v"), True)
        v(lambda c: 90 <= c.ttl("e") <= 100, True)
        v(lambda c: c.psetex("f", 100_000, "v"), True)
        v(lambda c: 90 <= c.ttl("f") <= 100, True)
        # INCR and APPEND keep the TTL.
        v(lambda c: c.set("n", "1", ex=100), True)
        v(lambda c: c.incr("n"), 2)
        v(lambda c: c.append("n", "0"), 2)
        v(lambda c: 90 <= c.ttl("n") <= 100, True)
        # SETRANGE and INCRBYFLOAT keep it too; GETSET clears it.
        v(lambda c: c.setrange("n", 0, "3"), 2)
        v(lambda c: c.incrbyfloat("n", 0.5), 30.5)
        v(lambda c: 90 <= c.ttl("n") <= 100, True)
        v(lambda c: c.getset("n", "x"), b"30.5")
        v(lambda c: c.ttl("n"), -1)
        # The conditional and GET forms with an expiry (one RMW in corekv).
        v(lambda c: c.set("g", "1", nx=True, ex=100), True)
        v(lambda c: c.set("g", "2", nx=True, ex=100), None)
        v(lambda c: c.set("g", "3", xx=True, px=50_000, get=True), b"1")
        v(lambda c: 40_000 <= c.pttl("g") <= 50_000, True)
        v(lambda c: c.set("g", "4", get=True, keepttl=True), b"3")
        v(lambda c: 40_000 <= c.pttl("g") <= 50_000, True)
        self.error(lambda c: c.execute_command("SET", "a", "1", "EX", "0"),
                   text="invalid expire time in 'set' command")
        self.error(lambda c: c.execute_command("SET", "a", "1", "EX", "-5"),
                   text="invalid expire time in 'set' command")
        self.error(lambda c: c.execute_command("SET", "a", "1", "EX", "x"),
                   text="value is not an integer or out of range")
        self.error(lambda c: c.execute_command("SET", "a", "1", "EX", "10", "PX", "10"),
                   text="syntax error")
        self.error(lambda c: c.execute_command("SET", "a", "1", "KEEPTTL", "EX", "10"),
                   text="syntax error")
        self.error(lambda c: c.execute_command("SETEX", "a", "0", "v"),
                   text="invalid expire time in 'setex' command")

    def test_expire_options(self):
        v = self.value
        v(lambda c: c.set("a", "1"), True)
        v(lambda c: c.expire("nope", 100), False)
        v(lambda c: c.expire("a", 100, xx=True), False)
        v(lambda c: c.ttl("a"), -1)
        v(lambda c: c.expire("a", 100, nx=True), True)
        v(lambda c: c.expire("a", 200, nx=True), False)
        v(lambda c: c.expire("a", 50, gt=True), False)
        v(lambda c: c.expire("a", 200, gt=True), True)
        v(lambda c: 190 <= c.ttl("a") <= 200, True)
        v(lambda c: c.expire("a", 300, lt=True), False)
        v(lambda c: c.expire("a", 150, lt=True), True)
        v(lambda c: 140 <= c.ttl("a") <= 150, True)
        v(lambda c: c.expire("a", 100, xx=True), True)
        v(lambda c: c.pexpire("a", 100_000), True)
        v(lambda c: 90_000 <= c.pttl("a") <= 100_000, True)
        at = int(time.time()) + 500
        v(lambda c: c.expireat("a", at), True)
        v(lambda c: c.execute_command("EXPIRETIME", "a"), at)
        v(lambda c: c.pexpireat("a", at * 1000 + 7), True)
        v(lambda c: c.execute_command("PEXPIRETIME", "a"), at * 1000 + 7)
        # GT with no TTL (infinite) never applies; LT does.
        v(lambda c: c.set("p", "1"), True)
        v(lambda c: c.expire("p", 100, gt=True), False)
        v(lambda c: c.expire("p", 100, lt=True), True)
        v(lambda c: c.persist("p"), True)
        v(lambda c: c.persist("p"), False)
        v(lambda c: c.ttl("p"), -1)
        self.error(lambda c: c.execute_command("EXPIRE", "a", "10", "NX", "XX"),
                   text="NX and XX, GT or LT options at the same time are not compatible")
        self.error(lambda c: c.execute_command("EXPIRE", "a", "10", "GT", "LT"),
                   text="GT and LT options at the same time are not compatible")
        self.error(lambda c: c.execute_command("EXPIRE", "a", "10", "BOGUS"),
                   text="Unsupported option BOGUS")
        self.error(lambda c: c.execute_command("EXPIRE", "a", "x"),
                   text="value is not an integer or out of range")
        # A past time deletes the key at once.
        v(lambda c: c.set("gone", "1"), True)
        v(lambda c: c.expire("gone", -1), True)
        v(lambda c: c.exists("gone"), 0)
        v(lambda c: c.set("gone", "1"), True)
        v(lambda c: c.expireat("gone", 1), True)
        v(lambda c: c.get("gone"), None)

    def test_getex(self):
        v = self.value
        v(lambda c: c.set("a", "1"), True)
        v(lambda c: c.getex("a", ex=100), b"1")
        v(lambda c: 90 <= c.ttl("a") <= 100, True)
        v(lambda c: c.getex("a", px=50_000), b"1")
        v(lambda c: 40_000 <= c.pttl("a") <= 50_000, True)
        v(lambda c: c.getex("a", persist=True), b"1")
        v(lambda c: c.ttl("a"), -1)
        v(lambda c: c.getex("a"), b"1")
        v(lambda c: c.getex("nope", ex=10), None)
        at = int(time.time()) + 1000
        v(lambda c: c.getex("a", exat=at), b"1")
        v(lambda c: c.execute_command("EXPIRETIME", "a"), at)
        self.error(lambda c: c.execute_command("GETEX", "a", "EX", "0"),
                   text="invalid expire time in 'getex' command")
        self.error(lambda c: c.execute_command("GETEX", "a", "EX", "10", "PERSIST"),
                   text="syntax error")

    def test_lazy_expiry(self):
        # Read right after the deadline passed: the key is gone for GET,
        # EXISTS, TTL, MGET and a transaction alike.
        for c in (self.k, self.r):
            c.set("short", "v", px=200)
            c.set("keep", "v")
            self.assertEqual(c.get("short"), b"v")
        deadline = time.monotonic() + 0.25
        while time.monotonic() < deadline:
            time.sleep(0.05)
        v = self.value
        v(lambda c: c.get("short"), None)
        v(lambda c: c.exists("short"), 0)
        v(lambda c: c.ttl("short"), -2)
        v(lambda c: c.mget("short", "keep"), [None, b"v"])
        v(lambda c: c.set("short", "new", nx=True), True)
        v(lambda c: c.ttl("short"), -1)

    def test_active_expiry(self):
        # Keys that are never read again disappear on their own: DBSIZE
        # drops to the number of keys without a TTL (polled, not slept).
        for c in (self.k, self.r):
            c.mset({"keep%d" % i: "v" for i in range(10)})
            p = c.pipeline(transaction=False)
            for i in range(200):
                p.set("tmp%d" % i, "v", px=100)
            p.execute()
        for c in (self.k, self.r):
            poll(lambda: c.dbsize() == 10, "active expiry to remove 200 keys", limit=30)
        self.value(lambda c: sorted(c.keys("*")), sorted(b"keep%d" % i for i in range(10)))

    def test_expiry_inside_multi(self):
        def run(c):
            p = c.pipeline(transaction=True)
            p.set("m", "1", ex=100)
            p.expire("m", 200)
            p.ttl("m")
            p.persist("m")
            p.ttl("m")
            return p.execute()

        self.same(run)
        # What each command inside MULTI does to a TTL, as Redis: INCR and
        # APPEND keep it, SET clears it, GETEX and RENAME move or change it.
        def keeps(c):
            p = c.pipeline(transaction=True)
            p.set("n", "1", ex=100)
            p.incr("n")
            p.append("n", "0")
            p.ttl("n")
            p.getex("n", exat=4000000000)
            p.rename("n", "o")
            p.expiretime("o")
            p.set("o", "x")
            p.ttl("o")
            p.psetex("q", 100000, "v")
            p.pttl("q")
            return p.execute()

        self.same(lambda c: keeps(c)[:-1])
        self.assertGreater(keeps(self.k)[-1], 90000)


if __name__ == "__main__":
    unittest.main()
