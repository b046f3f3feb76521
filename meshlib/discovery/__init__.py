"""Discovery sources. Each resolver publishes EndpointSnapshots; see ``base``.

The schemes of ``MESHLIB_DISCOVERY`` (static, dns, file, consul, etcd) are
registered by name in ``schemes``, which validates the value and builds the
resolver; ``registry`` holds what the consul:// and etcd:// resolvers (and
registration) share.
"""

from .base import Publish, Resolver
from .dns import DnsResolver
from .file import FileResolver
from .static import StaticResolver

__all__ = ["Publish", "Resolver", "StaticResolver", "FileResolver", "DnsResolver"]
