"""The Python `redis` client against a yeskv node's RESP port (run by tests/resp.rs).

Usage: client.py PORT PROTOCOL (2 or 3). Prints "ok" and exits 0 when every check holds;
an assertion names the first one that does not.
"""
import sys

import redis

port, protocol = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, socket_timeout=60)
assert r.ping()
tag = f"py{protocol}"

# A pipeline of 1000 commands, sent in one go: 500 SETs then 500 GETs of the same keys.
pipe = r.pipeline(transaction=False)
for i in range(500):
    pipe.set(f"{tag}:k{i}", f"v{i}")
for i in range(500):
    pipe.get(f"{tag}:k{i}")
replies = pipe.execute()
assert replies[:500] == [True] * 500, replies[:5]
assert replies[500:] == [f"v{i}".encode() for i in range(500)], replies[500:505]

# Sequential SETs replace; a TTL; MGET with a missing key.
r.set(f"{tag}:seq", "one")
r.set(f"{tag}:seq", "two", ex=100)
assert r.get(f"{tag}:seq") == b"two"
assert 95 <= r.ttl(f"{tag}:seq") <= 100
assert r.mget(f"{tag}:k1", f"{tag}:missing") == [b"v1", None]
assert r.delete(f"{tag}:k1", f"{tag}:missing") == 1
assert r.exists(f"{tag}:k1") == 0

# Data types, in the buckets the test typed: counter `c`, set `s`, cart `cart`.
assert r.incrby(f"c:{tag}", 7) == 7
assert r.decr(f"c:{tag}") == 6
assert r.sadd(f"s:{tag}", "a", "b") == 2
assert r.smembers(f"s:{tag}") == {b"a", b"b"}
assert r.hset(f"cart:{tag}", mapping={"apple": 2, "pear": 1}) == 2
assert r.hincrby(f"cart:{tag}", "apple", 3) == 5
assert r.hgetall(f"cart:{tag}") == {b"apple": b"5", b"pear": b"1"}
try:
    r.incr(f"{tag}:seq")
    raise AssertionError("INCR on a plain bucket should be refused")
except redis.exceptions.ResponseError as e:
    assert "WRONGTYPE" in str(e) or "needs a counter bucket" in str(e), e

info = r.execute_command("HELLO")
proto = info.get(b"proto", info.get("proto")) if isinstance(info, dict) else None
if protocol == 3:
    assert proto == protocol, info
print("ok")
