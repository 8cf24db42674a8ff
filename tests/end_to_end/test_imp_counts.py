"""Iterative distinctiveness pruning reports what every round removed, not just the last."""

from __future__ import annotations

from fer_lottery.pruning.mask import Mask


def test_units_removed_are_cumulative_and_per_round(run_job):
    results, run_dir = run_job(
        "imp",
        "prune.method=distinctiveness",
        "prune.distinctiveness.angle=45",
        "prune.iterations=2",
        "retrain.epochs=1",
        "trainer.max_epochs=1",
    )
    rounds = [results[f"round{r}/prune/units_removed"] for r in (1, 2)]
    assert rounds[0] > 0
    assert results["prune/units_removed"] == sum(rounds)
    # The cumulative count is what the final mask removes: conv1 channels fully masked.
    mask = Mask.load(run_dir / "mask.pt")
    dead = sum(
        int((~keep.flatten(1).any(1)).sum())
        for name, keep in mask.tensors.items()
        if name.endswith(".conv1.weight") and name.startswith("layer")
    )
    assert dead == results["prune/units_removed"]
    per_layer = {k: v for k, v in results.items() if k.startswith("prune/units_removed/")}
    assert sum(per_layer.values()) == results["prune/units_removed"]
    total = results["prune/units_total"]
    assert results["prune/units_removed_frac"] == results["prune/units_removed"] / total


def test_a_unit_removed_again_in_a_later_round_counts_once(run_job):
    """paper_b compares dead units like any other, so round 2 removes round 1's units again."""
    results, run_dir = run_job(
        "paper_b",
        "model=alexnet",
        "data.image_size=64",
        "prune.method=distinctiveness",
        "prune.distinctiveness.variant=paper_b",
        "prune.distinctiveness.layers=[classifier.4]",
        "prune.distinctiveness.angle=10",
        "prune.iterations=2",
        "retrain.epochs=1",
        "trainer.max_epochs=1",
    )
    rounds = [results[f"round{r}/prune/units_removed"] for r in (1, 2)]
    keep = Mask.load(run_dir / "mask.pt").tensors["classifier.4.weight"]
    dead_rows = int((~keep.any(1)).sum())
    removed, total = results["prune/units_removed"], results["prune/units_total"]
    # Counted once: the units whose rows the mask zeroes, plus the ones paper_b made live again.
    assert dead_rows <= removed <= dead_rows + results.get("prune/units_revived", 0)
    assert removed < sum(rounds)  # the rule did remove some units twice
    assert removed <= total and 0 < results["prune/units_removed_frac"] <= 1
