"""praefect.plugins.routing: the default routing plugin.

See :mod:`praefect.plugins.routing.primary`.
"""

from praefect.plugins.routing.primary import route

__all__ = ["route"]
