"""The ground floor: the vocabulary every layer uses, importing no other part of fer_lottery.

Errors (``errors``), seeds and thread counts (``seeding``), every file name a run writes
(``paths``), the expression classes (``classes``), the table of pruning criteria (``criteria``)
and the hardware probe (``devices``).
"""
