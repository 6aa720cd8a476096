"""What is reported when settings are wrong: every problem at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Problem", "SettingsError"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake: where (a dotted key path or a file), what, and how to fix it."""

    key_path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.key_path}: {self.message}" if self.key_path else self.message
        return f"{text} ({self.hint})" if self.hint else text


class SettingsError(Exception):
    """The settings have problems; ``problems`` lists all of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        count = len(self.problems)
        heading = f"{count} problem{'s' if count != 1 else ''} in the settings:"
        return "\n".join([heading, *(f"  {problem}" for problem in self.problems)])
