"""The report of runs and sweeps: ``python -m fer_lottery.report DIR...`` (see ``cli``).

Modules, in the order data flows through them:

- ``collect``: finished jobs under the folders, and jobs without results;
- ``conditions``: jobs grouped into conditions, repeats summarised;
- ``stats``: mean, std, n and the 95% confidence interval;
- ``papers``: the presets' published numbers, and ours grouped to match them;
- ``curves``: per-epoch validation curves from the jobs' CSV logs;
- ``tables``: the markdown tables and ``report.csv``;
- ``contrasts`` (on ``paired``): conditions compared seed by seed, and ``paired.csv``;
- ``studies`` (with ``overlaps``): the study presets' sections and their mask overlap;
- ``stability``: the linear mode connectivity of ``stability.enabled`` jobs;
- ``figures`` and ``per_class``: which data each plot shows; ``plotting.charts`` draws it;
- ``build``: report.md from all of these; ``cli``: the command line.
"""

from fer_lottery.report.build import build
from fer_lottery.report.cli import main

__all__ = ["build", "main"]
