"""The documented default config is the real default, typos are refused, and the resume fingerprint
changes exactly when a stage's results would."""

from __future__ import annotations

import dataclasses
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


def with_changes(section: str, **changes: object) -> CurationConfig:
    config = CurationConfig()
    setattr(config, section, dataclasses.replace(getattr(config, section), **changes))
    return config


def test_fingerprint_changes_with_a_split_parameter() -> None:
    base = CurationConfig()
    changed = with_changes("split", max_duration=8.0)
    assert changed.fingerprint("split") != base.fingerprint("split")
    assert changed.fingerprint("extract") != base.fingerprint("extract")  # later stages build on the split
    assert changed.fingerprint("probe") == base.fingerprint("probe")  # earlier ones do not
    assert with_changes("split", adaptive={"adaptive_threshold": 5}).fingerprint("split") != base.fingerprint("split")


def test_fingerprint_ignores_resources_and_paths() -> None:
    base = CurationConfig()
    more_cpus = with_changes("resources", split_cpus=4.0, extract_cpus=2.0, sources_per_block=8)
    moved = CurationConfig(input="/elsewhere/list.csv", output="/other/mount/corpus")
    for stage in STAGES:
        assert more_cpus.fingerprint(stage) == base.fingerprint(stage)
        assert moved.fingerprint(stage) == base.fingerprint(stage)


def test_fingerprint_is_deterministic_and_short() -> None:
    first, second = CurationConfig().fingerprint("write"), CurationConfig().fingerprint("write")
    assert first == second
    assert len(first) == 16 and int(first, 16) >= 0


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
