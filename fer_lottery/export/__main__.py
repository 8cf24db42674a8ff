"""``python -m fer_lottery.export RUN_DIR [--out FILE]``: write a physically smaller model."""

from __future__ import annotations

import argparse
import json
import sys

from fer_lottery.core.errors import FerLotteryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer_lottery.export",
        description="Slice the units a distinctiveness-pruned run removed out of its model.",
    )
    parser.add_argument("run_dir", help="a finished run folder (results.json, mask.pt, weights)")
    parser.add_argument("--out", help="output file (default: RUN_DIR/exported.pt)")
    args = parser.parse_args(argv)
    from fer_lottery.export.run import export_run

    try:
        export, path = export_run(args.run_dir, args.out)
    except FerLotteryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = export.summary()
    print(f"{path}: {s['model']}, {s['params_export']:,} of {s['params_dense']:,} parameters")
    for layer in export.layers:
        print(f"  {layer.name}: {layer.width} of {layer.units} units")
    print(
        f"  {s['units_masked']} masked units: {s['units_sliced']} sliced "
        f"({s['units_folded']} of them after adding their constant output to the next layer's "
        f"bias); {s['units_kept_constant']} kept, as their constant output feeds a conv "
        f"(exactness); {s['units_kept_last']} kept so that a layer keeps one unit"
    )
    if export.unsliceable:
        print(
            f"  {s['rows_masked_unsliceable']} masked rows stay in layers whose outputs feed a "
            f"residual sum or are the logits: {', '.join(export.unsliceable)}"
        )
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
