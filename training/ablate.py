"""The paper's ablation: one training run per attention variant and seed, then a results table.

``run_ablation`` trains every arm (variant x seed) in its own directory ``OUT/<variant>/seed<k>`` with the same
config except ``model.unet.attention`` and ``seed``, sequentially in this process, and writes
``OUT/results.json`` and ``OUT/results.md``.

Fair arms:

* every variant starts from the same weights for the layers they share (``training.model.unet`` builds the
  variant-specific layers from RNG streams of their own), and from the same ``model.init_from`` if set;
* the data order is a function of the seed and the data config only (``training.data``), so the arms of one
  seed see the same samples in the same order. Each arm records the sample keys of every step
  (``steps.jsonl``), and the table says, per seed, whether the arms' orders are identical
  (``data_order_identical``; ``run_ablation`` raises if they are not).

Resumable: an arm that finished (its ``result.json`` says it reached ``steps``) is skipped; an interrupted arm
resumes from its latest checkpoint like any training run.

Metrics per arm: final training loss (mean of the last ``last`` steps), parameter count, seconds per step (the
mean over the steps after the first, which includes warm-up), and, when ``eval.corpus`` names a held-out corpus,
the metrics of ``training.evaluate`` on the arm's final checkpoint (``evaluate_arm``: held-out loss, frame
difference, and CLIPSIM / FVD where their weights are configured).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.config import TrainConfig, config_from_dict
from training.model.config import ATTENTION_VARIANTS

log = logging.getLogger("videofactory.ablate")

RESULT = "result.json"
STEPS = "steps.jsonl"

#: (arm directory, the arm's config) -> metrics to add to its row ({} for none).
Evaluator = Callable[[Path, TrainConfig], dict[str, float]]


#: What an arm's training depends on: a finished arm trained with other values of these is not this arm.
ARM_FIELDS = ("data", "model", "diffusion", "optim", "seed", "bf16")


def arm_digest(cfg: TrainConfig) -> str:
    """A digest of the arm's config (``ARM_FIELDS``): a rerun into the same ``--out`` with another model, data,
    schedule or optimiser (``--set model.unet.streams=parallel``, say) must not take the old arms as finished."""
    data = cfg.to_dict()
    return hashlib.sha256(json.dumps({k: data[k] for k in ARM_FIELDS}, sort_keys=True).encode()).hexdigest()[:16]


def arm_dir(out: str | Path, variant: str, seed: int) -> Path:
    return Path(out) / variant / f"seed{seed}"


def arm_config(base: TrainConfig, variant: str, seed: int, steps: int, out: str | Path) -> TrainConfig:
    """``base`` with the arm's attention variant, seed, steps and output directory; nothing else changes."""
    data = base.to_dict()
    data["model"]["unet"]["attention"] = variant
    data["seed"], data["steps"], data["output"] = seed, steps, str(arm_dir(out, variant, seed).resolve())
    return config_from_dict(data)


def parse_variants(text: str | Sequence[str]) -> list[str]:
    """``"swap,factorized"`` (or a list) -> checked variant names, in order, without repeats."""
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    unknown = [v for v in names if v not in ATTENTION_VARIANTS]
    if unknown or not names:
        raise ValueError(f"unknown attention variants {unknown}: choose from {', '.join(ATTENTION_VARIANTS)}")
    return list(dict.fromkeys(names))


def _read_steps(path: Path, upto: int) -> list[dict[str, Any]]:
    """The per-step records of an arm up to step ``upto`` (later ones were lost with an interrupted run)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in records if r["step"] <= upto}
    return [by_step[s] for s in sorted(by_step)]


def train_arm(cfg: TrainConfig, last: int = 10) -> dict[str, Any]:
    """Train one arm in this process (resuming from its checkpoints) and return its result row."""
    from training.distributed import setup_distributed
    from training.trainer import Trainer

    class RecordingTrainer(Trainer):
        """The ordinary trainer, plus a record of each step: loss, seconds and the sample keys it trained on."""

        def _micro_step(self, last: bool) -> tuple[float, float, int]:
            loader = self.loader
            keys = self._keys

            class Recorder:
                def __next__(self) -> dict[str, Any]:
                    batch = next(loader)
                    keys.append(list(batch["key"]))
                    return batch

            self.loader = Recorder()  # type: ignore[assignment]
            try:
                return super()._micro_step(last)
            finally:
                self.loader = loader

        def train_step(self) -> dict[str, float]:
            self._keys: list[list[str]] = []
            result = super().train_step()
            if self.env.main:
                record = {"step": self.step, "loss": result["loss"], "seconds": result["seconds"], "keys": self._keys}
                with open(Path(self.cfg.output) / STEPS, "a") as f:
                    f.write(json.dumps(record) + "\n")
            return result

    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    env = setup_distributed()
    trainer = RecordingTrainer(cfg, env)
    kept = _read_steps(output / STEPS, trainer.step)  # drop records of steps an interruption lost
    (output / STEPS).write_text("".join(json.dumps(r) + "\n" for r in kept))
    trainer.train()
    records = _read_steps(output / STEPS, cfg.steps)
    losses = [r["loss"] for r in records]
    seconds = [r["seconds"] for r in records[1:]] or [r["seconds"] for r in records]
    order = hashlib.sha256(json.dumps([r["keys"] for r in records]).encode()).hexdigest()
    return {
        "variant": cfg.model.unet.attention, "seed": cfg.seed, "steps": trainer.step,
        "final_loss": statistics.fmean(losses[-last:]) if losses else float("nan"),
        "last_steps": min(last, len(losses)),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "seconds_per_step": statistics.fmean(seconds) if seconds else float("nan"),
        "data_order": order, "output": str(output),
    }


def evaluate_arm(arm: Path, cfg: TrainConfig) -> dict[str, float]:
    """Evaluation metrics of a finished arm (``training.evaluate.evaluate_checkpoint`` of its latest checkpoint on
    the held-out corpus ``eval.corpus``, written to ``ARM/eval/``): its numeric metrics (held-out loss, frame
    difference, CLIPSIM and FVD when their weights are configured).

    Returns {} (the table then has the training metrics only) when ``eval.corpus`` is not set or the evaluation
    module is not there. This is the one place to change to measure the arms differently.
    """
    if importlib.util.find_spec("training.evaluate") is None:
        return {}
    corpus = getattr(getattr(cfg, "eval", None), "corpus", "")
    if not corpus:
        log.info("no eval.corpus: %s is not evaluated (set --set eval.corpus=HELD_OUT_CORPUS)", arm)
        return {}
    from training.evaluate import evaluate_checkpoint

    results = evaluate_checkpoint(arm, corpus, arm / "eval")
    return {name: float(value) for name, value in results["metrics"].items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def run_ablation(base: TrainConfig, variants: Sequence[str], steps: int, seeds: int, out: str | Path,
                 last: int = 10, evaluator: Evaluator | None = evaluate_arm,
                 train: Callable[[TrainConfig, int], dict[str, Any]] = train_arm) -> dict[str, Any]:
    """Train every arm that has not finished, then write ``OUT/results.json`` and ``OUT/results.md``.

    Seeds are ``base.seed + k`` for k < ``seeds``. Returns the results (also written as JSON).
    """
    variants = parse_variants(variants)
    if steps < 1 or seeds < 1:
        raise ValueError(f"steps and seeds must be at least 1, got steps={steps}, seeds={seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(seeds):
        seed = base.seed + k
        for variant in variants:
            cfg = arm_config(base, variant, seed, steps, out)
            path = Path(cfg.output)
            done = path / RESULT
            row = json.loads(done.read_text()) if done.exists() else None
            digest = arm_digest(cfg)
            if row is not None and row.get("config_digest", digest) != digest:
                raise ValueError(f"{path} was trained with another configuration (model, data, diffusion or optim "
                                 "settings differ from this run's): give this ablation another --out, or delete "
                                 "that directory to train the arm again")
            if row is not None and row.get("steps") == steps:
                log.info("%s seed %d finished earlier: skipped", variant, seed)
                if evaluator is not None and not row.get("metrics"):  # e.g. eval.corpus set since
                    row["metrics"] = evaluator(path, cfg)
                    done.write_text(json.dumps(row, indent=2))
                row["skipped"] = True
            else:
                log.info("training %s seed %d for %d steps in %s", variant, seed, steps, path)
                row = {**train(cfg, last), "config_digest": digest}
                if evaluator is not None:
                    row["metrics"] = evaluator(path, cfg)
                done.write_text(json.dumps(row, indent=2))
                row["skipped"] = False
            rows.append(row)
    orders = {}
    for seed in sorted({r["seed"] for r in rows}):
        orders[seed] = len({r["data_order"] for r in rows if r["seed"] == seed}) == 1
    unet = base.model.unet
    layout = {"init_from": base.model.init_from or None, "streams": unet.streams, "window": list(unet.window),
              "swap_every": unet.swap_every}
    results = {"variants": variants, "steps": steps, "seeds": [base.seed + k for k in range(seeds)], "last": last,
               "layout": layout,
               "data_order_identical": all(orders.values()), "rows": rows,
               "evaluation": "training.evaluate" if any(r.get("metrics") for r in rows) else None}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    if not results["data_order_identical"]:
        raise RuntimeError(f"the arms of one seed did not see the same data order ({orders}): see {out}/*/seed*/"
                           f"{STEPS}; the comparison is not fair")
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table, one row per arm, then per-variant means over seeds when there are several."""
    metric_names = sorted({name for r in results["rows"] for name in (r.get("metrics") or {})})
    head = ["variant", "seed", "params", f"final loss (last {results['last']})", "s/step", *metric_names]
    layout = results["layout"]
    lines = [f"# Ablation: {', '.join(results['variants'])}, {results['steps']} steps", "",
             f"Every arm: init from {layout['init_from'] or 'random weights'}, streams {layout['streams']}, "
             f"windows {tuple(layout['window'])}, query role alternating per {layout['swap_every']} (swap).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        metrics = r.get("metrics") or {}
        cells = [r["variant"], str(r["seed"]), f"{r['parameters'] / 1e6:.3f} M", f"{r['final_loss']:.4f}",
                 f"{r['seconds_per_step']:.3f}", *(f"{metrics[m]:.4g}" if m in metrics else "" for m in metric_names)]
        lines.append("| " + " | ".join(cells) + " |")
    if len(results["seeds"]) > 1:
        lines += ["", "| variant | mean final loss | std |", "|---|---|---|"]
        for variant in results["variants"]:
            losses = [r["final_loss"] for r in results["rows"] if r["variant"] == variant]
            lines.append(f"| {variant} | {statistics.fmean(losses):.4f} | {statistics.pstdev(losses):.4f} |")
    lines += ["", f"Same data order for every arm of a seed: {'yes' if results['data_order_identical'] else 'NO'}."]
    if not metric_names:
        lines.append("No evaluation metrics (set eval.corpus to a held-out corpus to evaluate every arm).")
    return "\n".join(lines) + "\n"
