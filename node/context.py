"""What every service of a node shares: storages, token and git facts."""

from __future__ import annotations

from dataclasses import dataclass, field

from praefect.node.storage import StorageLocator


@dataclass(slots=True)
class NodeContext:
    locator: StorageLocator
    token: str
    server_version: str
    git_version: str = field(default="")

    def redact(self, text: str) -> str:
        """Replace storage roots in `text` (git's stderr, say) by storage names."""
        for name in self.locator.storage_names:
            text = text.replace(str(self.locator.storage_root(name)), f"<{name}>")
        return text
