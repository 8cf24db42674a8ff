"""Iterative distinctiveness pruning reports what every round removed, not just the last."""

from __future__ import annotations

from fer_lottery.pruning.mask import Mask


def test_units_removed_are_cumulative_and_per_round(run_job):
    results, run_dir = run_job(
        "imp",
        "prune.method=distinctiveness",
        "prune.angle=45",
        "prune.iterations=2",
        "prune.retrain_epochs=1",
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
