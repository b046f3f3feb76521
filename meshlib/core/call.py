"""One logical call's decisions: admission, which host next, whether and when
to try again, and what each step owes the policies.

A driver (``core.driver``) calls :meth:`Call.begin` once, then per attempt
:meth:`Call.pick` and :meth:`Call.attempt_timeout`; when the attempt answers,
:meth:`Call.decide` (retry or not) and :meth:`Call.ended` (the attempt's
record to the cluster's observers — at once, or when a streamed answer ends);
and :meth:`Call.finish` at the end, always, in a ``finally``.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Callable

from ..balancing.hashing import hash_key as _hash
from ..errors import CircuitOpenError, DeadlineExceededError, NoHealthyEndpointsError
from ..outcome import AttemptRecord, AttemptResult, Outcome
from ..resilience.deadline import current_deadline
from ..resilience.fault import FaultDecision
from .gates import ANY_HOST
from .host import Host
from .observers import notify, observer_failed

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Call", "hash_key", "call_tag"]

_HASH_KEY: contextvars.ContextVar[str | bytes | None] = contextvars.ContextVar("meshlib_hash_key", default=None)
#: What a call made in this context carries in its attempts' records
#: (``AttemptRecord.tag``): set by an observer that wants to find its own
#: per-call state from a record (telemetry's call scope); None by default.
call_tag: contextvars.ContextVar[object] = contextvars.ContextVar("meshlib_call_tag", default=None)
_current_tag = call_tag.get
_SUCCESS = Outcome.SUCCESS
_CANCELLED = Outcome.CANCELLED
#: Builds an AttemptRecord from a full tuple of its fields in one C call
#: (the named tuple's own ``__new__`` is a Python function).
_record = tuple.__new__


class hash_key:
    """Give calls made inside the block an explicit hash key (ring_hash, maglev)::

        with meshlib.hash_key(user_id):
            session.get("http://profile/")
    """

    __slots__ = ("_key", "_token")

    def __init__(self, key: str | bytes) -> None:
        self._key = key

    def __enter__(self) -> "hash_key":
        self._token = _HASH_KEY.set(self._key)
        return self

    def __exit__(self, *exc: object) -> None:
        _HASH_KEY.reset(self._token)


def current_hash_key() -> str | bytes | None:
    return _HASH_KEY.get()


class Call:
    """One logical call: its deadline, the hosts it tried, the retries it holds."""

    __slots__ = (
        "cluster",
        "key",
        "idempotent",
        "tried",
        "attempt",
        "retries",
        "deadline",
        "started",
        "ok",
        "fault",
        "_is_retry",
        "_deposited",
        "_caller_deadline",
        "_open_streams",
        "_finished",
        "hedging",
        "tag",
    )

    def __init__(self, cluster: "Cluster", key: str | bytes | None, idempotent: bool = True, timeout: float | None = None) -> None:
        """``timeout``: the caller's own limit for this call (gRPC's ``timeout=``),
        counted from now on the cluster's clock, as a ``meshlib.deadline`` block would."""
        self.cluster = cluster
        self._caller_deadline = None if timeout is None else cluster.clock.monotonic() + timeout
        self.key = key
        self.idempotent = idempotent
        #: Whether this call hedges: the service hedges and the method is idempotent.
        self.hedging = cluster.hedges and idempotent
        self.tried: list[Host] = []
        self.attempt = 0
        self.retries = 0
        self.deadline: float | None = None
        self.started = 0.0
        self.ok = False
        #: The fault drawn for this call by fault injection, if it is on.
        self.fault: FaultDecision | None = None
        self._is_retry = False  # the attempt in progress (or about to be) holds a granted retry
        self._deposited = False
        self._open_streams = 0  # answers handed back still being read (see ended_later)
        self._finished = False
        #: ``call_tag`` when the call began (``begin``): every record of the call carries it.
        self.tag: object = None

    # -- admission ---------------------------------------------------------------

    def begin(self) -> FaultDecision | None:
        """Admit the call (the cluster's gates: rate limit, breaker, fault
        injection), fix its deadline, count it for the budget; returns the
        fault to inject, if any. A refused call raises ``RateLimitedError`` /
        ``CircuitOpenError`` without touching the network."""
        c = self.cluster
        entered = 0
        try:
            for gate in c.gates:
                gate.enter(self)
                entered += 1
        except BaseException:
            for gate in c.gates[:entered]:
                gate.leave(self)
            raise
        self._start_clock()
        self.tag = _current_tag()
        c.calls.add()
        fault = self.fault
        if fault is not None and fault.abort_status is not None:
            return fault  # never sent: not a request for the retry budget
        c.budget.deposit()
        self._deposited = True
        return fault

    def _start_clock(self) -> None:
        """Fix the call's deadline: the service timeout from now, or the caller's, if sooner."""
        c = self.cluster
        self.started = now = c.clock.monotonic()
        deadline = current_deadline()
        caller = self._caller_deadline
        if caller is not None and (deadline is None or caller < deadline):
            deadline = caller
        timeout = c.timeout
        if timeout is not None:
            mine = now + timeout
            deadline = mine if deadline is None or mine < deadline else deadline
        self.deadline = deadline

    def fault_delayed(self) -> None:
        """An injected delay is over: as behind Envoy's fault filter, the
        service timeout starts now (a caller's own deadline kept running)."""
        self._start_clock()

    # -- attempts ----------------------------------------------------------------

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - self.cluster.clock.monotonic()

    def attempt_timeout(self) -> float | None:
        """This attempt's time limit: the per-try timeout or what is left of the
        deadline, whichever is shorter (None: no limit)."""
        per_try = self.cluster.per_try_timeout
        if self.deadline is None:
            return per_try
        left = self.deadline - self.cluster.clock.monotonic()
        return left if per_try is None or left < per_try else per_try

    def pick(self, failure: BaseException | None = None, host: Host | None = None) -> Host:
        """Choose this attempt's host (another than those tried, where one
        exists), mark it started and return it. ``failure`` is the previous
        attempt's error: if no host is left to retry on, it is raised instead.
        With ``host`` given, the attempt goes there (a caller's own channel,
        whose stand-in Host carries the statistics): no balancing and no
        per-endpoint breaker; the deadline and ``max_requests`` as usual."""
        cluster = self.cluster
        if self.deadline is not None and self.deadline <= cluster.clock.monotonic():
            self.expired(failure)
        tried = self.tried
        gate = cluster.host_gate
        if host is None:
            key = self.key
            try:
                host = cluster.picker.pick(None if key is None else _hash(key, self.attempt))
            except NoHealthyEndpointsError:
                if failure is not None:
                    raise failure from None
                raise
            if tried and host in tried:
                host = self._fresh_host(host)
            host = gate.admit(self, host, failure)
        else:
            gate = ANY_HOST  # a pinned host: no per-endpoint breaker
        try:
            cluster.thresholds.acquire_attempt()
        except CircuitOpenError:
            cluster.count("overflow")
            self._release_retry()
            gate.release(host)  # the permit was never used
            if failure is not None:
                raise failure from None
            raise
        tried.append(host)
        self.attempt += 1
        host.start()
        return host

    def _fresh_host(self, host: Host) -> Host:
        """Envoy's previous_hosts predicate: re-pick a few times for a host not
        yet tried; failing that, the first usable untried one; failing that, ``host``."""
        cluster, key, tried = self.cluster, self.key, self.tried
        for extra in range(1, 4):
            candidate = cluster.pick(None if key is None else _hash(key, self.attempt + 7919 * extra))
            if candidate not in tried:
                return candidate
        for other in cluster.hosts:
            if other not in tried and cluster.usable(other):
                return other
        return host

    def ended(self, host: Host, started: float, result: AttemptResult, first_byte: float | None = None, *, hedge: bool = False, nbytes: int | None = None) -> None:
        """The attempt on ``host`` (sent at ``started``, on the clock's
        ``perf_counter``) is over: its record goes to the cluster's observers.
        ``first_byte`` is when its answer began (default: now)."""
        now = self.cluster.clock.perf_counter()
        record = _record(AttemptRecord, (
            host.endpoint, started, now if first_byte is None else first_byte, now, result.outcome,
            result.status, result.grpc_status, self.attempt, self.attempt > 1 and not hedge, hedge, nbytes, result.load, self.tag,
        ))  # fmt: skip
        for attempt_ended in self.cluster.observers:  # notify(), inline: this runs on every attempt
            try:
                attempt_ended(host, record)
            except Exception:
                observer_failed(attempt_ended)
        if not hedge and self._is_retry:
            self._release_retry()

    def ended_later(self, host: Host, started: float, result: AttemptResult) -> Callable[[str | None, int | None], None]:
        """The attempt answered, its answer goes back to the caller, and its
        body is still to be read (a stream): the attempt stays in flight until
        the returned ``end(outcome, nbytes, grpc_status)`` is called — once (later
        calls do nothing), when the body is fully read or closed (``outcome``
        None: the answer's own), or broke mid-body (``Outcome.RESET``,
        ``Outcome.TIMEOUT``, ...; a gRPC stream gives its final status)."""
        first_byte = self.cluster.clock.perf_counter()
        retry, self._is_retry = self._is_retry, False
        attempt = self.attempt
        self._open_streams += 1
        done = False

        def end(outcome: str | None = None, nbytes: int | None = None, grpc_status: str | None = None) -> None:
            nonlocal done
            if done:
                return
            done = True
            now = self.cluster.clock.perf_counter()
            if outcome is None:
                verdict = result
            else:  # a stream's own final status (gRPC), or the answer's
                verdict = AttemptResult(outcome, result.status, grpc_status or result.grpc_status)
            record = _record(AttemptRecord, (
                host.endpoint, started, first_byte, now, verdict.outcome, verdict.status, verdict.grpc_status,
                attempt, attempt > 1, False, nbytes, result.load, self.tag,
            ))  # fmt: skip
            notify(self.cluster.observers, host, record)
            if retry:
                self.retry_finished()
            self._open_streams -= 1
            if self._open_streams == 0 and self._finished:
                self._request_done()

        return end

    def decide(self, result: AttemptResult) -> float | None:
        """Whether to try again after this answer: the delay before the next
        attempt, or None to return the answer (or raise the error)."""
        outcome = result.outcome
        if outcome == _CANCELLED:
            return None
        self.ok = success = outcome == _SUCCESS
        if success and (result.status is None or result.status < 400):
            return None
        return self._retry_delay(result)

    def done(self, host: Host, started: float, result: AttemptResult, *, decide: bool = True, first_byte: float | None = None) -> float | None:
        """:meth:`ended` then (unless ``decide=False``) :meth:`decide`: for an
        attempt whose answer is complete (its answer began at ``first_byte``,
        default now). Returns the delay before the next attempt, or None to stop."""
        self.ended(host, started, result, first_byte)
        if not decide:
            if result.outcome != _CANCELLED:
                self.ok = result.outcome == _SUCCESS
            return None
        return self.decide(result)

    def _retry_delay(self, result: AttemptResult) -> float | None:
        cluster = self.cluster
        policy = cluster.retry
        if not policy.should_retry(result, idempotent=self.idempotent, retries_done=self.retries):
            return None
        delay = policy.next_delay(result, self.retries + 1, cluster.rng)
        left = self.remaining()
        if left is not None and delay >= left:
            return None  # no time left for another attempt
        if not self.grant_retry():
            return None
        self._is_retry = True
        return delay

    def grant_retry(self, counter: str = "retries") -> bool:
        """Ask the budget (or, without one, ``max_retries``) for one more
        attempt; each granted one is paid back with :meth:`retry_finished`."""
        cluster = self.cluster
        if cluster.budget_limited:
            if not cluster.budget.try_withdraw():
                cluster.count(f"{counter}_budget_exhausted")
                return False
        elif not cluster.thresholds.acquire_retry():
            cluster.count("retries_overflow")
            return False
        self.retries += 1
        cluster.count(counter)
        return True

    def retry_finished(self) -> None:
        """A granted retry (or hedge) attempt is over, or was never made."""
        if self.cluster.budget_limited:
            self.cluster.budget.retry_done()
        else:
            self.cluster.thresholds.release_retry()

    def skip_retry(self, counter: str) -> None:
        """A granted retry will not be made after all (``counter`` says why)."""
        self.cluster.count(counter)
        self._release_retry()

    def _release_retry(self) -> None:
        if self._is_retry:
            self._is_retry = False
            self.retry_finished()

    def enter_pending(self) -> bool:
        """Hold a ``max_pending_requests`` slot for the wait before the next
        attempt; False (and the granted retry handed back) if none is free."""
        try:
            self.cluster.thresholds.acquire_pending()
        except CircuitOpenError:
            self.cluster.count("overflow")
            self._release_retry()
            return False
        return True

    def sleep(self, delay: float) -> None:
        """Sleep out a back-off delay (after :meth:`enter_pending`), on the cluster's clock."""
        try:
            if delay > 0:
                self.cluster.clock.sleep(delay)
        finally:
            self.cluster.thresholds.release_pending()

    async def sleep_async(self, delay: float) -> None:
        try:
            if delay > 0:
                await self.cluster.clock.sleep_async(delay)
        finally:
            self.cluster.thresholds.release_pending()

    def expired(self, cause: BaseException | None = None) -> None:
        """Raise ``DeadlineExceededError`` (from ``cause``)."""
        cluster = self.cluster
        cluster.count("deadline_exceeded")
        timeout = (self.deadline - self.started) if self.deadline is not None else 0.0
        raise DeadlineExceededError(cluster.name, timeout) from cause

    def is_expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def finish(self) -> None:
        """The call is over (its last answer may still be streaming): release
        what it holds, settle with the gates (the breaker's verdict)."""
        if self._is_retry:
            self._release_retry()
        self._finished = True
        if self._open_streams == 0 and self._deposited and self.cluster.budget_in_flight:
            self.cluster.budget.request_done()
        for gate in self.cluster.gates:
            gate.leave(self)

    def _request_done(self) -> None:
        if self._deposited and self.cluster.budget_in_flight:
            self.cluster.budget.request_done()
