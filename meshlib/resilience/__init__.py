"""Resilience policies: retries, budgets, breakers, outlier detection, deadlines.

Pure logic with injectable clocks and RNGs; the cluster composes them around
each call.
"""

from .backoff import Backoff, parse_grpc_pushback, parse_retry_after
from .breaker import BreakerConfig, CircuitBreaker
from .budget import NO_BUDGET, UNLIMITED_BUDGET, ConcurrencyRetryBudget, RatioRetryBudget, RetryBudget
from .deadline import deadline, incoming_deadline, remaining, timeout_from_headers
from .outlier import OutlierConfig, OutlierDetector
from .retry import NO_RETRIES, AttemptResult, RetryPolicy, parse_retry_on, parse_status_codes
from .thresholds import Thresholds

__all__ = [
    "AttemptResult",
    "Backoff",
    "BreakerConfig",
    "CircuitBreaker",
    "ConcurrencyRetryBudget",
    "NO_BUDGET",
    "NO_RETRIES",
    "OutlierConfig",
    "OutlierDetector",
    "RatioRetryBudget",
    "RetryBudget",
    "RetryPolicy",
    "Thresholds",
    "UNLIMITED_BUDGET",
    "deadline",
    "incoming_deadline",
    "parse_grpc_pushback",
    "parse_retry_after",
    "parse_retry_on",
    "parse_status_codes",
    "remaining",
    "timeout_from_headers",
]
