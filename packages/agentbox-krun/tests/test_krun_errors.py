import errno
import pickle

import pytest

from agentbox_krun.errors import KrunError
from agentbox_state.errors import AgentboxError


@pytest.mark.parametrize(
    ("func", "err", "message"),
    [
        (
            "krun_set_vm_config",
            errno.EINVAL,
            "krun_set_vm_config failed: EINVAL (Invalid argument)",
        ),
        ("krun_add_disk", errno.ENOENT, "krun_add_disk failed: ENOENT (No such file or directory)"),
        ("krun_start_enter", 4242, "krun_start_enter failed: errno 4242 (Unknown error 4242)"),
    ],
)
def test_message_names_function_and_errno(func: str, err: int, message: str) -> None:
    e = KrunError(func, err)
    assert isinstance(e, AgentboxError)
    assert e.message == message
    assert (e.func, e.errno) == (func, err)


def test_pickles_across_the_helper_boundary() -> None:
    e = KrunError("krun_create_ctx", errno.ENOMEM, hint="free memory")
    back = pickle.loads(pickle.dumps(e))
    assert (back.message, back.func, back.errno) == (e.message, "krun_create_ctx", errno.ENOMEM)
    assert back.hint == "free memory"
