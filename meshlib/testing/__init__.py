"""Test seams that ship with meshlib: real servers on 127.0.0.1 for your own tests.

- :mod:`meshlib.testing.etcd_server`: ``EtcdServer``, a real etcd (the ``etcd``
  binary) on free loopback ports with a temporary data directory.
- :mod:`meshlib.testing.consul_double`: ``ConsulDouble``, an in-process HTTP
  server implementing the documented Consul HTTP API endpoints meshlib uses
  (no Consul binary can be installed everywhere).

Importing this package imports neither.
"""
