"""Mask overlap against chance: a hand count on small masks, and random masks at the chance."""

from __future__ import annotations

import csv

import pytest
import torch

from fer_lottery.pruning.overlap import mask_overlap, overlap, unit_keep


def test_overlap_equals_a_hand_count():
    a = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    o = overlap(a, b)  # kept: A {0,1,2,6}, B {0,2,3}; both {0,2}; union {0,1,2,3,6}
    assert (o.n, o.kept_a, o.kept_b, o.both, o.union) == (8, 4, 3, 2, 5)
    assert o.jaccard == pytest.approx(2 / 5)
    assert o.share_of_a == pytest.approx(2 / 4)
    assert o.chance == pytest.approx(4 * 3 / 8)
    assert o.chance_jaccard == pytest.approx(1.5 / (4 + 3 - 1.5))
    assert o.x_chance == pytest.approx(2 / 1.5)


def test_layers_sum_into_the_total_and_units_compare_unit_by_unit():
    a = {"l1.weight": torch.tensor([[1, 0], [0, 0], [1, 1]], dtype=torch.bool)}
    b = {"l1.weight": torch.tensor([[0, 1], [1, 0], [0, 0]], dtype=torch.bool)}
    a["l2.weight"] = torch.ones(4, dtype=torch.bool)
    b["l2.weight"] = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    a["l2.bias"] = b["l2.bias"] = torch.ones(4, dtype=torch.bool)  # not a weight: left out
    by = mask_overlap(a, b)
    assert set(by) == {"l1", "l2", "total"}
    assert (by["l1"].both, by["l2"].both, by["total"].both) == (0, 2, 2)
    assert by["total"].n == 10 and by["total"].chance == pytest.approx(3 * 2 / 6 + 4 * 2 / 4)
    units = mask_overlap(a, b, units=True)  # units kept: A {0, 2}, B {0, 1}
    assert torch.equal(unit_keep(a["l1.weight"]), torch.tensor([True, False, True]))
    assert (units["l1"].n, units["l1"].both, units["l1"].union) == (3, 1, 3)


def test_random_masks_at_the_same_densities_overlap_at_chance():
    """Over 200 draws, the mean Jaccard lies within 2% of the chance formula."""
    g = torch.Generator().manual_seed(0)
    n, ka, kb = 5000, 1500, 600
    jaccards = []
    for _ in range(200):
        a = torch.zeros(n, dtype=torch.bool)
        b = torch.zeros(n, dtype=torch.bool)
        a[torch.randperm(n, generator=g)[:ka]] = True
        b[torch.randperm(n, generator=g)[:kb]] = True
        o = overlap(a, b)
        jaccards.append(o.jaccard)
    mean = sum(jaccards) / len(jaccards)
    assert mean == pytest.approx(o.chance_jaccard, rel=0.02)
    assert o.chance == ka * kb / n


def test_the_cli_pairs_real_runs_by_seed_and_names_what_it_cannot_pair(run_job, tmp_path, capsys):
    from fer_lottery.analysis.__main__ import main

    for seed in (1, 2):
        run_job(f"a/seed={seed}", "prune.ratio=0.8", "retrain.epochs=0", f"seed={seed}")
    run_job("b/seed=1", "prune.ratio=0.8", "retrain.epochs=0", "prune.method=random")
    out = tmp_path / "overlap"
    assert main(["overlap", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    md = (out / "overlap.md").read_text()
    assert "1 pair(s) of runs, weights." in md and "Not paired" in md and "seed=2" in md
    total = next(ln for ln in md.splitlines() if ln.startswith("| total |"))
    x_chance = float(total.strip("|").split("|")[-1])
    assert 0.8 < x_chance < 1.25  # magnitude against random: about chance
    assert (out / "overlap.png").stat().st_size > 5_000 and (out / "overlap.csv").is_file()
    # A sweep with two runs of one seed must be narrowed to one condition.
    run_job("a/other", "prune.ratio=0.5", "retrain.epochs=0")
    assert main(["overlap", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    narrowed = f"{tmp_path / 'a'}::prune.ratio=0.8"
    assert main(["overlap", narrowed, str(tmp_path / "b"), "--out", str(out)]) == 0
    # Is the ticket stable across seeds? One set against itself, seed 1 with seed 2.
    assert main(["overlap", "--across-seeds", narrowed, "--out", str(out)]) == 0
    md = (out / "overlap.md").read_text()
    assert "Runs paired across seeds" in md and "1 pair(s) of runs, weights." in md
    assert "Not paired" not in md  # both seeds are in the one pair
    assert main(["overlap", narrowed]) == 2  # one set needs --across-seeds
    # Values are read as Hydra reads an override: 0.80 is 0.8, false is False.
    typed = f"{tmp_path / 'a'}::prune.ratio=0.80,stability.enabled=false,retrain.epochs=0"
    assert main(["overlap", typed, str(tmp_path / "b"), "--out", str(out)]) == 0
    # A key that is no setting, or an old spelling, is named with its fix, in one line.
    capsys.readouterr()
    for key, fix in (
        ("prune.rato", "did you mean prune.ratio?"),
        ("prune.rewind", "retrain.rewind"),
    ):
        assert main(["overlap", f"{tmp_path / 'a'}::{key}=0.8", str(tmp_path / "b")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert key in line and fix in line
    # A run without its mask is named with the reason, not dropped in silence.
    (tmp_path / "a" / "seed=2" / "mask.pt").unlink()
    assert main(["overlap", narrowed, str(tmp_path / "b"), "--out", str(out)]) == 0
    md = (out / "overlap.md").read_text()
    assert f"Skipped (nothing to compare): {tmp_path / 'a' / 'seed=2'} (no mask.pt)" in md
    assert "Not paired" not in md


def test_imp_rounds_nest_and_compare_with_one_shot(run_job, tmp_path):
    # IMP keeps nothing an earlier round removed: every weight round 2 keeps, round 1 kept
    # (share 1), and Jaccard is k_2 / k_1. RUN@R takes round R's mask (mask_round<R>.pt).
    from fer_lottery.analysis.__main__ import main
    from fer_lottery.pruning.mask import Mask

    imp = ("prune.ratio=0.8", "retrain.epochs=1", "prune.iterations=3")
    results, run = run_job("imp/seed=1", *imp)
    assert sorted(p.name for p in run.glob("mask_round*.pt")) == [
        "mask_round1.pt",
        "mask_round2.pt",
    ]
    run_job("oneshot/seed=1", "prune.ratio=0.8", "retrain.epochs=1")
    out = tmp_path / "overlap"
    imp_dir = str(tmp_path / "imp")
    sets = [f"{imp_dir}@2", f"{imp_dir}@1", imp_dir, str(tmp_path / "oneshot")]
    assert main(["overlap", *sets, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "overlap.csv").open()))
    total = {r["pair"]: r for r in rows if r["layer"] == "total"}
    masks = [Mask.load(p).tensors for p in (run / "mask_round1.pt", run / "mask_round2.pt")]
    masks.append(Mask.load(run / "mask.pt").tensors)  # the last round's
    kept = [sum(int(m[n].sum()) for n in m if n.endswith(".weight")) for m in masks]
    assert kept[0] > kept[1] > kept[2]
    nested = total["imp round 2 vs imp round 1"]
    assert float(nested["share_of_a"]) == 1.0
    assert float(nested["jaccard"]) == pytest.approx(kept[1] / kept[0], abs=1e-6)
    last = total["imp round 2 vs imp"]  # the final mask lies inside round 2's
    assert float(last["jaccard"]) == pytest.approx(kept[2] / kept[1], abs=1e-6)
    assert "imp vs oneshot" in total  # IMP's final mask against one shot at the same ratio
    assert main(["overlap", f"{imp_dir}@4", imp_dir]) == 2  # a round the job did not run


def test_totals_cover_only_the_layers_the_criterion_could_prune_each_once(run_job, tmp_path):
    # Unit masks hold every conv and linear weight and each pruned unit's BatchNorm entries; a
    # total over all of them counted never-pruned layers (at chance by construction) and each
    # pruned layer twice (conv1 and bn1). Only the unit layers the job names are compared.
    from fer_lottery.analysis.__main__ import main

    unit = ("prune.granularity=unit", "prune.ratio=0.75", "prune.iterations=2", "retrain.epochs=0")
    results, run = run_job("iu/seed=1", *unit)
    out = tmp_path / "overlap"
    iu = str(tmp_path / "iu")
    assert main(["overlap", iu, f"{iu}@1", "--out", str(out)]) == 0
    rows = {r["layer"]: r for r in csv.DictReader((out / "overlap.csv").open())}
    prefix = "prune/units_removed/"
    layers = {k.removeprefix(prefix) for k in results if k.startswith(prefix)}
    assert set(rows) == layers | {"total"} and not any(".bn" in name for name in rows)
    x = [float(rows[name]["x_chance"]) for name in layers if rows[name]["x_chance"] != "nan"]
    assert min(x) - 1e-9 <= float(rows["total"]["x_chance"]) <= max(x) + 1e-9
    # Weights: the prunable layers of prune.include, not the layers it leaves out.
    for name in ("a", "b"):
        run_job(f"{name}/seed=1", "prune.ratio=0.5", "retrain.epochs=0", "prune.include=[layer4*]")
    assert main(["overlap", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    rows = {r["layer"] for r in csv.DictReader((out / "overlap.csv").open())}
    assert rows - {"total"} and all(r.startswith("layer4") for r in rows - {"total"})
