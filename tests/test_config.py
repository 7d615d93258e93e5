"""The documented default config is the real default, typos are refused, and the resume fingerprint
changes exactly when a stage's results would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.config import STAGES, CurationConfig, config_from_dict, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YAML = REPO_ROOT / "configs" / "default.yaml"


def test_default_yaml_is_exactly_the_dataclass_defaults() -> None:
    assert load_config(DEFAULT_YAML).to_dict() == CurationConfig().to_dict()


def test_default_yaml_documents_every_option() -> None:
    written = yaml.safe_load(DEFAULT_YAML.read_text())
    defaults = CurationConfig().to_dict()
    assert set(written) == set(defaults)
    for name, value in defaults.items():
        if isinstance(value, dict):
            assert set(written[name]) == set(value), name


def test_no_config_file_means_defaults() -> None:
    assert load_config().to_dict() == CurationConfig().to_dict()


def test_overrides_replace_top_level_keys_and_none_is_ignored() -> None:
    config = load_config(DEFAULT_YAML, input="/in/list.csv", output=None)
    assert config.input == "/in/list.csv"
    assert config.output == ""


def test_nested_sections_are_built_as_dataclasses(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("split:\n  detector: content\n  content: {threshold: 30}\nextract:\n  short_side: 720\n")
    config = load_config(path)
    assert config.split.detector == "content" and config.split.content == {"threshold": 30}
    assert config.split.min_duration == 2.0  # untouched fields keep their defaults
    assert config.extract.short_side == 720 and config.extract.mode == "reencode"


def test_unknown_top_level_key_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("inptu: /data/list.csv\n")
    with pytest.raises(ValueError, match="inptu") as caught:
        load_config(path)
    assert "top level" in str(caught.value)
    assert all(name in str(caught.value) for name in ("input", "output", "split", "filter"))


def test_unknown_key_deep_in_a_filter_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("filter:\n  quality:\n    min_short_sid: 1080\n")
    with pytest.raises(ValueError, match="min_short_sid") as caught:
        load_config(path)
    assert "filter.quality" in str(caught.value) and "min_short_side" in str(caught.value)


def test_unknown_nested_key_is_refused_by_name_and_section(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("split:\n  max_duraton: 5\n")
    with pytest.raises(ValueError, match="max_duraton") as caught:
        load_config(path)
    message = str(caught.value)
    assert "split" in message
    assert "max_duration" in message  # the known keys are listed, so the typo is easy to spot


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)


def test_to_dict_round_trips() -> None:
    config = load_config(DEFAULT_YAML, input="/in", output="/out")
    config.split.adaptive = {"adaptive_threshold": 5}
    assert config_from_dict(config.to_dict()) == config


def with_changes(**changes: object) -> CurationConfig:
    """The defaults with ``section__field=value`` (or ``section__group__field=value``) changed."""
    config = CurationConfig()
    for dotted, value in changes.items():
        *path, name = dotted.split("__")
        owner = config
        for part in path:
            owner = getattr(owner, part)
        assert hasattr(owner, name), dotted
        setattr(owner, name, value)
    return config


def fingerprints(config: CurationConfig) -> dict[str, str]:
    return {stage: config.fingerprint(stage) for stage in STAGES}


@pytest.mark.parametrize(("stage", "change"), [
    ("probe", {"probe__max_dimension": 4096}),
    ("split", {"split__max_duration": 8.0}),
    ("split", {"split__adaptive": {"adaptive_threshold": 5}}),
    ("extract", {"extract__crf": 28}),
    ("extract", {"extract__short_side": 720}),
    ("filter", {"filter__frames": 16}),
    ("filter", {"filter__score_only": True}),
    ("filter", {"filter__quality__min_short_side": 1080}),
    ("filter", {"filter__motion__min_motion": 0.01}),
    ("filter", {"filter__text__max_area": 0.01}),
    ("caption", {"caption__prompt": "a video of"}),
    ("caption", {"caption__num_beams": 3}),
    ("write", {"write__target_shard_bytes": 1024**2}),
])
def test_fingerprint_changes_from_the_changed_stage_on(stage: str, change: dict[str, object]) -> None:
    base, changed = fingerprints(CurationConfig()), fingerprints(with_changes(**change))
    at = STAGES.index(stage)
    assert [changed[s] == base[s] for s in STAGES] == [True] * at + [False] * (len(STAGES) - at), change


@pytest.mark.parametrize("change", [
    {"filter__threads": 8}, {"filter__actors": 4}, {"filter__num_gpus": 0.5},
    {"caption__batch_size": 64}, {"caption__actors": 3}, {"caption__num_gpus": 1.0},
    {"write__keep_clips": True}, {"write__write_cpus": 2.0}, {"write__sources_per_partition": 16},
    {"resources__split_cpus": 4.0, "resources__filter_cpus": 2.0, "resources__sources_per_block": 8},
    {"input": "/elsewhere/list.csv", "output": "/other/mount/corpus"},
])
def test_fingerprint_ignores_resources_and_paths(change: dict[str, object]) -> None:
    assert fingerprints(with_changes(**change)) == fingerprints(CurationConfig())


def test_fingerprint_is_the_same_after_a_round_trip_and_in_another_process() -> None:
    config = with_changes(split__max_duration=8.0, filter__quality__min_short_side=1080)
    first = fingerprints(config)
    assert all(re.fullmatch(r"[0-9a-f]{16}", f) for f in first.values())
    assert len(set(first.values())) == len(STAGES), "each stage's fingerprint is its own"
    assert fingerprints(config_from_dict(json.loads(json.dumps(config.to_dict())))) == first
    code = ("import json, sys; from curation.config import STAGES, config_from_dict; "
            "c = config_from_dict(json.loads(sys.argv[1])); print(json.dumps({s: c.fingerprint(s) for s in STAGES}))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(config.to_dict())], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(other.stdout) == first, "no per-process hash seed"


def test_validate_explains_what_to_fix() -> None:
    with pytest.raises(ValueError, match="no input"):
        CurationConfig(output="/out").validate()
    with pytest.raises(ValueError, match="no output"):
        CurationConfig(input="/in").validate()
    bad = CurationConfig(input="/in", output="/out")
    bad.split.detector = "histogram"
    with pytest.raises(ValueError, match="detector"):
        bad.validate()
    bad = CurationConfig(input="/in", output="/out")
    bad.split.min_duration, bad.split.max_duration = 5.0, 3.0
    with pytest.raises(ValueError, match="min_duration"):
        bad.validate()
    CurationConfig(input="/in", output="/out").validate()
