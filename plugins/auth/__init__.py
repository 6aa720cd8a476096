"""praefect.plugins.auth: the default authentication plugin (Gitaly tokens).

See :mod:`praefect.plugins.auth.token_auth`.
"""

from praefect.plugins.auth.token_auth import AuthStats, auth_stats, authenticate

__all__ = ["AuthStats", "auth_stats", "authenticate"]
