"""Shared test set-up.

* `tests/builders.py` holds the one builder of tiny synthetic feature sets (`make_features`); this file
  makes it importable from every test module and wraps it as the `make_set` fixture.
* Torch runs single-threaded (unless OMP_NUM_THREADS is set): every problem here is tiny, and on a
  busy two-core machine OpenMP threads spin against each other and make training tests 10-30x slower.
  The setting is inherited by the suite's subprocesses.
* `fake_comfy` makes ComfyUI's stand-ins (tests/comfy_stubs) importable, with the repository's `nodes`
  package, for the tests that run the model side (`comfy_stubs.sampling`) or the nodes without ComfyUI.
* The repository root is ComfyUI's entry point (`__init__.py`), not a package of tests. Left to itself,
  pytest sets the root up as a package by importing that file, which fails outside ComfyUI, and fails
  outright in a checkout whose folder is no valid package name (`custom_nodes/ComfyUI-SSAE`). The root
  is collected as a plain folder instead, by a plugin: a conftest hook only covers the folders below it.
"""
import importlib
import importlib.util
import os
import sys
from pathlib import Path

SINGLE_THREAD = "OMP_NUM_THREADS" not in os.environ
if SINGLE_THREAD:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if SINGLE_THREAD:
    torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from builders import make_features  # noqa: E402

import ssae  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _RootIsAFolder:
    @staticmethod
    def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        return pytest.Dir.from_parent(parent, path=path) if path == ROOT else None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_RootIsAFolder(), "ssae-root-is-a-folder")


@pytest.fixture
def make_set(tmp_path):
    """make_set(name="f", **overrides) -> FeatureSet: `builders.make_features` saved under tmp_path and opened."""
    def build(name: str = "f", **overrides) -> ssae.FeatureSet:
        return ssae.load_features(make_features(tmp_path / f"{name}.safetensors", **overrides))
    return build


_STUBBED = ("comfy", "comfy_api", "folder_paths", "server", "aiohttp", "nodes", "comfy_stubs")


@pytest.fixture(scope="module")
def fake_comfy(tmp_path_factory):
    """ComfyUI's stand-ins importable (and aiohttp's where it is not installed), the repository's `nodes` package
    with them, `folder_paths` rooted in a fresh folder; unloaded after the module. Yields `comfy_stubs.sampling`."""
    import comfy_stubs
    before = set(sys.modules)
    paths = [str(comfy_stubs.MODULES), str(ROOT)]
    if importlib.util.find_spec("aiohttp") is None:
        paths.append(str(comfy_stubs.OPTIONAL))
    sys.path[:0] = paths
    try:
        import folder_paths
        folder_paths.set_base(str(tmp_path_factory.mktemp("comfy")))
        yield importlib.import_module("comfy_stubs.sampling")
    finally:
        del sys.path[:len(paths)]
        for name in set(sys.modules) - before:
            if name.split(".")[0] in _STUBBED:
                del sys.modules[name]
