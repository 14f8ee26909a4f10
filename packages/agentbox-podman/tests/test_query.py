from agentbox_podman.query import containers_with_labels
from agentbox_state.testing import RecordingRunner


def test_cli_query_with_debug_parses_stdout_only() -> None:
    rec = RecordingRunner()
    rec.script("podman", "--log-level=debug", "ps", stdout='[{"Names": ["b"]}, {"Names": ["a"]}]',
               stderr='time="t" level=debug msg="Shutting down engines"\n')  # fmt: skip
    assert containers_with_labels([("k", "v")], rec, api=None, debug=True) == ["a", "b"]
    assert rec.argvs == [
        ["podman", "--log-level=debug", "ps", "--format", "json", "--filter", "label=k=v"],
    ]
