"""The example workflows' start pictures: the shipped digit is a real held-out "2" that the demo's classifier
reads as 2, its script reproduces it, and nodes/example_pictures.py copies the pictures into ComfyUI's input
folder without ever touching a name the user already has there (no ComfyUI needed)."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pack import PACK_DIR, load_pack

PICTURES_DIR = PACK_DIR / "examples" / "pictures"
DIGIT_TWO = PICTURES_DIR / "digit_two.png"
SCRIPT = PACK_DIR / "demo" / "make_example_pictures.py"


@pytest.fixture(scope="module")
def example_pictures():
    """nodes/example_pictures.py, imported without nodes/__init__.py (which imports ComfyUI)."""
    pack = load_pack()
    nodes_name = f"{pack.__name__}.nodes"
    real_nodes = sys.modules.get(nodes_name)
    if real_nodes is None:
        stub = types.ModuleType(nodes_name)
        stub.__path__ = [str(PACK_DIR / "nodes")]
        sys.modules[nodes_name] = stub
    try:
        yield importlib.import_module(f"{nodes_name}.example_pictures")
    finally:
        if real_nodes is None:
            sys.modules.pop(nodes_name, None)
            sys.modules.pop(f"{nodes_name}.example_pictures", None)


@pytest.fixture
def shipped(example_pictures) -> dict[str, bytes]:
    """{input folder name: bytes} of every picture the pack ships."""
    pictures = sorted(PICTURES_DIR.glob("*.png"))
    assert DIGIT_TWO in pictures
    return {example_pictures.example_picture_name(path.stem): path.read_bytes() for path in pictures}


def test_the_name_rule(example_pictures):
    assert example_pictures.example_picture_name("digit_two") == "visual_anagrams_digit_two.png"


def test_copies_every_picture_into_an_empty_folder(example_pictures, shipped, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        copied = example_pictures.install_example_pictures(str(tmp_path))
    assert sorted(copied) == sorted(shipped)
    # The pictures and nothing else: no temporary file left behind.
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == shipped
    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert len(infos) == len(shipped) and all(any(name in info for info in infos) for name in shipped), infos
    assert example_pictures.install_example_pictures(str(tmp_path)) == []  # a second start copies nothing


def test_defaults_to_comfyuis_input_folder(example_pictures, shipped, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "folder_paths", types.SimpleNamespace(get_input_directory=lambda: str(tmp_path)))
    assert sorted(example_pictures.install_example_pictures()) == sorted(shipped)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(shipped)


def test_never_overwrites_a_users_file(example_pictures, tmp_path):
    users = tmp_path / example_pictures.example_picture_name("digit_two")
    users.write_bytes(b"the user's own picture")
    assert "visual_anagrams_digit_two.png" not in example_pictures.install_example_pictures(str(tmp_path))
    assert users.read_bytes() == b"the user's own picture"


@pytest.mark.parametrize("kind", ["symlink-outside", "broken-symlink", "folder"])
def test_skips_a_symlink_or_folder_of_that_name(example_pictures, tmp_path, kind):
    folder = tmp_path / "input"
    folder.mkdir()
    destination = folder / example_pictures.example_picture_name("digit_two")
    outside = tmp_path / "outside.png"
    if kind == "symlink-outside":
        outside.write_bytes(b"outside")
        destination.symlink_to(outside)
    elif kind == "broken-symlink":
        destination.symlink_to(outside)
    else:
        destination.mkdir()
    assert destination.name not in example_pictures.install_example_pictures(str(folder))
    assert destination.is_symlink() == (kind != "folder")
    if kind == "symlink-outside":
        assert outside.read_bytes() == b"outside"
    elif kind == "broken-symlink":
        assert not outside.exists()
    else:
        assert destination.is_dir() and not any(destination.iterdir())


def _assert_warned(caplog, folder: Path, shipped: dict[str, bytes]) -> None:
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(folder) in warnings[0]
    assert all(name in warnings[0] for name in shipped), warnings[0]


def test_a_missing_folder_warns_and_copies_nothing(example_pictures, shipped, tmp_path, caplog):
    folder = tmp_path / "no-such-input"
    assert example_pictures.install_example_pictures(str(folder)) == []
    assert not folder.exists()
    _assert_warned(caplog, folder, shipped)


def test_a_read_only_folder_warns_and_copies_nothing(example_pictures, shipped, tmp_path, caplog, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: refuse the way the OS refuses anyone else

            def refuse(*args, dir, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", dir)

            monkeypatch.setattr(example_pictures.tempfile, "mkstemp", refuse)
        assert example_pictures.install_example_pictures(str(folder)) == []
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
    _assert_warned(caplog, folder, shipped)


def test_a_copy_appears_at_once_by_renaming_a_temporary_file_of_the_same_folder(
    example_pictures, shipped, tmp_path, monkeypatch
):
    renames = []
    real_replace = os.replace

    def spy(source, destination):
        source, destination = Path(source), Path(destination)
        renames.append((source.parent, source.name, destination.exists(), source.read_bytes(), destination.name))
        real_replace(source, destination)

    monkeypatch.setattr(example_pictures.os, "replace", spy)
    example_pictures.install_example_pictures(str(tmp_path))
    assert len(renames) == len(shipped)
    for folder, temporary, existed, data, name in renames:
        # Hidden and not an image: LoadImage never lists the temporary file.
        assert folder == tmp_path and temporary.startswith(".") and temporary.endswith(".tmp")
        assert not existed and data == shipped[name]


def test_a_failed_rename_leaves_no_half_written_file(example_pictures, shipped, tmp_path, caplog, monkeypatch):
    def fail(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device", destination)

    monkeypatch.setattr(example_pictures.os, "replace", fail)
    assert example_pictures.install_example_pictures(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
    _assert_warned(caplog, tmp_path, shipped)


# -- the shipped picture --------------------------------------------------------------------------------------


def test_the_shipped_two_is_a_small_64_px_rgb_png():
    with Image.open(DIGIT_TWO) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB" and picture.size == (64, 64)
        assert not picture.info  # no metadata (time, text), so the bytes are reproducible
    assert DIGIT_TWO.stat().st_size < 10_000


@pytest.mark.slow  # fits the demo's classifier (seconds to a minute on a 2-core CPU)
def test_the_demo_classifier_reads_the_shipped_two_as_2():
    import digits  # demo/digits.py (pyproject's pythonpath)

    with Image.open(DIGIT_TWO) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    model_image = torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1  # back to model space [-1, 1]
    assert digits.classifier().predict(model_image).tolist() == [2]


@pytest.mark.slow  # fits the demo's classifier in a child process
def test_the_script_reproduces_the_committed_picture():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=600, cwd=PACK_DIR
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
