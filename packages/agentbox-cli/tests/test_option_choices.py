"""The fixed value sets of agentbox's options (``Option.choices``, what shell completion offers)
are the sets the verbs accept: said in the verb's record, which is all start-up imports, and
pinned here against the tables the verbs validate with."""

from agentbox_cli.imagebuild.plan import SUITE_PACKAGES
from agentbox_cli.imagebuild.verb import OPTIONS as IMAGE_OPTIONS
from agentbox_cli.kube import FORMATS, WORKSPACES
from agentbox_cli.kube.verb import KUBE
from agentbox_cli.libkrun.plan import TARGETS
from agentbox_cli.libkrun.verb import OPTIONS as LIBKRUN_OPTIONS
from agentbox_cli.microvm.verb import OPTIONS as MICROVM_OPTIONS
from agentbox_cli.microvm.verb import STORAGE_BACKENDS
from agentbox_state.cli.args import Option
from agentbox_storage.backends import Backend
from loftd.launch import OPTIONS as LOFTD_OPTIONS
from loftd.schema import BACKENDS


def option(options: tuple[Option, ...], name: str) -> Option:
    return next(o for o in options if o.name == name)


def test_libkrun_resize_targets_are_the_plans_disks() -> None:
    assert option(LIBKRUN_OPTIONS, "--target").choices == tuple(TARGETS)


def test_image_suites_are_the_plans_suites() -> None:
    assert sorted(option(IMAGE_OPTIONS, "--suite").choices) == sorted(SUITE_PACKAGES)


def test_microvm_storage_offers_every_backend_it_validates_with() -> None:
    # run() parses --storage with allowed=STORAGE_BACKENDS: the same tuple
    assert option(MICROVM_OPTIONS, "--storage").choices is STORAGE_BACKENDS
    assert tuple(b.value for b in Backend) == STORAGE_BACKENDS


def test_loftd_rootfs_backend_is_its_config_list() -> None:
    assert option(LOFTD_OPTIONS, "--rootfs-backend").choices is BACKENDS


def test_kube_formats_and_workspaces_are_what_render_validates() -> None:
    # render.check_request refuses any other value with the same tuples
    assert option(KUBE.options, "--format").choices is FORMATS
    assert option(KUBE.options, "--workspace").choices is WORKSPACES
