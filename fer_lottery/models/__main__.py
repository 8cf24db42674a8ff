"""``python -m fer_lottery.models NAME [--num-classes 7]``: what fer_lottery finds on a backbone.

It prints the head that a new one replaces, the smallest image size, the ImageNet weights'
preprocessing, the layer groups (and what ``model.frozen_layers=k`` freezes), the prunable
layers with their sizes, and the unit groups (``prune.granularity=unit``, distinctiveness and
the export). The model is built from random init: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys

from fer_lottery.core.errors import FerLotteryError


def describe_lines(name: str, num_classes: int = 7) -> list[str]:
    """The printout, as lines (tests read it)."""
    from fer_lottery.models.backbone import describe
    from fer_lottery.models.build import build_model, prunable_weights
    from fer_lottery.models.units import prunable_units
    from fer_lottery.models.weights import IMAGENET, preprocessing

    d = describe(name, num_classes)
    model = build_model(name, None, num_classes)
    try:
        mean, std, source = preprocessing(d.spec, IMAGENET)
        weights = f"{source}: mean {list(mean)}, std {list(std)}"
    except FerLotteryError as exc:
        weights = f"none known ({exc})"
    lines = [
        f"{name}: {d.spec.library} {d.spec.arch}, {d.params:,} parameters with a "
        f"{num_classes}-way head ({d.head})",
        f"smallest data.image_size: {d.min_image_size}",
        f"model.weights=imagenet normalisation (data.normalize=auto): {weights}",
        "",
        f"layer groups ({len(d.groups)}; model.frozen_layers=k freezes the first k, "
        f"0..{len(d.groups) - 1}):",
    ]
    for i, ((label, paths), bn) in enumerate(zip(d.groups, d.batchnorm, strict=True)):
        n = sum(p.numel() for path in paths for p in model.get_submodule(path).parameters())
        what = (
            "the new head: always trains"
            if i == len(d.groups) - 1
            else f"frozen_layers>={i + 1} freezes: {', '.join(paths[:4])}"
            + (f" (+{len(paths) - 4})" if len(paths) > 4 else "")
        )
        lines.append(
            f"  {i + 1:3d}  {label:<28s} {n:>11,} params{'  BatchNorm' if bn else ''}   {what}"
        )
    state = model.state_dict()
    names = prunable_weights(model)
    lines += ["", f"prunable weights ({len(names)} conv and linear layers, prune.include globs):"]
    lines += [f"  {n:<40s} {tuple(state[n].shape)}  {state[n].numel():,}" for n in names]
    units = prunable_units(model, name)
    lines += ["", f"unit layers ({len(units)}; prune.granularity=unit, distinctiveness, export):"]
    for u in units:
        width = state[f"{u.name}.weight"].shape[0]
        chain = " -> ".join(u.owners[1:]) or "-"
        lines.append(
            f"  {u.name:<32s} {width:5d} units  with {chain}  into {u.next}"
            + (f" (x{u.span} columns)" if u.span > 1 else "")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lottery.models", description=__doc__)
    parser.add_argument("name", help="a torchvision builder (mobilenet_v2) or timm/<name>")
    parser.add_argument("--num-classes", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        print("\n".join(describe_lines(args.name, args.num_classes)))
    except FerLotteryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
