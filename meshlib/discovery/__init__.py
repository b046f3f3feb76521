"""Discovery sources. Each resolver publishes EndpointSnapshots; see ``base``."""

from .base import Publish, Resolver
from .dns import DnsResolver
from .file import FileResolver
from .static import StaticResolver

__all__ = ["Publish", "Resolver", "StaticResolver", "FileResolver", "DnsResolver"]
