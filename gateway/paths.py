"""Repository paths taken from URLs, checked before anything is called.

A URL path such as ``/group/project.git/info/refs`` names the repository
``group/project.git``; ``/group/project/info/refs`` names the same one, as
on GitLab. The router and the node validate paths as well, but the gateway
refuses the obviously wrong ones itself so that no call carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

GIT_SUFFIX = ".git"


class BadRepositoryPath(ValueError):
    """The URL does not name a repository; the message says why."""


@dataclass(frozen=True, slots=True)
class GitEndpoint:
    """A smart-HTTP endpoint: the repository and what is asked of it."""

    relative_path: str
    #: "info/refs", "git-upload-pack" or "git-receive-pack"
    action: str


ENDPOINT_SUFFIXES = ("/info/refs", "/git-upload-pack", "/git-receive-pack")


def split_endpoint(url_path: str) -> GitEndpoint | None:
    """The repository and action of a decoded URL path, or None when the path
    is not a smart-HTTP endpoint. Raises BadRepositoryPath for an endpoint
    whose repository part is not acceptable."""
    for suffix in ENDPOINT_SUFFIXES:
        if url_path.endswith(suffix):
            prefix = url_path[: -len(suffix)]
            return GitEndpoint(normalise_relative_path(prefix), suffix[1:])
    return None


def normalise_relative_path(url_prefix: str) -> str:
    """The relative path of the repository named by `url_prefix` (the decoded
    URL path before the endpoint), ending in ".git".

    Refuses empty paths, absolute paths, '.' and '..' components, empty
    components, components starting with '-' (git could read them as
    options) and control characters.
    """
    path = url_prefix.removeprefix("/")
    if not path or path == GIT_SUFFIX:
        raise BadRepositoryPath(
            "no repository in the URL: use http://HOST:PORT/<group>/<project>.git"
        )
    if path.startswith("/"):
        raise BadRepositoryPath(
            "absolute repository paths are not allowed: use a path relative to the storage, "
            "such as group/project.git"
        )
    if any(ord(char) < 0x20 or char == "\x7f" for char in path):
        raise BadRepositoryPath("the repository path contains control characters")
    for component in path.split("/"):
        if component in (".", ".."):
            raise BadRepositoryPath(
                f"the repository path may not contain {component!r} components: "
                "name the repository directly, such as group/project.git"
            )
        if not component:
            raise BadRepositoryPath("the repository path has an empty component ('//' or a trailing '/')")
        if component.startswith("-"):
            raise BadRepositoryPath(
                f"repository path component {component!r} starts with '-', which is not allowed"
            )
    if not path.endswith(GIT_SUFFIX):
        path += GIT_SUFFIX
    return path
