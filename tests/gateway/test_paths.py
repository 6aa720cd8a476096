"""Repository paths from URLs: normalised, and refused when they could
escape the storage or be read as an option."""

from __future__ import annotations

import pytest

from praefect.gateway.paths import (
    BadRepositoryPath,
    GitEndpoint,
    normalise_relative_path,
    split_endpoint,
)


@pytest.mark.parametrize(
    ("url_path", "expected"),
    [
        ("/group/project.git/info/refs", GitEndpoint("group/project.git", "info/refs")),
        ("/group/project/info/refs", GitEndpoint("group/project.git", "info/refs")),
        ("/a/b/c/project.git/git-upload-pack", GitEndpoint("a/b/c/project.git", "git-upload-pack")),
        ("/project/git-receive-pack", GitEndpoint("project.git", "git-receive-pack")),
        ("/group/my.project/info/refs", GitEndpoint("group/my.project.git", "info/refs")),
    ],
)
def test_endpoints_name_the_repository_ending_in_dot_git(url_path: str, expected: GitEndpoint) -> None:
    assert split_endpoint(url_path) == expected


@pytest.mark.parametrize("url_path", ["/", "/group/project.git", "/group/project.git/HEAD", "/info/refs/x"])
def test_other_urls_are_not_endpoints(url_path: str) -> None:
    assert split_endpoint(url_path) is None


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("", "no repository"),
        ("/", "no repository"),
        ("/.git", "no repository"),
        ("//etc/passwd", "absolute"),
        ("/../etc", "'..'"),
        ("/group/../../x", "'..'"),
        ("/group/..", "'..'"),
        ("/./group", "'.'"),
        ("/group//project", "empty component"),
        ("/group/project/", "empty component"),
        ("/-x/project", "starts with '-'"),
        ("/group/--upload-pack=touch", "starts with '-'"),
        ("/group/pro\nject", "control characters"),
        ("/group/pro\x00ject", "control characters"),
    ],
)
def test_unsafe_paths_are_refused_with_the_reason(prefix: str, problem: str) -> None:
    with pytest.raises(BadRepositoryPath, match=problem):
        normalise_relative_path(prefix)


def test_dashes_inside_components_are_fine() -> None:
    assert normalise_relative_path("/my-group/my-project") == "my-group/my-project.git"
