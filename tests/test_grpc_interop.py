"""gRPC's interop test cases (from gRPC's interop test descriptions) against
the interop TestService on 127.0.0.1, through every gRPC client meshlib
offers: for each case, what the caller sees and what the server observes
through ``mesh.grpc_channel``, ``mesh.grpc_interceptors`` (sync and aio) and
``mesh.grpc_aio_channel`` equal what they are with a raw grpcio channel.

Plus one case of our own, ``unavailable_from_peer``: a server's UNAVAILABLE
whose message says "Connection refused" is the server's answer, executed
once, never a connect failure to retry.
"""

from __future__ import annotations

import asyncio
import queue
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from types import ModuleType
from typing import Any, AsyncIterator, Callable, Iterator

import grpc
import grpc.aio
import pytest

from meshlib import Mesh

from .grpc_interop import ECHO_INITIAL, ECHO_TRAILING, InteropServer, Observed, compile_protos

SERVICE = "interop"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
ECHO_METADATA = ((ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, b"\xab\xab\xab"))


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return compile_protos(tmp_path_factory.mktemp("interop-protos"))


@pytest.fixture(scope="module")
def interop(protos: tuple[ModuleType, ModuleType]) -> Iterator[InteropServer]:
    server = InteropServer(*protos)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mesh(interop: InteropServer) -> Iterator[Mesh]:
    with Mesh(config={"services": {SERVICE: {"endpoints": interop.address}}}) as m:
        yield m


class Requests:
    """A request stream the test feeds as it goes (``put``), ended by ``end``."""

    _END = object()

    def __init__(self, *first: Any) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        for item in first:
            self._q.put(item)

    def put(self, item: Any) -> None:
        self._q.put(item)

    def end(self) -> None:
        self._q.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while (item := self._q.get()) is not self._END:
            yield item


def _zeros(pb: ModuleType, n: int) -> Any:
    return pb.Payload(body=bytes(n))


def _status(err: grpc.RpcError) -> dict[str, Any]:
    return {"code": err.code().name, "details": err.details()}


def _metadata(md: Any) -> dict[str, Any]:
    return {k: v for k, v in (md or ()) if k in (ECHO_INITIAL, ECHO_TRAILING)}


# -- the cases, sync (a stub on some channel -> what the caller saw) ---------------------------


def empty_unary(pb: ModuleType, stub: Any) -> dict[str, Any]:
    response = stub.EmptyCall(pb.Empty())
    return {"type": type(response).__name__, "size": response.ByteSize()}


def large_unary(pb: ModuleType, stub: Any) -> dict[str, Any]:
    response = stub.UnaryCall(pb.SimpleRequest(response_size=314159, payload=_zeros(pb, 271828)))
    return {"size": len(response.payload.body), "zeros": response.payload.body == bytes(314159)}


def client_streaming(pb: ModuleType, stub: Any) -> dict[str, Any]:
    requests = [pb.StreamingInputCallRequest(payload=_zeros(pb, n)) for n in (27182, 8, 1828, 45904)]
    return {"aggregated": stub.StreamingInputCall(iter(requests)).aggregated_payload_size}


def _output_request(pb: ModuleType, *sizes: int, body: int = 0, **kw: Any) -> Any:
    return pb.StreamingOutputCallRequest(response_parameters=[pb.ResponseParameters(size=n) for n in sizes], payload=_zeros(pb, body), **kw)


def server_streaming(pb: ModuleType, stub: Any) -> dict[str, Any]:
    return {"sizes": [len(r.payload.body) for r in stub.StreamingOutputCall(_output_request(pb, 31415, 9, 2653, 58979))]}


def ping_pong(pb: ModuleType, stub: Any) -> dict[str, Any]:
    requests = Requests()
    call = stub.FullDuplexCall(iter(requests))
    sizes = []
    for size, body in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
        requests.put(_output_request(pb, size, body=body))
        sizes.append(len(next(call).payload.body))
    requests.end()
    rest = list(call)
    return {"sizes": sizes, "rest": len(rest), "code": call.code().name}


def cancel_after_begin(pb: ModuleType, stub: Any) -> dict[str, Any]:
    requests = Requests()
    future = stub.StreamingInputCall.future(iter(requests))
    try:
        cancelled = future.cancel()
        return {"cancel": cancelled, "cancelled": future.cancelled(), "code": future.code().name, "done": future.done()}
    finally:
        requests.end()


def cancel_after_first_response(pb: ModuleType, stub: Any) -> dict[str, Any]:
    requests = Requests(_output_request(pb, 31415, body=27182))
    call = stub.FullDuplexCall(iter(requests))
    try:
        first = len(next(call).payload.body)
        call.cancel()
        with pytest.raises(grpc.RpcError) as err:
            next(call)
        return {"first": first, "code": err.value.code().name, "call_code": call.code().name}
    finally:
        requests.end()


def timeout_on_sleeping_server(pb: ModuleType, stub: Any) -> dict[str, Any]:
    requests = Requests(pb.StreamingOutputCallRequest(payload=_zeros(pb, 27182)))
    call = stub.FullDuplexCall(iter(requests), timeout=0.001)
    try:
        with pytest.raises(grpc.RpcError) as err:
            next(call)
        return {"code": err.value.code().name}
    finally:
        requests.end()


def custom_metadata(pb: ModuleType, stub: Any) -> dict[str, Any]:
    request = pb.SimpleRequest(response_size=314159, payload=_zeros(pb, 271828))
    response, call = stub.UnaryCall.with_call(request, metadata=ECHO_METADATA)
    unary = {"size": len(response.payload.body), "initial": _metadata(call.initial_metadata()), "trailing": _metadata(call.trailing_metadata())}
    stream = stub.FullDuplexCall(iter([_output_request(pb, 314159, body=271828)]), metadata=ECHO_METADATA)
    sizes = [len(r.payload.body) for r in stream]
    duplex = {"sizes": sizes, "initial": _metadata(stream.initial_metadata()), "trailing": _metadata(stream.trailing_metadata())}
    return {"unary": unary, "duplex": duplex}


def _status_cases(pb: ModuleType, stub: Any, code: int, message: str) -> dict[str, Any]:
    echo = pb.EchoStatus(code=code, message=message)
    with pytest.raises(grpc.RpcError) as unary:
        stub.UnaryCall(pb.SimpleRequest(response_status=echo))
    with pytest.raises(grpc.RpcError) as duplex:
        list(stub.FullDuplexCall(iter([pb.StreamingOutputCallRequest(response_status=echo)])))
    return {"unary": _status(unary.value), "duplex": _status(duplex.value)}


def status_code_and_message(pb: ModuleType, stub: Any) -> dict[str, Any]:
    return _status_cases(pb, stub, 2, "test status message")


def special_status_message(pb: ModuleType, stub: Any) -> dict[str, Any]:
    echo = pb.EchoStatus(code=2, message=SPECIAL_MESSAGE)
    with pytest.raises(grpc.RpcError) as unary:
        stub.UnaryCall(pb.SimpleRequest(response_status=echo))
    return _status(unary.value)


def unimplemented_method(pb: ModuleType, stub: Any) -> dict[str, Any]:
    with pytest.raises(grpc.RpcError) as err:
        stub.UnimplementedCall(pb.Empty())
    return {"code": err.value.code().name}


def unavailable_from_peer(pb: ModuleType, stub: Any) -> dict[str, Any]:
    return _status_cases(pb, stub, grpc.StatusCode.UNAVAILABLE.value[0], "backend db: Connection refused")


SYNC_CASES: list[Callable[[ModuleType, Any], dict[str, Any]]] = [
    empty_unary,
    large_unary,
    client_streaming,
    server_streaming,
    ping_pong,
    cancel_after_begin,
    cancel_after_first_response,
    timeout_on_sleeping_server,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unavailable_from_peer,
]

#: Cases whose RPC the caller ends early: the server may see it or not (it
#: may never arrive), but never completes it and never sees it twice.
RACY = {"cancel_after_begin", "timeout_on_sleeping_server"}


def server_view(case: str, flavor: str, observed: list[Observed]) -> Any:
    if case in RACY:
        assert len(observed) <= 1 and all(o.end != "OK" for o in observed), (flavor, observed)
        return "not completed, at most once"
    return [asdict(o) for o in observed]


class PassThrough(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """An interceptor that does nothing: what grpcio's interception does by itself."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)

    intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = intercept_unary_unary


#: Each meshlib client, and the raw grpcio client it must behave as.
BASELINE = {"mesh_channel": "raw", "interceptors": "raw_intercepted"}


@contextmanager
def sync_stub(flavor: str, pb_grpc: ModuleType, address: str, mesh: Mesh) -> Iterator[Any]:
    if flavor == "raw":
        channel: Any = grpc.insecure_channel(address)
    elif flavor == "raw_intercepted":
        channel = grpc.intercept_channel(grpc.insecure_channel(address), PassThrough())
    elif flavor == "mesh_channel":
        channel = mesh.grpc_channel(SERVICE)
    else:
        channel = grpc.intercept_channel(grpc.insecure_channel(address), *mesh.grpc_interceptors(SERVICE))
    with channel:
        yield pb_grpc.TestServiceStub(channel)


def run_sync(case: Callable[..., dict[str, Any]], flavor: str, protos: tuple[ModuleType, ModuleType], interop: InteropServer, mesh: Mesh) -> tuple[Any, Any]:
    interop.reset()
    with sync_stub(flavor, protos[1], interop.address, mesh) as stub:
        seen = case(protos[0], stub)
    if case.__name__ in RACY:
        time.sleep(0.05)  # an RPC the caller gave up on may reach the server just after
    return seen, server_view(case.__name__, flavor, interop.wait_idle())


@pytest.mark.parametrize("case", SYNC_CASES, ids=lambda c: c.__name__)
def test_sync_clients_match_raw_grpcio(case: Callable[..., dict[str, Any]], protos, interop: InteropServer, mesh: Mesh) -> None:
    for flavor, baseline in BASELINE.items():
        assert run_sync(case, flavor, protos, interop, mesh) == run_sync(case, baseline, protos, interop, mesh), flavor


def test_raw_results_are_the_descriptions(protos, interop: InteropServer, mesh: Mesh) -> None:
    """The raw grpcio runs pass the descriptions' own assertions (so the
    comparisons above compare against a conforming answer)."""
    seen = {c.__name__: run_sync(c, "raw", protos, interop, mesh)[0] for c in SYNC_CASES}
    assert seen["empty_unary"] == {"type": "Empty", "size": 0}
    assert seen["large_unary"] == {"size": 314159, "zeros": True}
    assert seen["client_streaming"] == {"aggregated": 74922}
    assert seen["server_streaming"] == {"sizes": [31415, 9, 2653, 58979]}
    assert seen["ping_pong"] == {"sizes": [31415, 9, 2653, 58979], "rest": 0, "code": "OK"}
    assert seen["cancel_after_begin"] == {"cancel": True, "cancelled": True, "code": "CANCELLED", "done": True}
    assert seen["cancel_after_first_response"] == {"first": 31415, "code": "CANCELLED", "call_code": "CANCELLED"}
    assert seen["timeout_on_sleeping_server"] == {"code": "DEADLINE_EXCEEDED"}
    echoed = {"initial": {ECHO_INITIAL: "test_initial_metadata_value"}, "trailing": {ECHO_TRAILING: b"\xab\xab\xab"}}
    assert seen["custom_metadata"] == {"unary": {"size": 314159, **echoed}, "duplex": {"sizes": [314159], **echoed}}
    status = {"code": "UNKNOWN", "details": "test status message"}
    assert seen["status_code_and_message"] == {"unary": status, "duplex": status}
    assert seen["special_status_message"] == {"code": "UNKNOWN", "details": SPECIAL_MESSAGE}
    assert seen["unimplemented_method"] == {"code": "UNIMPLEMENTED"}
    refused = {"code": "UNAVAILABLE", "details": "backend db: Connection refused"}
    assert seen["unavailable_from_peer"] == {"unary": refused, "duplex": refused}


# -- the cases, grpc.aio ----------------------------------------------------------------------


async def aio_empty_unary(pb: ModuleType, stub: Any) -> dict[str, Any]:
    response = await stub.EmptyCall(pb.Empty())
    return {"type": type(response).__name__, "size": response.ByteSize()}


async def aio_large_unary(pb: ModuleType, stub: Any) -> dict[str, Any]:
    response = await stub.UnaryCall(pb.SimpleRequest(response_size=314159, payload=_zeros(pb, 271828)))
    return {"size": len(response.payload.body), "zeros": response.payload.body == bytes(314159)}


async def aio_client_streaming(pb: ModuleType, stub: Any) -> dict[str, Any]:
    call = stub.StreamingInputCall()
    for n in (27182, 8, 1828, 45904):
        await call.write(pb.StreamingInputCallRequest(payload=_zeros(pb, n)))
    await call.done_writing()
    return {"aggregated": (await call).aggregated_payload_size}


async def aio_server_streaming(pb: ModuleType, stub: Any) -> dict[str, Any]:
    return {"sizes": [len(r.payload.body) async for r in stub.StreamingOutputCall(_output_request(pb, 31415, 9, 2653, 58979))]}


async def aio_ping_pong(pb: ModuleType, stub: Any) -> dict[str, Any]:
    call = stub.FullDuplexCall()
    sizes = []
    for size, body in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
        await call.write(_output_request(pb, size, body=body))
        sizes.append(len((await call.read()).payload.body))
    await call.done_writing()
    end = await call.read()
    return {"sizes": sizes, "end": end is grpc.aio.EOF, "code": (await call.code()).name}


async def aio_cancel_after_begin(pb: ModuleType, stub: Any) -> dict[str, Any]:
    call = stub.StreamingInputCall()
    cancelled = call.cancel()
    seen = {"cancel": cancelled, "cancelled": call.cancelled()}
    with pytest.raises(asyncio.CancelledError):
        await call
    return {**seen, "code": (await call.code()).name, "done": call.done()}


async def aio_cancel_after_first_response(pb: ModuleType, stub: Any) -> dict[str, Any]:
    call = stub.FullDuplexCall()
    await call.write(_output_request(pb, 31415, body=27182))
    first = len((await call.read()).payload.body)
    cancelled = call.cancel()
    return {"first": first, "cancel": cancelled, "cancelled": call.cancelled(), "code": (await call.code()).name}


async def aio_timeout_on_sleeping_server(pb: ModuleType, stub: Any) -> dict[str, Any]:
    # 100 ms, not the description's 1 ms: raw grpc.aio answers a write that races
    # the deadline with INTERNAL ("Internal error from Core") now and then.
    call = stub.FullDuplexCall(timeout=0.1)
    await call.write(pb.StreamingOutputCallRequest(payload=_zeros(pb, 27182)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    return {"type": "AioRpcError", "code": err.value.code().name, "call_code": (await call.code()).name}


async def aio_custom_metadata(pb: ModuleType, stub: Any) -> dict[str, Any]:
    call = stub.UnaryCall(pb.SimpleRequest(response_size=314159, payload=_zeros(pb, 271828)), metadata=ECHO_METADATA)
    response = await call
    unary = {"size": len(response.payload.body), "initial": _metadata(await call.initial_metadata()), "trailing": _metadata(await call.trailing_metadata())}
    stream = stub.FullDuplexCall(metadata=ECHO_METADATA)
    await stream.write(_output_request(pb, 314159, body=271828))
    await stream.done_writing()
    sizes = [len(r.payload.body) async for r in stream]
    duplex = {"sizes": sizes, "initial": _metadata(await stream.initial_metadata()), "trailing": _metadata(await stream.trailing_metadata())}
    return {"unary": unary, "duplex": duplex}


async def _aio_status_cases(pb: ModuleType, stub: Any, code: int, message: str) -> dict[str, Any]:
    echo = pb.EchoStatus(code=code, message=message)
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.UnaryCall(pb.SimpleRequest(response_status=echo))
    call = stub.FullDuplexCall()
    await call.write(pb.StreamingOutputCallRequest(response_status=echo))
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as duplex:
        await call.read()
    return {"unary": _status(unary.value), "duplex": _status(duplex.value)}


async def aio_status_code_and_message(pb: ModuleType, stub: Any) -> dict[str, Any]:
    return await _aio_status_cases(pb, stub, 2, "test status message")


async def aio_special_status_message(pb: ModuleType, stub: Any) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.UnaryCall(pb.SimpleRequest(response_status=pb.EchoStatus(code=2, message=SPECIAL_MESSAGE)))
    return _status(unary.value)


async def aio_unimplemented_method(pb: ModuleType, stub: Any) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UnimplementedCall(pb.Empty())
    return {"code": err.value.code().name}


async def aio_unavailable_from_peer(pb: ModuleType, stub: Any) -> dict[str, Any]:
    return await _aio_status_cases(pb, stub, grpc.StatusCode.UNAVAILABLE.value[0], "backend db: Connection refused")


AIO_CASES = [
    aio_empty_unary,
    aio_large_unary,
    aio_client_streaming,
    aio_server_streaming,
    aio_ping_pong,
    aio_cancel_after_begin,
    aio_cancel_after_first_response,
    aio_timeout_on_sleeping_server,
    aio_custom_metadata,
    aio_status_code_and_message,
    aio_special_status_message,
    aio_unimplemented_method,
    aio_unavailable_from_peer,
]


class AioPassThrough:
    """A grpc.aio interceptor that does nothing (grpc.aio files interceptors by kind: one class each)."""

    async def _through(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details, request)


class _UU(AioPassThrough, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = AioPassThrough._through


class _US(AioPassThrough, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = AioPassThrough._through


class _SU(AioPassThrough, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = AioPassThrough._through


class _SS(AioPassThrough, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = AioPassThrough._through


@asynccontextmanager
async def aio_stub(flavor: str, pb_grpc: ModuleType, address: str, mesh: Mesh) -> AsyncIterator[Any]:
    if flavor == "raw":
        channel: Any = grpc.aio.insecure_channel(address)
    elif flavor == "raw_intercepted":
        channel = grpc.aio.insecure_channel(address, interceptors=[_UU(), _US(), _SU(), _SS()])
    elif flavor == "mesh_channel":
        channel = mesh.grpc_aio_channel(SERVICE)
    else:
        channel = grpc.aio.insecure_channel(address, interceptors=mesh.grpc_interceptors(SERVICE, aio=True))
    async with channel:
        yield pb_grpc.TestServiceStub(channel)


async def run_aio(case: Callable[..., Any], flavor: str, protos: tuple[ModuleType, ModuleType], interop: InteropServer, mesh: Mesh) -> tuple[Any, Any]:
    await asyncio.to_thread(interop.reset)
    async with aio_stub(flavor, protos[1], interop.address, mesh) as stub:
        seen = await case(protos[0], stub)
    name = case.__name__.removeprefix("aio_")
    if name in RACY:
        await asyncio.sleep(0.05)  # an RPC the caller gave up on may reach the server just after
    observed = await asyncio.to_thread(interop.wait_idle)
    return seen, server_view(name, flavor, observed)


@pytest.mark.parametrize("case", AIO_CASES, ids=lambda c: c.__name__)
async def test_aio_clients_match_raw_grpc_aio(case: Callable[..., Any], protos, interop: InteropServer, mesh: Mesh) -> None:
    for flavor, baseline in BASELINE.items():
        assert await run_aio(case, flavor, protos, interop, mesh) == await run_aio(case, baseline, protos, interop, mesh), flavor


async def test_aio_raw_results_agree_with_sync(protos, interop: InteropServer, mesh: Mesh) -> None:
    """Raw grpc.aio and raw grpcio see the same answers where the APIs allow a comparison."""
    for case in AIO_CASES:
        name = case.__name__.removeprefix("aio_")
        seen, server = await run_aio(case, "raw", protos, interop, mesh)
        sync_seen, sync_server = await asyncio.to_thread(run_sync, globals()[name], "raw", protos, interop, mesh)
        assert server == sync_server, name
        if name in ("empty_unary", "large_unary", "client_streaming", "server_streaming", "custom_metadata", "status_code_and_message", "special_status_message", "unimplemented_method", "unavailable_from_peer"):
            assert seen == sync_seen, name
