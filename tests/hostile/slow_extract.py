"""`featcache extract` in a subprocess, with the tests' tiny teacher (registered as `tiny`, each
forward slowed by SECONDS) over the blob dataset (registered as `blobs`), so that another process
can act while it runs: python slow_extract.py SECONDS ARGS... (the CLI's own arguments)."""

import sys
import time

from featcache.cli import app
from featcache.data.registry import DATASETS
from featcache.registry import Entry
from featcache.teachers.registry import TEACHERS, TeacherEntry
from tests.conftest import BlobDataset, TinyTeacher

delay = float(sys.argv[1])


class SlowTeacher(TinyTeacher):
    def _forward_levels(self, x, names):
        time.sleep(delay)
        return super()._forward_levels(x, names)


TEACHERS["tiny"] = TeacherEntry(lambda checkpoint=None, arch=None, **o: SlowTeacher(**o),
                                TEACHERS["timm"].describe)
DATASETS["blobs"] = Entry(lambda root, **o: BlobDataset(**o), "test blobs")
app(sys.argv[2:], prog_name="featcache")
