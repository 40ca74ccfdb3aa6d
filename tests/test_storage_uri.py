"""One storage-URI validator for `upload` and `manifest` (issue 11, item 5): the same bad URIs
are refused by both commands with the same message, and nothing is written or sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.cli import cli
from scibert_pack.errors import InputError
from scibert_pack.kserve.options import STORAGE_SCHEMES
from scibert_pack.storage.targets import check_storage_uri

pytest_plugins = ["support.s3_fixtures"]

_SEGMENT = (
    "has an empty, '.' or '..' path segment; write the path plainly, e.g. s3://my-models/scibert"
)
_QUERY = "has a query or fragment ('?' or '#'), which a storage URI does not take"
_CREDENTIALS = "carries credentials (the part before '@'); a URI ends up in shell history"

# (id, URI, what both commands say after "Error: " and their label)
BAD: list[tuple[str, str, str]] = [
    ("s3-dot-dot", "s3://models/../../other/", f"'s3://models/../../other/' {_SEGMENT}"),
    ("pvc-dot-dot", "pvc://claim/../../etc/", f"'pvc://claim/../../etc/' {_SEGMENT}"),
    ("s3-dot", "s3://models/./scibert/", f"'s3://models/./scibert/' {_SEGMENT}"),
    ("pvc-trailing-dot-dot", "pvc://claim/scibert/..", f"'pvc://claim/scibert/..' {_SEGMENT}"),
    ("s3-empty-segment", "s3://models//scibert/", f"'s3://models//scibert/' {_SEGMENT}"),
    ("pvc-empty-segment", "pvc://claim/a//b/", f"'pvc://claim/a//b/' {_SEGMENT}"),
    ("two-trailing-slashes", "s3://models/scibert//", f"'s3://models/scibert//' {_SEGMENT}"),
    (
        "presigned-https",
        "https://models.s3.amazonaws.com/scibert.tar.gz?X-Amz-Credential=AKIAEXAMPLE"
        "&X-Amz-Signature=topsecret",
        f"'https://models.s3.amazonaws.com/scibert.tar.gz?...' {_QUERY}",
    ),
    ("s3-query", "s3://models/scibert/?versionId=3", f"'s3://models/scibert/?...' {_QUERY}"),
    ("fragment", "pvc://claim/scibert#v1", f"'pvc://claim/scibert#...' {_QUERY}"),
    (
        "s3-credentials",
        "s3://AKIAEXAMPLE:top/secret@models/scibert/",
        f"'s3://***@models/scibert/' {_CREDENTIALS}",
    ),
    ("pvc-credentials", "pvc://user:topsecret@claim/x/", f"'pvc://***@claim/x/' {_CREDENTIALS}"),
    (
        "crlf",
        "s3://models/scibert\r\nX-Injected: 1/",
        "'s3://models/scibert\\r\\nX-Injected: 1/' holds a control character or whitespace "
        "('\\r' at position 19); write the URI on one line with no spaces, tabs or line breaks",
    ),
    (
        "trailing-newline",
        "pvc://claim/scibert\n",
        "'pvc://claim/scibert\\n' holds a control character or whitespace ('\\n' at position "
        "19); write the URI on one line with no spaces, tabs or line breaks",
    ),
    (
        "space",
        "s3://models/sci bert/",
        "'s3://models/sci bert/' holds a control character or whitespace (' ' at position 15)",
    ),
    (
        "nul",
        "s3://models/sci\x00bert/",
        "'s3://models/sci\\x00bert/' holds a control character or whitespace ('\\x00' at "
        "position 15)",
    ),
    (
        "non-ascii",
        "s3://models/scibért/",
        "'s3://models/scibért/' holds a non-ASCII character ('é' at position 16); use ASCII "
        "letters, digits, '-', '_', '.' and '/' in bucket, claim and folder names",
    ),
    (
        "non-ascii-claim",
        "pvc://clаim/scibert/",  # a Cyrillic 'а'
        "'pvc://clаim/scibert/' holds a non-ASCII character ('а' at position 8)",
    ),
    (
        "percent-escaped-dot-dot",
        "pvc://claim/%2e%2e/etc/",
        "'pvc://claim/%2e%2e/etc/' holds a percent-escape ('%' at position 12), which tools "
        "read differently",
    ),
    (
        "backslash",
        "s3://models/..\\..\\other/",
        "'s3://models/..\\\\..\\\\other/' holds a backslash ('\\\\' at position 14)",
    ),
    ("bad-bucket", "s3://Models_1/scibert/", "'s3://Models_1/scibert/' names no valid S3 bucket"),
    ("no-bucket", "s3:///scibert/", "'s3:///scibert/' names no valid S3 bucket (got '')"),
    ("bad-claim", "pvc://Claim/x/", "'pvc://Claim/x/' names no valid PersistentVolumeClaim"),
    ("uppercase-scheme", "S3://models/scibert/", "unknown storage scheme 'S3' in 'S3://models/"),
]
SECRETS = ("topsecret", "AKIAEXAMPLE", "top/secret")


def _check(result_stderr: str, label: str, expected: str) -> None:
    assert result_stderr.startswith(f"Error: {label}{expected}"), result_stderr
    assert result_stderr.count("\n") == 1, result_stderr  # one line, no traceback
    for secret in SECRETS:
        assert secret not in result_stderr


@pytest.mark.parametrize(("uri", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_the_validator_refuses_for_both_commands(uri: str, expected: str) -> None:
    for schemes, label in ((("s3", "pvc"), ""), (STORAGE_SCHEMES, "--storage-uri ")):
        with pytest.raises(InputError) as caught:
            check_storage_uri(uri, schemes=schemes, label=label)
        assert str(caught.value).startswith(label + expected)


@pytest.mark.parametrize(("uri", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_upload_refuses_and_sends_nothing(
    make_store: Callable[..., Path], tmp_path: Path, uri: str, expected: str
) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = CliRunner().invoke(cli, ["upload", str(make_store()), uri, "--pvc-mount", str(mount)])
    assert (result.exit_code, result.stdout) == (2, "")
    _check(result.stderr, "", expected)
    assert list(mount.iterdir()) == []


@pytest.mark.parametrize(("uri", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_manifest_refuses_and_writes_nothing(tmp_path: Path, uri: str, expected: str) -> None:
    out = tmp_path / "isvc.yaml"
    result = CliRunner().invoke(
        cli,
        ["manifest", "--name", "scibert", "--storage-uri", uri, "-o", str(out),
         "--dockerfile", str(tmp_path / "Dockerfile")],
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (2, "")
    _check(result.stderr, "--storage-uri ", expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/scibert/1.0-3f2a9c01d4e5/",
        "s3://models/scibert",
        "pvc://model-claim/scibert/1.0-3f2a9c01d4e5/",
        "s3://models/team@corp/scibert/",
        "s3://my.models-1/a_b/c-d/",
    ],
)
def test_good_uris_pass_for_both(uri: str) -> None:
    for schemes in (("s3", "pvc"), STORAGE_SCHEMES):
        check_storage_uri(uri, schemes=schemes)


@pytest.mark.parametrize(
    "uri",
    ["gs://my_models/scibert/", "https://models.example.com/scibert.tar.gz", "hdfs://nn:8020/m/"],
)
def test_manifest_only_schemes_pass_for_manifest(uri: str) -> None:
    check_storage_uri(uri, schemes=STORAGE_SCHEMES)
    with pytest.raises(InputError, match="unknown storage scheme"):
        check_storage_uri(uri, schemes=("s3", "pvc"))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3:/models/scibert", "STORAGE_URI 's3:/models/scibert' looks like a s3:// URI with a slash missing, not a local folder; write 's3://models/scibert'"),
        ("s3:models/scibert", "STORAGE_URI 's3:/models/scibert' looks like a s3:// URI with a slash missing, not a local folder; write 's3://models/scibert'"),
        ("PVC:/claim/m", "STORAGE_URI 'PVC:/claim/m' looks like a PVC:// URI with a slash missing"),
        ("s3:/AKIA:secret@models/m", "STORAGE_URI 's3:/***@models/m' looks like"),
    ],
    ids=["s3-one-slash", "s3-no-slash", "pvc-upper-case", "credentials-redacted"],
)  # fmt: skip
def test_upload_refuses_a_uri_with_a_slash_missing(
    make_store: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    expected: str,
) -> None:
    """A typo'd URI is not a local folder named `s3:` created in the current one."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["upload", str(make_store()), uri])
    assert (result.exit_code, result.stdout) == (2, "")
    assert expected in " ".join(result.stderr.split())
    assert "secret" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
