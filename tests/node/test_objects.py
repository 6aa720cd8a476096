"""Reading and parsing git objects (praefect.node.objects) with real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from praefect.node.errors import InvalidArgument, NotFound
from praefect.node.objects import (
    MAX_MESSAGE_SIZE,
    open_object_reader,
    open_object_stream,
    parse_commit,
    parse_commit_author,
    parse_tag,
    parse_trailers,
    parse_tree,
    read_commit,
    read_commits,
    read_tag,
    read_trailers,
    trim_tag_message,
)
from praefect.node.refs import (
    RefUpdate,
    RefUpdateConflict,
    default_branch,
    is_valid_ref_name,
    update_refs,
)
from praefect.protos.gitaly import shared_pb2
from tests.support.repos import (
    BIG_BLOB,
    SeededRepository,
    copy_repository,
    git_in,
    template_repository,
)

TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
HEADER = f"tree {TREE}\nauthor A U Thor <a@example.com> 1700000000 +0130\ncommitter C <c@example.com> 1700000001 -0700\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SeededRepository:
    return template_repository(tmp_path_factory.mktemp("objects-history"))


@pytest.fixture
def repo(template: SeededRepository, tmp_path: Path) -> SeededRepository:
    return copy_repository(template, tmp_path / "storage")


# Parsing


def test_parse_commit_fields() -> None:
    parents = f"parent {'1' * 40}\nparent {'2' * 40}\n"
    header = HEADER.replace("author", parents + "author", 1)
    raw = (header + "encoding ISO-8859-1\n\nSubject line\r\n\nBody.\n").encode()
    commit = parse_commit("c" * 40, raw)
    assert commit.id == "c" * 40 and commit.tree_id == TREE
    assert list(commit.parent_ids) == ["1" * 40, "2" * 40]
    assert commit.author.name == b"A U Thor" and commit.author.email == b"a@example.com"
    assert commit.author.date.seconds == 1700000000 and commit.author.timezone == b"+0130"
    assert commit.committer.timezone == b"-0700"
    assert commit.subject == b"Subject line"
    assert commit.body == b"Subject line\r\n\nBody.\n" and commit.body_size == len(commit.body)
    assert commit.encoding == "ISO-8859-1"


@pytest.mark.parametrize(
    "first_line, expected",
    [
        ("-----BEGIN PGP SIGNATURE-----", shared_pb2.PGP),
        ("-----BEGIN SSH SIGNATURE-----", shared_pb2.SSH),
        ("-----BEGIN SIGNED MESSAGE-----", shared_pb2.X509),
        ("-----BEGIN SOMETHING ELSE-----", shared_pb2.NONE),
    ],
)
def test_parse_commit_signature_type(first_line: str, expected: int) -> None:
    raw = (HEADER + f"gpgsig {first_line}\n \n abc\n -----END-----\n\nSigned\n").encode()
    commit = parse_commit("c" * 40, raw)
    assert commit.signature_type == expected
    assert commit.subject == b"Signed"


def test_parse_commit_truncates_body_and_keeps_full_size() -> None:
    message = b"Subject\n\n" + b"y" * (3 * MAX_MESSAGE_SIZE)
    commit = parse_commit("c" * 40, HEADER.encode() + b"\n" + message)
    assert len(commit.body) == MAX_MESSAGE_SIZE and commit.body_size == len(message)


def test_parse_commit_without_message() -> None:
    commit = parse_commit("c" * 40, HEADER.encode())
    assert commit.subject == b"" and commit.body == b"" and commit.body_size == 0


def test_parse_commit_simple_trailers() -> None:
    raw = (
        HEADER.encode()
        + b"\nSubject\n\nBody text.\n\nSigned-off-by: A <a@example.com>\nFixes: #12\n"
    )
    commit = parse_commit("c" * 40, raw, trailers=True)
    assert [(t.key, t.value) for t in commit.trailers] == [
        (b"Signed-off-by", b"A <a@example.com>"),
        (b"Fixes", b"#12"),
    ]


def test_parse_commit_author_edge_cases() -> None:
    no_email = parse_commit_author(b"Just A Name")
    assert no_email.name == b"Just A Name" and not no_email.email and not no_email.HasField("date")
    bad_date = parse_commit_author(b"N <n@example.com> notanumber +0000")
    assert bad_date.date.seconds == (1 << 63) - 62135596801
    no_zone = parse_commit_author(b"N <n@example.com> 12")
    assert no_zone.date.seconds == 12 and no_zone.timezone == b""


def test_parse_tag_and_signature() -> None:
    raw = (
        f"object {'1' * 40}\ntype commit\ntag v1\ntagger T <t@example.com> 1700000000 +0000\n\n"
        "Message\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"
    ).encode()
    tag = parse_tag("t" * 40, raw, name=b"renamed")
    assert tag.name == b"renamed" and tag.id == "t" * 40
    assert tag.tagger.email == b"t@example.com"
    assert tag.signature_type == shared_pb2.PGP
    assert tag.message.startswith(b"Message\n-----BEGIN") and tag.message_size == len(tag.message)
    assert parse_tag("t" * 40, raw).name == b"v1"


def test_trim_tag_message() -> None:
    tag = shared_pb2.Tag(message=b"m" * (MAX_MESSAGE_SIZE + 5) + b"\n\n")
    trim_tag_message(tag)
    assert tag.message_size == MAX_MESSAGE_SIZE + 5 and len(tag.message) == MAX_MESSAGE_SIZE


def test_parse_trailers_applies_gitaly_limits() -> None:
    raw = b"\x00".join(
        [
            b"Key: value",
            b"no separator",
            b":no key",
            b"K" * 129 + b": v",
            b"Long: " + b"v" * 513,
            b"Ok:  spaced  ",
        ]
    )
    assert [(t.key, t.value) for t in parse_trailers(raw)] == [
        (b"Key", b"value"),
        (b"Ok", b"spaced"),
    ]
    many = b"\x00".join(b"K%d: v" % i for i in range(100))
    assert len(parse_trailers(many)) == 64


def test_parse_tree_matches_ls_tree(repo: SeededRepository) -> None:
    listing = git_in(repo.path, "ls-tree", "main").splitlines()
    expected = [
        (int(line.split()[0], 8), line.split("\t")[1].encode(), line.split()[2]) for line in listing
    ]
    raw_tree = subprocess.run(
        ["git", "cat-file", "tree", "main^{tree}"], cwd=repo.path, capture_output=True, check=True
    ).stdout
    assert [(item.mode, item.name, item.oid) for item in parse_tree(raw_tree)] == expected


# Reading with git


async def test_read_commit_resolves_and_peels(repo: SeededRepository) -> None:
    commit = await read_commit(repo.path, "v2.0")
    assert commit is not None and commit.id == repo.oid("c5")
    assert await read_commit(repo.path, "nope") is None
    assert await read_commit(repo.path, "main^{tree}") is None


async def test_read_commit_with_trailers_uses_git(repo: SeededRepository) -> None:
    commit = await read_commit(repo.path, "feature", trailers=True)
    assert commit is not None
    assert [t.key for t in commit.trailers] == [b"Signed-off-by", b"Reviewed-by"]


async def test_read_commit_refuses_newlines(repo: SeededRepository) -> None:
    with pytest.raises(InvalidArgument):
        await read_commit(repo.path, "main\nHEAD")


async def test_read_commits_keeps_order(repo: SeededRepository) -> None:
    oids = [repo.oid("c3"), repo.oid("c1"), repo.oid("c5")]
    commits = await read_commits(repo.path, oids, trailers=True)
    assert [c.id for c in commits] == oids
    assert commits[0].trailers and not commits[1].trailers
    with pytest.raises(NotFound):
        await read_commits(repo.path, ["1" * 40])


async def test_read_trailers_of_many_commits(repo: SeededRepository) -> None:
    found = await read_trailers(repo.path, [repo.oid("c1"), repo.oid("c3")])
    assert found[repo.oid("c1")] == []
    assert [t.value for t in found[repo.oid("c3")]] == [
        b"Bob Builder <bob@example.com>",
        b"Alice Author <alice@example.com>",
    ]


async def test_read_tag_annotated_lightweight_and_missing(repo: SeededRepository) -> None:
    annotated = await read_tag(repo.path, "v1.1")
    assert annotated is not None
    assert annotated.id == repo.tags["v1.1"] and annotated.message == b"Release 1.1"
    assert annotated.target_commit.id == repo.oid("c4")
    light = await read_tag(repo.path, "v1.0")
    assert light is not None and light.id == repo.oid("c2") and not light.message
    assert await read_tag(repo.path, "v9") is None
    with pytest.raises(InvalidArgument):
        await read_tag(repo.path, "bad..name")


async def test_read_tag_of_a_nested_tag_reaches_the_commit(repo: SeededRepository) -> None:
    git_in(repo.path, "tag", "-a", "-m", "Tag of a tag", "nested", "v1.1")
    nested = await read_tag(repo.path, "nested")
    assert nested is not None and nested.target_commit.id == repo.oid("c4")


async def test_object_reader_serves_many_requests(repo: SeededRepository) -> None:
    async with open_object_reader(repo.path) as reader:
        commits = [
            await reader.read_commit(repo.oid(name))
            for name in ("c1", "c2", "c3", "c4", "c5", "c6")
        ]
        tree = await reader.read_tree("main^{tree}")
        missing = await reader.read("nope")
    assert all(commit is not None for commit in commits)
    assert tree is not None and [item.name for item in tree[1]][:2] == [b"README.md", b"big.bin"]
    assert missing is None


async def test_object_stream_reads_a_prefix_without_reading_everything(
    repo: SeededRepository,
) -> None:
    async with open_object_stream(repo.path, "main:big.bin") as stream:
        assert (
            stream is not None and stream.info.type == "blob" and stream.info.size == len(BIG_BLOB)
        )
        data = b"".join([chunk async for chunk in stream.chunks(1000, chunk_size=300)])
    assert data == BIG_BLOB[:1000]
    async with open_object_stream(repo.path, "main:nope") as missing:
        assert missing is None


# References


@pytest.mark.parametrize(
    "name, valid",
    [
        ("refs/heads/main", True),
        ("refs/heads/feature/x-1", True),
        ("refs/heads/a..b", False),
        ("refs/heads/a b", False),
        ("refs/heads/x.lock", False),
        ("refs/heads/.hidden", False),
        ("refs/heads/x/", False),
        ("refs//heads", False),
        ("refs/heads/a@{1}", False),
        ("refs/heads/a~1", False),
        ("-refs/heads/x", False),
        ("refs/heads/x.", False),
    ],
)
def test_ref_name_rules_match_git(name: str, valid: bool) -> None:
    git_says = (
        subprocess.run(["git", "check-ref-format", name], capture_output=True).returncode == 0
    )
    assert is_valid_ref_name(name) is valid
    if not name.startswith("-"):
        assert git_says is valid


async def test_update_refs_is_atomic(repo: SeededRepository) -> None:
    before = git_in(repo.path, "for-each-ref")
    with pytest.raises(RefUpdateConflict):
        await update_refs(
            repo.path,
            [
                RefUpdate("refs/heads/brand-new", repo.oid("c1")),
                RefUpdate("refs/heads/main", repo.oid("c1"), repo.oid("c1")),
            ],
        )
    assert git_in(repo.path, "for-each-ref") == before
    await update_refs(repo.path, [RefUpdate("refs/heads/brand-new", repo.oid("c1"), "0" * 40)])
    assert git_in(repo.path, "rev-parse", "refs/heads/brand-new") == repo.oid("c1")


async def test_default_branch_fallbacks(repo: SeededRepository) -> None:
    assert await default_branch(repo.path) == "refs/heads/main"
    git_in(repo.path, "symbolic-ref", "HEAD", "refs/heads/unmerged")
    assert await default_branch(repo.path) == "refs/heads/unmerged"
    git_in(repo.path, "symbolic-ref", "HEAD", "refs/heads/gone")
    git_in(repo.path, "branch", "-m", "main", "master")
    assert await default_branch(repo.path) == "refs/heads/master"
