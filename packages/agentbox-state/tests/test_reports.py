"""The ``--json`` reports: their records and schemas (dataclasses-json), and what they cost."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentbox_state.cli.report import config_report, paths_report, render
from agentbox_state.config import ConfigFile
from agentbox_state.paths import StatePaths
from agentbox_state.reports import ConfigReport, PathsReport, SettingReport, to_json
from agentbox_state.workspace import Workspace

# dataclasses-json 0.6 builds schemas with arguments marshmallow 3.26 deprecates, and says a
# setting's value (any TOML value) has no marshmallow type: both are about building a schema
SCHEMA_WARNINGS = [
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning"),
    pytest.mark.filterwarnings("ignore:Unknown type .* at SettingReport.value"),
]
PATHS = StatePaths.resolve("tool", {"HOME": "/home/u"}, ConfigFile(path="/c/t.toml", exists=False))


@SCHEMA_WARNINGS[0]
def test_the_paths_report_validates_against_its_schema(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path)
    text = render("paths", paths_report(PATHS, ws), as_json=True)
    assert PathsReport.schema().validate(json.loads(text)) == {}
    record = PathsReport.from_json(text)
    assert record.state_base == "/home/u/.local/state/tool"
    assert record.workspace_state_dir == f"/home/u/.local/state/tool/workspaces/{ws.key}"
    assert record.to_json(indent=2) == text  # the printed text is the record, whole


@SCHEMA_WARNINGS[0]
@SCHEMA_WARNINGS[1]
def test_the_config_report_keeps_every_value_as_it_was() -> None:
    from agentbox_state.cli.flags import Setting

    settings = {
        "image.packages": Setting(("rg", "htop"), "default"),
        "container.grace": Setting(120, "env GRACE"),
        "image": Setting(None, "default: localhost/x"),
        "root": Setting(True, "flag --root"),
    }
    text = render("config", config_report("/c/t.toml", False, settings), as_json=True)
    assert json.loads(text) == {
        "config_file": "/c/t.toml",
        "config_file_exists": False,
        "settings": {
            "image.packages": {"value": ["rg", "htop"], "source": "default"},
            "container.grace": {"value": 120, "source": "env GRACE"},
            "image": {"value": None, "source": "default: localhost/x"},
            "root": {"value": True, "source": "flag --root"},
        },
    }
    assert ConfigReport.schema().validate(json.loads(text)) == {}
    assert ConfigReport.from_json(text).settings["root"] == SettingReport(
        value=True, source="flag --root"
    )


@SCHEMA_WARNINGS[0]
@SCHEMA_WARNINGS[1]
def test_a_report_that_does_not_fit_its_record_is_refused() -> None:
    with pytest.raises(TypeError, match="missing 7 required keyword-only arguments"):
        to_json("paths", {"state_base": "/x"})
    assert ConfigReport.schema().validate({"config_file": "/c", "settings": {}}) == {
        "config_file_exists": ["Missing data for required field."]
    }


def test_dataclasses_json_stays_off_the_start_up_path(tmp_path: Path) -> None:
    """The text reports import none of it; only --json does."""
    code = (
        "import os, sys; from agentbox_state.cli import app, verbs; "
        "from agentbox_state.config import STATE_TABLE; "
        "spec = app.AppSpec(name='tool', version='1', description='d', image_env='TOOL_IMAGE', "
        "default_image='x', schema={'state': STATE_TABLE}); "
        "app.main(spec, (verbs.PATHS, verbs.CONFIG), sys.argv[1:], {'HOME': os.environ['HOME']}, "
        "out=lambda s: None, err=print); "
        "print(sorted(m for m in ('dataclasses_json', 'marshmallow', 'typing_extensions') "
        "if m in sys.modules))"
    )

    def loaded(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "HOME": str(tmp_path)})  # fmt: skip
        return done.stdout.splitlines()[-1]

    assert loaded("paths") == "[]"
    assert loaded("config") == "[]"
    assert "'dataclasses_json'" in loaded("paths", "--json")
