"""The newcomer's path, as the "Your own data" page tells it: the `folder` layout's tree drawn on
the page is built with small images and masks, and `featcache datasets check` accepts it."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from featcache.cli import app
from tests.docs.pages import fenced_blocks, page, section, tree_paths


def _write(path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.name == "masks":  # 0 background, one foreground value, as the page says
        mask = np.zeros((24, 32), np.uint8)
        mask[4 + k:14 + k, 6:20] = 255
        Image.fromarray(mask).save(path)
    else:
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def test_the_folder_tree_on_the_page_passes_datasets_check(tmp_path):
    text = section(page("data.md"), "`folder`")
    root_name, paths = tree_paths(fenced_blocks(text, "text")[0])
    images = sorted(p for p in paths if p.startswith("images/"))
    assert len(images) >= 3 and len(paths) == 2 * len(images), paths  # the tree pairs every image

    root = tmp_path / root_name
    for path in paths:
        stem = path.rsplit("/", 1)[1].split(".")[0]
        _write(root / path, int(stem[-1]))
    command = f"featcache datasets check --dataset folder --root {root_name}"
    assert command in page("data.md")  # the page shows the command this test runs
    result = CliRunner().invoke(app, ["datasets", "check", "--dataset", "folder", "--root", str(root)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"ok: {len(images)} sample(s) load cleanly" in result.output
