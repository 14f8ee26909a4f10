from __future__ import annotations

from typing import Any, ClassVar

import pytest

from agentbox_state.record import Record


class Point(Record):
    x: int
    y: int = 0
    dims: ClassVar[int] = 2  # not a field


class Named(Record, kw_only=True):
    name: str
    tags: tuple[str, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name.upper())


def test_fields_are_declared_once_and_become_slots() -> None:
    assert vars(Point)["__slots__"] == ("x", "y")
    assert vars(Named)["__slots__"] == ("name", "tags", "label")
    assert Point.dims == 2
    p = Point(1, y=2)
    assert (p.x, p.y) == (1, 2)
    assert Point(3) == Point(x=3, y=0)
    assert repr(p) == "Point(x=1, y=2)"
    assert not hasattr(p, "__dict__")


def test_keyword_only_defaults_and_post_init() -> None:
    n = Named(name="box")
    assert (n.name, n.tags, n.label) == ("box", (), "BOX")
    assert repr(n) == "Named(label='BOX', name='box', tags=())"  # by name, as before
    assert Named(name="box", label="b") != n
    assert hash(Named(name="box")) == hash(n)
    assert Named(name="box") != Point(1)


# untyped aliases: these calls are wrong on purpose (mypy refuses them), to see what the base
# says at run time
P: Any = Point
N: Any = Named


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: P(), "Point() missing the argument 'x'"),
        (lambda: P(1, 2, 3), "Point() takes 2 positional arguments, 3 given"),
        (lambda: P(1, x=2), "Point() got multiple values for 'x'"),
        (lambda: P(1, z=2), "Point() got an unexpected keyword argument 'z'"),
        (lambda: N("box"), "Named() takes 0 positional arguments, 1 given"),
    ],
)
def test_calls_are_checked_against_the_annotations(make: Any, message: str) -> None:
    with pytest.raises(TypeError) as caught:
        make()
    assert str(caught.value) == message


def test_immutable() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match="Point is immutable; cannot set x"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="Point is immutable; cannot delete x"):
        del p.x


def test_a_default_before_a_required_positional_field_is_refused() -> None:
    with pytest.raises(TypeError, match="Bad: field b without a default follows one with it"):

        class Bad(Record):
            a: int = 0
            b: int  # type: ignore[misc]  # mypy refuses it too
