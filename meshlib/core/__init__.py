"""The core: a cluster of hosts, one call's decisions, and the attempt driver.

Policies (``balancing/``, ``resilience/``) are pure and know nothing of the
core; the core composes them. Adapters translate a client library's request
into the core's terms (``driver.run`` / ``driver.run_async`` with an
``Exchange``) and back.
"""
