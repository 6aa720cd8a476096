"""praefect.core: the thin gRPC core of the router.

Plugin authors import only from here::

    from praefect.core import hookimpl
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("praefect")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

# After __version__: modules imported here read it.
from praefect.core.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
