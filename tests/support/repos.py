"""Bare repositories with a known history, seeded straight into a node's storage.

`build_history(path)` creates, with fixed authors and dates (so object ids are
the same on every run and machine):

    main:      c1 -- c2 -- c4 -- c5 (merge of feature)
                       \\          /
    feature:            c3 ------
    unmerged:           c2 -- c6
    stale:     c1

    tags: v1.0 (lightweight, c2), v1.1 (annotated, c4), v2.0 (annotated, c5)

Files at main: README.md, docs/guide/intro.md (a chain of single-child trees
for flat paths), src/app.py, src/feature.py, big.bin (a 100 KiB blob),
link (a symbolic link). HEAD is refs/heads/main.

Build once per session with `template_repository(tmp_path_factory)` and copy it
into each test's storage with `copy_repository(template, storage_root)`:
copying is much cheaper than running git thirty times per test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gitenv import git_env

RELATIVE_PATH = "group/project.git"


@dataclass(frozen=True)
class Person:
    name: str
    email: str


ALICE = Person("Alice Author", "alice@example.com")
BOB = Person("Bob Builder", "bob@example.com")
CAROL = Person("Carol Tagger", "carol@example.com")

BASE_TIME = 1_600_000_000  # 2020-09-13T12:26:40Z
BIG_BLOB = bytes(range(256)) * 400  # 102400 bytes


@dataclass
class SeededRepository:
    path: Path
    relative_path: str
    commits: dict[str, str] = field(default_factory=dict)  # c1..c6 -> oid
    tags: dict[str, str] = field(default_factory=dict)  # tag name -> object id the ref points at
    messages: dict[str, str] = field(default_factory=dict)  # c1..c6 -> full message
    authors: dict[str, Person] = field(default_factory=dict)
    dates: dict[str, int] = field(default_factory=dict)  # committer/author seconds

    def oid(self, name: str) -> str:
        return self.commits[name]


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env or git_env(), input=stdin, capture_output=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout.decode().strip()


def _env_for(person: Person, seconds: int, tz: str = "+0200") -> dict[str, str]:
    date = f"@{seconds} {tz}"
    return git_env(
        {
            "GIT_AUTHOR_NAME": person.name,
            "GIT_AUTHOR_EMAIL": person.email,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": person.name,
            "GIT_COMMITTER_EMAIL": person.email,
            "GIT_COMMITTER_DATE": date,
        }
    )


def _write(work: Path, relative: str, content: str | bytes) -> None:
    target = work / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)


def build_history(path: Path) -> SeededRepository:
    """Create the bare repository `path` with the history of the module docstring."""
    work = path.parent / (path.name + ".work")
    work.mkdir(parents=True)
    repo = SeededRepository(path=path, relative_path="")

    def commit(name: str, message: str, person: Person, seconds: int) -> None:
        _run(["add", "-A"], work)
        _run(
            ["commit", "-q", "--allow-empty", "-F", "-"],
            work,
            _env_for(person, seconds),
            message.encode(),
        )
        repo.commits[name] = _run(["rev-parse", "HEAD"], work)
        repo.messages[name] = message
        repo.authors[name] = person
        repo.dates[name] = seconds

    _run(["init", "-q", "-b", "main", str(work)], path.parent)
    _write(work, "README.md", "# Project\n")
    _write(work, "docs/guide/intro.md", "Introduction\n")
    commit("c1", "Initial commit\n", ALICE, BASE_TIME)

    _write(work, "src/app.py", "print('app')\n")
    _write(work, "big.bin", BIG_BLOB)
    os.symlink("README.md", work / "link")
    commit("c2", "Add application\n\nThe first version of the app.\n", BOB, BASE_TIME + 100)

    _run(["branch", "stale", repo.commits["c1"]], work)
    _run(["branch", "unmerged", repo.commits["c2"]], work)
    _run(["checkout", "-q", "-b", "feature"], work)
    _write(work, "src/feature.py", "FEATURE = True\n")
    commit(
        "c3",
        "Add feature\n\nLonger description of the feature.\n\n"
        "Signed-off-by: Bob Builder <bob@example.com>\nReviewed-by: Alice Author <alice@example.com>\n",
        BOB,
        BASE_TIME + 200,
    )

    _run(["checkout", "-q", "main"], work)
    _write(work, "README.md", "# Project\n\nNow with a feature.\n")
    commit("c4", "Update README\n", ALICE, BASE_TIME + 300)

    _run(["merge", "-q", "--no-ff", "--no-edit", "feature"], work, _env_for(ALICE, BASE_TIME + 400))
    repo.commits["c5"] = _run(["rev-parse", "HEAD"], work)
    repo.messages["c5"] = _run(["log", "-1", "--format=%B", "HEAD"], work) + "\n"
    repo.authors["c5"] = ALICE
    repo.dates["c5"] = BASE_TIME + 400

    _run(["checkout", "-q", "unmerged"], work)
    _write(work, "unmerged.txt", "not merged\n")
    commit("c6", "Unmerged work\n", BOB, BASE_TIME + 500)
    _run(["checkout", "-q", "main"], work)

    tag_env = _env_for(CAROL, BASE_TIME + 600)
    _run(["tag", "v1.0", repo.commits["c2"]], work, tag_env)
    _run(["tag", "-a", "v1.1", "-m", "Release 1.1", repo.commits["c4"]], work, tag_env)
    _run(
        ["tag", "-a", "v2.0", "-m", "Release 2.0\n\nWith the feature.", repo.commits["c5"]],
        work,
        tag_env,
    )
    for tag in ("v1.0", "v1.1", "v2.0"):
        repo.tags[tag] = _run(["rev-parse", f"refs/tags/{tag}"], work)

    path.parent.mkdir(parents=True, exist_ok=True)
    _run(["clone", "-q", "--bare", str(work), str(path)], path.parent)
    # A bare clone records the work repository as a remote; the node's
    # repositories have none.
    _run(["remote", "remove", "origin"], path)
    shutil.rmtree(work)
    return repo


def template_repository(root: Path) -> SeededRepository:
    """Build the history once under `root` (give it a session-scoped directory)."""
    return build_history(root / "template.git")


def copy_repository(
    template: SeededRepository, storage_root: Path, relative_path: str = RELATIVE_PATH
) -> SeededRepository:
    """Copy the template into `storage_root/relative_path` (the node's storage)."""
    target = storage_root / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template.path, target, symlinks=True)
    return SeededRepository(
        path=target,
        relative_path=relative_path,
        commits=dict(template.commits),
        tags=dict(template.tags),
        messages=dict(template.messages),
        authors=dict(template.authors),
        dates=dict(template.dates),
    )


def create_empty_repository(storage_root: Path, relative_path: str) -> Path:
    """An empty bare repository (HEAD -> refs/heads/main, no commits)."""
    target = storage_root / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(["init", "-q", "--bare", "-b", "main", str(target)], storage_root)
    return target


def git_in(path: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run git in a seeded bare repository (synchronously: tests only)."""
    return _run(list(args), path, stdin=stdin)


def append_linear_commits(
    path: Path, branch: str, count: int, *, start: int = BASE_TIME + 1000
) -> list[str]:
    """Add `count` commits on top of `branch` with one `git fast-import` (fast
    for long histories); returns their ids, oldest first."""
    ref = f"refs/heads/{branch}"
    parent = _run(["rev-parse", "--verify", "--quiet", ref], path)
    stream = []
    for index in range(count):
        message = f"Linear commit {index}\n".encode()
        content = f"line {index}\n".encode()
        stream.append(f"commit {ref}\nmark :{index + 1}\n".encode())
        stream.append(f"committer {BOB.name} <{BOB.email}> {start + index} +0000\n".encode())
        stream.append(b"data %d\n%s" % (len(message), message))
        if index == 0 and parent:
            stream.append(f"from {parent}\n".encode())
        stream.append(b"M 100644 inline linear.txt\ndata %d\n%s\n" % (len(content), content))
    _run(["fast-import", "--quiet"], path, stdin=b"".join(stream))
    return _run(["rev-list", "--reverse", f"--max-count={count}", ref], path).split()
