"""Gradient magnitude pruning: |w * dL/dw| over the whole training split, exact selection."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from fer_lottery.core import criteria
from fer_lottery.pruning.gradient import gradient_scores
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.strategy import Request


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),  # eval mode: no dropout, or the scores would be random
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    model[1].running_mean.uniform_(-0.5, 0.5)  # eval mode uses these, not batch statistics
    model[1].running_var.uniform_(0.5, 2.0)
    return model.train()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, 6, 6, generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    return x, y


def _examples(x, y, size):
    def examples(device):
        for i in range(0, len(x), size):
            yield x[i : i + size].to(device), y[i : i + size].to(device)

    return examples


NAMES = ["0.weight", "6.weight"]


def _by_hand(model, x, y):
    """One autograd pass over all ten images at once, in eval mode."""
    model = model.eval()
    params = dict(model.named_parameters())
    loss = nn.functional.cross_entropy(model(x), y)  # mean over the whole split
    grads = torch.autograd.grad(loss, [params[n] for n in NAMES])
    return {n: (params[n] * g).abs().detach() for n, g in zip(NAMES, grads, strict=True)}


def test_gradient_scores_equal_one_autograd_pass_over_the_whole_split():
    model, (x, y) = _tiny_model(), _data()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model[0].bias.requires_grad_(False)  # a frozen parameter stays frozen
    scores = gradient_scores(model, NAMES, _examples(x, y, 3), torch.device("cpu"))  # 4 batches
    assert model.training and not model[0].bias.requires_grad  # modes and flags put back
    assert all(p.grad is None for p in model.parameters())  # no .grad left behind
    flags["0.bias"] = False
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    expected = _by_hand(_tiny_model(), x, y)
    for n in NAMES:
        assert scores[n].shape == expected[n].shape
        torch.testing.assert_close(scores[n], expected[n], atol=1e-6, rtol=0)
        assert float(scores[n].max()) > 1e-4  # not trivially zero


def _request(model, x, y, ratio, scope, previous=None):
    options = OmegaConf.create({"scope": scope})
    return Request(
        model=model,
        names=NAMES,
        ratio=ratio,
        previous=previous,
        options=options,
        arch="tiny",
        seed=0,
        batches=lambda d: (b for b, _ in _examples(x, y, 4)(d)),
        examples=_examples(x, y, 4),
        device=torch.device("cpu"),
    )


def test_global_and_layer_scope_prune_exactly_the_lowest_scores():
    model, (x, y) = _tiny_model(), _data()
    expected = _by_hand(_tiny_model(), x, y)
    strategy = criteria.get("gradient")
    # Global: the k lowest scores over both layers together, exactly k of them.
    mask = strategy.prune(_request(model, x, y, 0.6, "global")).mask
    flat = torch.cat([expected[n].flatten() for n in NAMES])
    k = round(0.6 * flat.numel())
    pruned = torch.cat([(~mask.tensors[n]).flatten() for n in NAMES])
    assert int(pruned.sum()) == k
    order = flat.argsort()
    assert set(pruned.nonzero().flatten().tolist()) == set(order[:k].tolist())
    # Per layer: 60% of each, its own lowest.
    mask = strategy.prune(_request(model, x, y, 0.6, "layer")).mask
    for n in NAMES:
        s, p = expected[n].flatten(), (~mask.tensors[n]).flatten()
        k = round(0.6 * s.numel())
        assert int(p.sum()) == k
        assert set(p.nonzero().flatten().tolist()) == set(s.argsort()[:k].tolist())


def test_a_second_round_keeps_what_the_first_pruned():
    model, (x, y) = _tiny_model(), _data()
    strategy = criteria.get("gradient")
    first = strategy.prune(_request(model, x, y, 0.3, "global")).mask
    first.apply(model)
    second = strategy.prune(_request(model, x, y, 0.6, "global", previous=first)).mask
    for n in NAMES:
        assert not bool((second.tensors[n] & ~first.tensors[n]).any())
    assert abs(second.sparsity() - 0.6) < 1 / second.numel()
    assert isinstance(second, Mask)
