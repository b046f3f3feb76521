"""The Consul HTTP API double the tests run against. It ships in the package
(``meshlib.testing.consul_double``) because ``meshlib demo --registry consul``,
the examples and the benchmarks use it too; this module is where tests find it."""

from meshlib.testing.consul_double import ConsulDouble

__all__ = ["ConsulDouble"]
