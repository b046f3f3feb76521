"""A model-server simulator: continuous batching, a queue, a KV-cache budget and
an LRU prefix cache of 16-token blocks, behind a small asyncio HTTP/1.1 server.

``POST /v1/completions`` takes a JSON body that describes the prompt rather
than sending it: ``{"system": <id of the shared system prompt>,
"system_tokens": 512, "user_tokens": 64, "max_tokens": 16, "stream": true}``.
The system prompt's blocks are ``(system, i)``; the user part's are unique.
Each scheduler step (one token for every running request) takes
``step * (1 + batch_slowdown * batch) / speed`` plus the prefill of the
blocks the newly admitted requests did not find cached
(``prefill_per_block / speed`` each). A request waits in the queue until the
batch has room (``batch_limit``) and the KV budget (``kv_blocks``) holds its
uncached blocks, after evicting cached blocks no running request uses (LRU).
Streamed answers are server-sent events, one ``data:`` line for the first
token and then per ``tokens_per_event`` tokens, then ``data: [DONE]``; non-streamed answers carry
``endpoint-load-metrics`` (vLLM's TEXT form) as vLLM does. ``GET /metrics``
exposes vLLM's gauges; ``GET /stats`` the simulator's own counters (deepest
queue, prefix-cache hits, cold misses: blocks this replica had never cached
since its cache was last cleared, requests); ``POST /reset`` clears cache and
counters (``/reset?stats-only`` the counters).

Run ``python -m tests.llm_sim PORT[:SPEED] ...`` to serve replicas in one process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field

BLOCK = 16


@dataclass
class SimConfig:
    batch_limit: int = 4
    kv_blocks: int = 320
    step: float = 0.025
    batch_slowdown: float = 0.10
    prefill_per_block: float = 0.006
    tokens_per_event: int = 4
    speed: float = 1.0


@dataclass
class _Req:
    system: str
    system_blocks: int
    private_blocks: int
    max_tokens: int
    stream: bool
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    produced: int = 0
    prefill_blocks: int = 0


class Replica:
    """One simulated model server (its scheduler runs on the event loop)."""

    _ids = itertools.count()

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.waiting: deque[_Req] = deque()
        self.running: list[_Req] = []
        self.cache: OrderedDict[tuple[str, int], int] = OrderedDict()  # block -> running requests using it
        self.private = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.reset()

    def reset(self, cache: bool = True) -> None:
        if cache:
            self.cache.clear()
            self.seen: set[tuple[str, int]] = set()  # blocks cached at least once since the cache was cleared
        self.stats = {"requests": 0, "deepest_queue": 0, "prefix_blocks": 0, "prefix_hits": 0, "cold_misses": 0, "tokens": 0}

    # -- gauges ----------------------------------------------------------------
    def kv_usage(self) -> float:
        pinned = sum(1 for n in self.cache.values() if n > 0)
        return min(1.0, (pinned + self.private) / self.cfg.kv_blocks)

    def load_text(self) -> str:
        return (
            f"TEXT named_metrics.kv_cache_usage_perc={self.kv_usage():.4f}, "
            f"named_metrics.num_requests_waiting={len(self.waiting)}, named_metrics.num_requests_running={len(self.running)}"
        )

    def metrics(self) -> str:
        return (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="sim"}} {len(self.waiting)}\n'
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="sim"}} {len(self.running)}\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{model_name="sim"}} {self.kv_usage():.4f}\n'
        )

    # -- scheduling --------------------------------------------------------------
    def submit(self, req: _Req) -> None:
        self.stats["requests"] += 1
        self.waiting.append(req)
        self.stats["deepest_queue"] = max(self.stats["deepest_queue"], len(self.waiting))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._wake.set()

    def _admit(self, req: _Req) -> bool:
        blocks = [(req.system, i) for i in range(req.system_blocks)]
        missing = [b for b in blocks if b not in self.cache]
        mine = set(blocks)
        need = len(missing) + req.private_blocks
        free = self.cfg.kv_blocks - len(self.cache) - self.private
        if need > free:
            evictable = [b for b, n in self.cache.items() if n == 0 and b not in mine]  # LRU first
            if need - free > len(evictable):
                return False
            for b in evictable[: need - free]:
                del self.cache[b]
        for b in blocks:
            self.cache[b] = self.cache.get(b, 0) + 1
            self.cache.move_to_end(b)
        self.private += req.private_blocks
        self.stats["prefix_blocks"] += len(blocks)
        self.stats["prefix_hits"] += len(blocks) - len(missing)
        self.stats["cold_misses"] += sum(1 for b in missing if b not in self.seen)
        self.seen.update(missing)
        req.prefill_blocks = len(missing) + req.private_blocks
        return True

    def _release(self, req: _Req) -> None:
        for i in range(req.system_blocks):
            b = (req.system, i)
            if b in self.cache:
                self.cache[b] -= 1
        self.private -= req.private_blocks

    async def _loop(self) -> None:
        cfg = self.cfg
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            prefill = 0
            while self.waiting and len(self.running) < cfg.batch_limit and self._admit(self.waiting[0]):
                req = self.waiting.popleft()
                prefill += req.prefill_blocks
                self.running.append(req)
            if not self.running:  # the head of the queue does not fit: wait for room
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = len(self.running)
            await asyncio.sleep((cfg.step * (1 + cfg.batch_slowdown * batch) + cfg.prefill_per_block * prefill) / cfg.speed)
            done = []
            for req in self.running:
                req.produced += 1
                self.stats["tokens"] += 1
                if req.stream and (req.produced == 1 or req.produced % cfg.tokens_per_event == 0 or req.produced == req.max_tokens):
                    req.out.put_nowait(req.produced)
                if req.produced >= req.max_tokens:
                    done.append(req)
            for req in done:
                self.running.remove(req)
                self._release(req)
                req.out.put_nowait(None)
            if done:
                self._wake.set()


# -- HTTP ------------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return method, path, headers, body


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Server:
    def __init__(self, replica: Replica, port: int = 0) -> None:
        self.replica = replica
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                await self._handle(*request, writer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> None:
        rep = self.replica
        if path.startswith("/metrics"):
            data = rep.metrics().encode()
            writer.write(_head(200, {"content-type": "text/plain; version=0.0.4", "content-length": str(len(data))}) + data)
            return
        if path.startswith("/stats"):
            data = json.dumps({**rep.stats, "waiting": len(rep.waiting), "running": len(rep.running), "kv": rep.kv_usage()}).encode()
            writer.write(_head(200, {"content-type": "application/json", "content-length": str(len(data))}) + data)
            return
        if path.startswith("/reset"):
            rep.reset(cache="stats-only" not in path)
            writer.write(_head(200, {"content-length": "0"}))
            return
        if not path.startswith("/v1/completions"):
            writer.write(_head(404, {"content-length": "0"}))
            return
        try:
            spec = json.loads(body)
            req = _Req(
                str(spec.get("system", "")), int(spec.get("system_tokens", 512)) // BLOCK,
                -(-(int(spec.get("user_tokens", 64)) + int(spec.get("max_tokens", 16))) // BLOCK),
                max(1, int(spec.get("max_tokens", 16))), bool(spec.get("stream", False)),
            )  # fmt: skip
        except (ValueError, TypeError):
            writer.write(_head(400, {"content-length": "0"}))
            return
        rep.submit(req)
        if not req.stream:
            while await req.out.get() is not None:
                pass
            data = json.dumps({"choices": [{"text": "x" * req.max_tokens}], "usage": {"completion_tokens": req.max_tokens}}).encode()
            writer.write(_head(200, {"content-type": "application/json", "content-length": str(len(data)), "endpoint-load-metrics": rep.load_text()}) + data)
            return
        writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
        sent = 0
        while (produced := await req.out.get()) is not None:
            writer.write(_chunk(b"data: " + json.dumps({"tokens": produced - sent}).encode() + b"\n\n"))
            sent = produced
            await writer.drain()
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def serve(specs: list[tuple[int, float]], cfg: SimConfig | None = None) -> list[Server]:
    servers = []
    for port, speed in specs:
        c = SimConfig(**{**(cfg or SimConfig()).__dict__, "speed": speed})
        server = Server(Replica(c), port)
        await server.start()
        servers.append(server)
    return servers


def main(argv: list[str]) -> None:
    specs = []
    for arg in argv:
        port, _, speed = arg.partition(":")
        specs.append((int(port), float(speed or 1.0)))

    async def run() -> None:
        servers = await serve(specs)
        print(" ".join(str(s.port) for s in servers), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])


class Fleet:
    """Replicas served on a background thread's event loop (tests): ``ports``, ``close()``."""

    def __init__(self, speeds: tuple[float, ...] = (1.0,), cfg: SimConfig | None = None) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="llm-sim", daemon=True)
        self._thread.start()
        self.servers = asyncio.run_coroutine_threadsafe(serve([(0, s) for s in speeds], cfg), self.loop).result(10)
        self.ports = [s.port for s in self.servers]

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self.servers:
                await server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
