"""`featcache init` writes a valid, commented manifest; every example manifest loads and its dataset
builds against a synthetic copy of the published layout."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.registry import build_dataset
from featcache.manifest import load_manifest, manifest_from_dict
from featcache.starter import match_stage, student_stages
from featcache.teachers.registry import describe_teachers
from tests.data import synth_layouts as layouts

runner = CliRunner()
MANIFESTS = Path(__file__).parents[2] / "manifests"
EXAMPLES = {"busi": layouts.make_busi, "kvasir-seg": layouts.make_kvasir, "cvc-clinicdb": layouts.make_cvc,
            "drive": layouts.make_drive, "msd": layouts.make_msd}


def _check(manifest, root: Path) -> None:
    spec = manifest.datasets[0]
    data = build_dataset(spec.name, root, **spec.options)
    assert data.split_indices(spec.train_split)
    stages = student_stages(manifest.student)
    levels = {t.name: {lv.name for lv in t.default_levels} | set(t.other_levels) for t in describe_teachers()}
    for teacher in manifest.teachers:
        for level, stage in teacher.taps():
            assert level in levels[teacher.name] and stage in stages


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_manifest_is_valid_for_the_published_layout(name, tmp_path):
    root = EXAMPLES[name](tmp_path)
    manifest = load_manifest(MANIFESTS / f"{name}.yaml", [f"datasets.0.root={root}"])
    assert manifest.datasets[0].name == name
    _check(manifest, root)


def test_init_prints_a_commented_valid_manifest_with_a_checkpoint(tmp_path):
    root = layouts.make_busi(tmp_path)
    result = runner.invoke(app, ["init", "--dataset", "busi", "--root", str(root), "--teacher", "litemedsam",
                                 "--teacher", "sam", "--checkpoint", "/w/sam_vit_b.pth",
                                 "--image-size", "128"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("# Written by `featcache init") and "featcache extract --manifest" in text
    manifest = manifest_from_dict(yaml.safe_load(text), "init output")
    assert [t.name for t in manifest.teachers] == ["litemedsam", "sam"]
    assert manifest.teachers[1].checkpoint == "/w/sam_vit_b.pth" and manifest.teachers[0].checkpoint is None
    # LiteMedSAM gets the demo's three taps; SAM its neck at the closest grid (64x64 vs 32x32 dec3).
    assert manifest.teachers[0].levels == {"stage2": "enc3", "embedding": ["enc4", "dec3"]}
    assert manifest.teachers[1].levels == {"neck": "dec3"}
    assert manifest.datasets[0].options["seed"] == 0 and manifest.student.image_size == 128
    _check(manifest, root)


def test_levels_meet_the_closest_student_grid():
    stages = {"enc1": (16, 2), "enc5": (320, 32), "dec1": (464, 16), "dec3": (116, 4), "dec4": (58, 2)}
    assert match_stage((64, 64), 256, stages) == "dec3"  # 64x64 exactly
    assert match_stage((64, 64), 128, stages) == "dec3"  # stride-2 stages are too thin to project
    assert match_stage((14, 14), 224, stages) == "dec1"  # CLIP ViT-B/16: 14 vs 14


def test_init_errors_are_one_line(tmp_path):
    unknown = runner.invoke(app, ["init", "--dataset", "demo", "--teacher", "nope"])
    assert unknown.exit_code == 1 and "unknown teacher 'nope'" in unknown.output
    timm = runner.invoke(app, ["init", "--dataset", "demo", "--teacher", "timm"])
    assert timm.exit_code == 1 and "levels depend on --arch" in timm.output
    missing = runner.invoke(app, ["init", "--dataset", "busi", "--root", str(tmp_path / "no"),
                                  "--teacher", "litemedsam"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_init_writes_a_starter_for_a_classification_dataset(tmp_path):
    root = layouts.make_aptos(tmp_path)
    result = runner.invoke(app, ["init", "--dataset", "aptos2019", "--root", str(root),
                                 "--teacher", "litemedsam", "--image-size", "128"])
    assert result.exit_code == 0, result.output
    manifest = manifest_from_dict(yaml.safe_load(result.output), "init output")
    assert manifest.teachers[0].levels["global"] == "enc5"  # the image vector, for the classifier
    assert "(classification)" in result.output and "5-class classifier" in result.output


def test_the_manifest_init_wrote_works_from_any_folder(tmp_path, monkeypatch):
    """init writes the root it was given as an absolute path; a root written relative is read
    relative to the manifest's folder, not the working directory."""
    monkeypatch.chdir(tmp_path)
    layouts.make_busi(tmp_path / "data")
    result = runner.invoke(app, ["init", "--dataset", "busi", "--root", "data", "--teacher", "litemedsam"])
    assert result.exit_code == 0, result.output
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "m.yaml").write_text(result.output)
    monkeypatch.chdir(tmp_path / "project")
    assert load_manifest("m.yaml").datasets[0].root == str(tmp_path / "data")
    text = result.output.replace(f"root: {tmp_path / 'data'}", "root: ../data")
    assert "root: ../data" in text
    (tmp_path / "project" / "rel.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)  # elsewhere: ../data is still next to the manifest's folder
    root = load_manifest(tmp_path / "project" / "rel.yaml").datasets[0].root
    assert Path(root).resolve() == (tmp_path / "data").resolve()
    _check(load_manifest(tmp_path / "project" / "rel.yaml"), Path(root))
