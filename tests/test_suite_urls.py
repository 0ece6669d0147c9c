"""A suite's base_url is an http(s) URL without credentials in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import SuiteError
from runner.suite import load_suite


def _suite(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(
        f"name: s\ndataset_id: d\nbase_url: '{base_url}'\nqueries: [a dog]\n", encoding="utf-8"
    )
    return path


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://user:s3cret@host:1", id="user-and-password"),
        pytest.param("https://s3cret@host/api", id="user-only"),
    ],
)
def test_credentials_in_base_url_are_refused_and_not_echoed(tmp_path: Path, url: str) -> None:
    with pytest.raises(SuiteError, match=r"suite\.yaml:3: base_url: .*user name or password") as e:
        load_suite(_suite(tmp_path, url))
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(
    "url", [pytest.param("http://host name", id="space"), pytest.param("http://", id="no-host")]
)
def test_a_url_that_is_not_one_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(SuiteError, match=r"suite\.yaml:3: base_url: .*not an http\(s\) URL"):
        load_suite(_suite(tmp_path, url))


def test_a_plain_url_loads_without_its_trailing_slash(tmp_path: Path) -> None:
    assert (
        load_suite(_suite(tmp_path, "https://host:8443/api/")).base_url == "https://host:8443/api"
    )
