"""The ablation runner (training.ablate, ``videofactory ablate``) on the tiny config with UNTRAINED tiny encoders:
one arm per variant in its own directory, the same data order for every arm, a results table, finished arms
skipped on a rerun, and evaluated (training.evaluate) once a held-out corpus is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo.tiny_training import make_tiny_pretrained
from jobs.cli import main as cli_main
from tests.train_corpus import write_corpus
from training.ablate import STEPS, arm_dir, parse_variants, run_ablation
from training.checkpoint import list_checkpoints
from training.config import config_from_dict, load_config, save_config

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ablate")
    write_corpus(root / "corpus", [9, 9, 9, 9], shards=2, name="abl")
    write_corpus(root / "held_out", [9, 9], shards=1, name="held")
    data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    data["data"].update(corpora=[{"path": str(root / "corpus"), "weight": 1.0}], workers=0)
    data["model"].update(make_tiny_pretrained(root / "pretrained"))
    data.update(output=str(root / "unused"), checkpoint_every=100, log_every=1)
    return config_from_dict(data)


def keys_per_step(arm: Path) -> list[list[list[str]]]:
    return [json.loads(line)["keys"] for line in (arm / STEPS).read_text().splitlines()]


def test_two_arms_same_data_order_table_and_a_rerun_skips_them(base, tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    results = run_ablation(base, "swap,factorized", steps=2, seeds=1, out=out, last=2, evaluator=None)
    rows = {r["variant"]: r for r in results["rows"]}
    assert set(rows) == {"swap", "factorized"} and results["data_order_identical"]
    assert rows["swap"]["parameters"] > rows["factorized"]["parameters"]
    arms = {v: arm_dir(out, v, base.seed) for v in rows}
    for variant, arm in arms.items():
        assert list_checkpoints(arm)[-1].name == "step-00000002", variant
        assert rows[variant]["steps"] == 2 and rows[variant]["final_loss"] > 0
    order = keys_per_step(arms["swap"])
    assert len(order) == 2 and all(order[0]) and order == keys_per_step(arms["factorized"])
    assert rows["swap"]["data_order"] == rows["factorized"]["data_order"]
    table = (out / "results.md").read_text()
    assert "| swap | 0 |" in table and "| factorized | 0 |" in table
    assert "streams serial" in table and results["layout"]["streams"] == "serial"
    assert json.loads((out / "results.json").read_text())["rows"][0]["variant"] == "swap"

    def must_not_train(cfg, last):  # the rerun finds both arms finished
        raise AssertionError(f"{cfg.model.unet.attention} was trained again")

    stamp = {v: list_checkpoints(a)[-1].stat().st_mtime_ns for v, a in arms.items()}
    again = run_ablation(base, ["swap", "factorized"], steps=2, seeds=1, out=out, last=2, evaluator=None,
                         train=must_not_train)
    assert [r["skipped"] for r in again["rows"]] == [True, True]
    assert [r["final_loss"] for r in again["rows"]] == [rows["swap"]["final_loss"], rows["factorized"]["final_loss"]]
    assert stamp == {v: list_checkpoints(a)[-1].stat().st_mtime_ns for v, a in arms.items()}

    config = tmp_path / "base.yaml"
    save_config(base, config)
    assert cli_main(["ablate", "--config", str(config), "--variants", "swap,factorized", "--steps", "2",
                     "--seeds", "1", "--out", str(out), "--last", "2"]) == 0  # the command: all arms skipped
    assert stamp == {v: list_checkpoints(a)[-1].stat().st_mtime_ns for v, a in arms.items()}

    # the same --out with another model layout: the finished arms are not this run's arms
    data = base.to_dict()
    data["model"]["unet"]["streams"] = "parallel"
    with pytest.raises(ValueError, match="trained with another configuration.*another --out"):
        run_ablation(config_from_dict(data), "swap,factorized", steps=2, seeds=1, out=out, last=2, evaluator=None,
                     train=must_not_train)

    # a held-out corpus named later: the finished arms are evaluated (training.evaluate), not retrained
    data = base.to_dict()
    data["eval"].update(corpus=str(Path(base.data.corpora[0].path).parent / "held_out"), clips=2, buckets=2,
                        num_prompts=1, sample_steps=2)
    evaluated = run_ablation(config_from_dict(data), "swap,factorized", steps=2, seeds=1, out=out, last=2,
                             train=must_not_train)
    assert all(r["metrics"]["heldout_loss"] > 0 for r in evaluated["rows"])
    assert "heldout_loss" in (out / "results.md").read_text()
    assert (arms["swap"] / "eval" / "metrics.json").is_file()


def test_variants_are_checked() -> None:
    assert parse_variants("swap, factorized,swap") == ["swap", "factorized"]
    with pytest.raises(ValueError, match="unknown attention variants.*full3d"):
        parse_variants("swap,swapped")
