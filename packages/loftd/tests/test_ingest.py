from pathlib import Path

import pytest

from agentbox_podman.buildah import unshare
from loftd.ingest import ingest_argv, main


def test_ingest_argv_plain_and_debug() -> None:
    plain = ingest_argv([], "/py", Path("/c"), "bin/agentbox-guest-init")
    assert plain("localhost/x:1", None) == [
        "/py", "-m", "loftd.ingest", "localhost/x:1", "/c", "", "bin/agentbox-guest-init",
        "never",
    ]  # fmt: skip
    debug = ingest_argv(unshare(debug=True), "/py", Path("/c"), "bin/loftd-guest-init",
                        "missing", debug=True)  # fmt: skip
    assert debug("localhost/x:1", "sha256:" + "a" * 64) == [
        "buildah", "--log-level=debug", "unshare", "/py", "-m", "loftd.ingest", "--debug",
        "localhost/x:1", "/c", "sha256:" + "a" * 64, "bin/loftd-guest-init", "missing",
    ]  # fmt: skip


@pytest.mark.parametrize("argv", [[], ["--debug"], ["--debug", "a", "b", "c"], ["a", "--debug"]],
                         ids=["none", "only-debug", "too-few", "debug-not-first"])  # fmt: skip
def test_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "usage: python -m loftd.ingest [--debug] REF CACHE_ROOT EXPECTED_DIGEST GUEST_INIT [PULL]\n"
    )


def test_debug_child_echoes_buildahs_debug_command_and_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # buildah not found: nothing runs for real
    assert main(["--debug", "localhost/x:1", str(tmp_path / "c"), "", "bin/g"]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "+ buildah --log-level=debug from --pull=never --quiet localhost/x:1", err
    assert "Traceback (most recent call last):" in err
