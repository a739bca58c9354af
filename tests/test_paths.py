"""ssae.paths: names given by users and workflows stay inside their folder."""
import os

import pytest

from ssae import PathError, SSAEError
from ssae.paths import inside


def test_names_resolve_inside_and_escapes_are_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    assert inside(tmp_path, "a.safetensors") == str(tmp_path / "a.safetensors")
    assert inside(tmp_path, "sub/../b") == str(tmp_path / "b")
    for bad in ("../x", "/etc/passwd", "sub/../../x"):
        with pytest.raises(PathError, match="outside"):
            inside(tmp_path, bad)
    os.symlink(tmp_path.parent, tmp_path / "link")
    with pytest.raises(PathError):
        inside(tmp_path, "link/x")
    assert issubclass(PathError, SSAEError)
