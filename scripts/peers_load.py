#!/usr/bin/env python3
"""One load generator for scripts/bench-peers: the same client code, and so the same client cost,
for every system it compares. Python 3 standard library only (asyncio streams, raw HTTP/1.1
keep-alive, raw RESP, AWS SigV4 with hashlib/hmac).

The workload is a cart-like read-modify-write of small values: KEYS carts (`cart-00000`...),
each preloaded once with a VALUE_SIZE-byte value (not measured); then CONCURRENCY workers, each
on its own connection (worker i to target i mod the number of targets), loop for WARMUP + DURATION
seconds over uniformly drawn carts: read the cart, then write a new value of the same size that
carries what the read returned for causality:
  yeskv-http  GET /v1/kv/<bucket>/<key> (200, 404 or 300 with siblings), then PUT with the read's
              `X-Causal-Context` (the new value replaces every sibling the read saw);
  resp        GET <bucket>:<key>, then SET <bucket>:<key> <value> (Redis, or yeskv's RESP);
  k2v         Garage K2V ReadItem `GET /<bucket>/<key>?sort_key=cart` (Accept: octet-stream or
              JSON on concurrent values), then InsertItem `PUT` with the read's
              `X-Garage-Causality-Token`; every request signed with AWS SigV4 (service `k2v`).
Only the DURATION window after the warmup is measured: operations completed in it, the latency
of each whole read-modify-write (p50, p99), errors, reads that found concurrent values, and the
CPU (user + system, from /proc) of the server processes (--pids, each with its descendants) and
of this client over exactly that window. Prints one JSON object on stdout.
"""
import argparse
import asyncio
import datetime
import hashlib
import hmac
import json
import os
import random
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- CPU from /proc

def descendants(roots):
    """The given pids and every process below them (scanned from /proc's parent links)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def ticks(pids):
    """User + system CPU ticks of these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def own_cpu():
    t = os.times()
    return t.user + t.system


def listening_ports(roots):
    """TCP ports on which these processes (and their descendants) listen, from /proc/net/tcp*
    and their file descriptors' socket inodes."""
    inodes = set()
    for pid in descendants(roots):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return sorted(ports)


# ---------------------------------------------------------------- HTTP/1.1, keep-alive

class Http:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.hostport = f"{host}:{port}"
        self.reader = self.writer = None

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method, target, headers, body=b""):
        """Returns (status, {lower-case header: value}, body). Reconnects once if the server
        closed the kept-alive connection."""
        for attempt in (0, 1):
            if self.writer is None:
                await self.connect()
            head = [f"{method} {target} HTTP/1.1", f"Host: {self.hostport}",
                    f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            try:
                await self.writer.drain()
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise

    async def _response(self):
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


# ---------------------------------------------------------------- RESP

class Resp:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def command(self, *args):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.writer.write(b"".join(out))
        await self.writer.drain()
        return await self._reply()

    async def _reply(self):
        line = await self.reader.readuntil(b"\r\n")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return (await self.reader.readexactly(n + 2))[:-2]
        if kind == b"*":
            return [await self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected RESP reply {line!r}")


# ---------------------------------------------------------------- SigV4 (Garage K2V)

class SigV4:
    def __init__(self, key_id, secret, region, service="k2v"):
        self.key_id, self.secret, self.region, self.service = key_id, secret, region, service
        self.day = None

    def _key(self, day):
        if day != self.day:
            k = hmac.new(("AWS4" + self.secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self.day, self.signing_key = day, k
        return self.signing_key

    def headers(self, method, path, query, hostport, body):
        """The x-amz-* and Authorization headers. `path` and `query` must need no
        percent-encoding (the cart keys are [a-z0-9-])."""
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload = hashlib.sha256(body).hexdigest()
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = "\n".join([
            method, path, query,
            f"host:{hostport}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n",
            signed, payload])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            "x-amz-date": amz_date,
            "x-amz-content-sha256": payload,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
                             f"SignedHeaders={signed}, Signature={signature}",
        }


# ---------------------------------------------------------------- one client per system

class Failed(Exception):
    pass


class YeskvHttp:
    def __init__(self, target, args):
        host, port = target.rsplit(":", 1)
        self.http = Http(host, int(port))
        self.bucket = args.bucket

    def close(self):
        self.http.close()

    async def read(self, key):
        status, headers, body = await self.http.request("GET", f"/v1/kv/{self.bucket}/{key}", {})
        if status not in (200, 300, 404):
            raise Failed(f"GET {status}: {body[:200]!r}")
        return headers.get("x-causal-context"), status == 300

    async def write(self, key, value, context):
        headers = {"X-Causal-Context": context} if context else {}
        status, _, body = await self.http.request("PUT", f"/v1/kv/{self.bucket}/{key}", headers, value)
        if status not in (200, 201, 204):
            raise Failed(f"PUT {status}: {body[:200]!r}")


class RespClient:
    def __init__(self, target, args):
        host, port = target.rsplit(":", 1)
        self.resp = Resp(host, int(port))

    def close(self):
        self.resp.close()

    async def read(self, key):
        await self.resp.command(b"GET", key)
        return None, False

    async def write(self, key, value, context):
        reply = await self.resp.command(b"SET", key, value)
        if reply != b"OK":
            raise Failed(f"SET replied {reply!r}")


class K2v:
    def __init__(self, target, args):
        host, port = target.rsplit(":", 1)
        self.http = Http(host, int(port))
        self.bucket = args.bucket
        key_id, secret = args.k2v_key.split(":", 1)
        self.signer = SigV4(key_id, secret, args.k2v_region)

    def close(self):
        self.http.close()

    async def read(self, key):
        path, query = f"/{self.bucket}/{key}", "sort_key=cart"
        headers = self.signer.headers("GET", path, query, self.http.hostport, b"")
        headers["Accept"] = "application/octet-stream, application/json"
        status, rh, body = await self.http.request("GET", f"{path}?{query}", headers)
        if status not in (200, 204, 404):
            raise Failed(f"ReadItem {status}: {body[:200]!r}")
        concurrent = status == 200 and rh.get("content-type", "").startswith("application/json")
        return rh.get("x-garage-causality-token"), concurrent

    async def write(self, key, value, context):
        path, query = f"/{self.bucket}/{key}", "sort_key=cart"
        headers = self.signer.headers("PUT", path, query, self.http.hostport, value)
        if context:
            headers["X-Garage-Causality-Token"] = context
        status, _, body = await self.http.request("PUT", f"{path}?{query}", headers, value)
        if status not in (200, 204):
            raise Failed(f"InsertItem {status}: {body[:200]!r}")


PROTOCOLS = {"yeskv-http": YeskvHttp, "resp": RespClient, "k2v": K2v}


# ---------------------------------------------------------------- the run

def cart_value(size, n):
    """A VALUE_SIZE-byte cart: a version counter and filler items."""
    head = b"v=%d;items=" % n
    return (head + b"sku-1:2,sku-7:1," * (size // 16 + 1))[:size]


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def main(args):
    targets = args.targets.split(",")
    proto = PROTOCOLS[args.protocol]
    # RESP keys name their bucket (`carts:cart-00042`: yeskv's RESP reads it as key `cart-00042`
    # of bucket `carts`, the same key as over HTTP; to Redis it is just a key).
    keys = [f"{args.bucket}:cart-{i:05d}".encode() if args.protocol == "resp" else f"cart-{i:05d}"
            for i in range(args.keys)]
    clients = [proto(targets[i % len(targets)], args) for i in range(args.concurrency)]

    # Preload: every cart written once, blind, spread over the workers (not measured).
    if args.preload:
        t0 = time.monotonic()

        async def preload(w):
            for i in range(w, args.keys, args.concurrency):
                for attempt in range(50):  # up to ~10 s: a new cluster may still settle
                    try:
                        await clients[w].write(keys[i], cart_value(args.value_size, 0), None)
                        break
                    except (Failed, OSError, asyncio.IncompleteReadError):
                        if attempt == 49:
                            raise
                        clients[w].close()
                        await asyncio.sleep(0.2)
        await asyncio.gather(*(preload(w) for w in range(args.concurrency)))
        print(f"preloaded {args.keys} keys in {time.monotonic() - t0:.1f} s", file=sys.stderr)

    state = {"measuring": False, "stop": False}
    latencies, errors, concurrent, samples = [], [0], [0], []

    async def worker(w):
        client, rng, n = clients[w], random.Random(w), 0
        while not state["stop"]:
            key = keys[rng.randrange(args.keys)]
            n += 1
            start = time.perf_counter()
            measuring = state["measuring"]
            try:
                context, siblings = await client.read(key)
                await client.write(key, cart_value(args.value_size, n), context)
            except (Failed, RuntimeError, OSError, asyncio.IncompleteReadError) as e:
                if measuring and state["measuring"]:
                    errors[0] += 1
                    if len(samples) < 5:
                        samples.append(str(e)[:300])
                if isinstance(e, (OSError, asyncio.IncompleteReadError)):
                    client.close()
                    await asyncio.sleep(0.05)
                continue
            if measuring and state["measuring"]:
                latencies.append(time.perf_counter() - start)
                concurrent[0] += siblings

    server_pids = [int(p) for p in args.pids.split(",") if p] if args.pids else []
    tasks = [asyncio.create_task(worker(w)) for w in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    pids = descendants(server_pids)
    t0, s0, c0 = time.monotonic(), ticks(pids), own_cpu()
    state["measuring"] = True
    await asyncio.sleep(args.duration)
    state["measuring"] = False
    t1, s1, c1 = time.monotonic(), ticks(pids), own_cpu()
    state["stop"] = True
    await asyncio.gather(*tasks)
    elapsed = t1 - t0
    ops = len(latencies)
    latencies.sort()
    server_cpu = (s1 - s0) / CLK_TCK
    client_cpu = c1 - c0
    result = {
        "protocol": args.protocol,
        "targets": targets,
        "concurrency": args.concurrency,
        "keys": args.keys,
        "value_size": args.value_size,
        "seconds": round(elapsed, 3),
        "ops": ops,
        "ops_per_sec": ops / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "errors": errors[0],
        "error_samples": samples,
        "concurrent_reads": concurrent[0],
        "server_pids": pids,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_op": server_cpu / ops * 1e6 if ops else None,
        "server_cores": server_cpu / elapsed,
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_op": client_cpu / ops * 1e6 if ops else None,
        "client_cores": client_cpu / elapsed,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--listening-ports":
        # `peers_load.py --listening-ports PID[,PID...]`: the TCP ports they listen on, one a line.
        print("\n".join(str(p) for p in listening_ports(int(x) for x in sys.argv[2].split(","))))
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--targets", required=True, help="host:port,host:port,...")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--preload", action="store_true")
    p.add_argument("--bucket", default="carts")
    p.add_argument("--k2v-key", default="", help="ACCESS_KEY_ID:SECRET for --protocol k2v")
    p.add_argument("--k2v-region", default="garage")
    p.add_argument("--pids", default="", help="server pids (with their descendants) whose CPU to count")
    asyncio.run(main(p.parse_args()))
