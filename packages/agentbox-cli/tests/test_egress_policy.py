"""The network policy's host patterns, modes and refusals (pure)."""

from __future__ import annotations

import pytest

from agentbox_cli.egress.policy import NetworkPolicy, build_policy, denial_body, matches
from agentbox_state.errors import UsageError


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("github.com", "github.com", True),
        ("github.com", "GitHub.com.", True),
        ("github.com", "api.github.com", False),
        ("github.com", "evilgithub.com", False),
        ("*.npmjs.org", "registry.npmjs.org", True),
        ("*.npmjs.org", "a.b.npmjs.org", True),
        ("*.npmjs.org", "npmjs.org", False),
        ("*.npmjs.org", "evilnpmjs.org", False),
    ],
    ids=["exact", "case-and-dot", "sub-not-exact", "suffix-not-exact", "wild", "wild-deep",
         "wild-not-apex", "wild-not-suffix"],
)  # fmt: skip
def test_matches(pattern: str, host: str, expected: bool) -> None:
    assert matches(pattern, host) is expected


@pytest.mark.parametrize(
    "bad",
    ["https://github.com", "github.com:443", "github.com/x", "a.*.org", "*", "*.", "", "10.0.0.1",
     "-a.org", "a b.org", "**.org"],
)  # fmt: skip
def test_malformed_patterns_are_refused_naming_the_fix(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        build_policy(mode="allow", extra_allow=[bad])
    assert "--allow" in err.value.message
    assert err.value.hint


def test_modes() -> None:
    allow = build_policy(mode="allow", allow=["github.com"], extra_allow=["*.npmjs.org"])
    assert allow == NetworkPolicy(mode="allow", allow=("github.com", "*.npmjs.org"))
    assert allow.allows("registry.npmjs.org")
    assert not allow.allows("example.com")
    assert not build_policy(mode="none").allows("github.com")
    assert build_policy().allows("anything.example")
    assert not build_policy().enforced
    assert build_policy(extra_allow=["github.com"]).mode == "allow"  # --allow alone: allow


def test_unknown_mode_and_allow_with_none_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown network mode 'closed'") as err:
        build_policy(mode="closed")
    assert err.value.hint == "use one of: open, none, allow"
    for mode in ("none", "open"):  # --net open --allow: the list would not be obeyed
        with pytest.raises(UsageError, match=rf"--allow cannot be combined .* '{mode}'"):
            build_policy(mode=mode, extra_allow=["github.com"])
    with pytest.raises(UsageError, match=r"--allow cannot be combined .* 'none'"):
        build_policy(configured_mode="none", extra_allow=["github.com"])


def test_resolve_overrides() -> None:
    policy = build_policy(mode="allow", allow=["a.test"], resolve=["A.test:127.0.0.1"])
    assert policy.resolved("a.test") == "127.0.0.1"
    assert policy.resolved("b.test") is None
    for bad in ("*.test:127.0.0.1", "a.test", "a.test:localhost", ":127.0.0.1"):
        with pytest.raises(UsageError, match="is not NAME:ADDRESS") as err:
            build_policy(resolve=[bad])
        assert err.value.hint == (
            'name one host and its IP address per entry: resolve = ["web.test:127.0.0.1"]'
        )


def test_denial_body_names_the_host_and_both_fixes() -> None:
    assert denial_body("x.test") == (
        "agentbox: the network policy denies x.test\n"
        'hint: add it to [network] allow = ["x.test"] in agentbox.toml, or pass --allow x.test\n'
    )
