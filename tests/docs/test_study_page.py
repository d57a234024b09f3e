"""docs/study.md describes the default arms `featcache study` runs: all of them, in order."""

from __future__ import annotations

import re

from featcache.study.spec import DEFAULT_ARMS
from tests.docs.pages import page

_COUNT = {3: "three", 4: "four", 5: "five", 6: "six"}


def test_the_default_arms_on_the_page_are_the_ones_that_run():
    row = next(line for line in page("study.md").splitlines() if line.startswith("| `arms` |"))
    default = row.split("|")[2]
    assert default.strip().startswith(_COUNT[len(DEFAULT_ARMS)]), default
    names = [arm["name"] for arm in DEFAULT_ARMS]
    positions = [default.find(f"{k} {name}") for k, name in enumerate(names, 1)]
    assert -1 not in positions and positions == sorted(positions), (names, default)
    assert len(re.findall(r"(?:^|; )\d ", default.split(":", 1)[1].strip())) == len(names)
