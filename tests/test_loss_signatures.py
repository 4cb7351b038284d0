"""Every public loss shows what it takes: explicit keyword-only parameters (``inspect.signature``, IDE hover
and static tools see them; no ``**options``), each documented in the class's own, static docstring."""

import inspect
import re

import pytest

import unifocal.losses as L

LOSS_CLASSES = sorted(n for n in L.__all__ if isinstance(getattr(L, n), type) and n != "DeepSupervisionLoss")
EVERY_LOSS_TAKES = ("from_logits", "multilabel", "ignore_index", "reduction", "ddp")


@pytest.mark.parametrize("name", LOSS_CLASSES)
def test_a_loss_signature_is_explicit_keyword_only_and_documented(name):
    cls = getattr(L, name)
    parameters = inspect.signature(cls).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), parameters
    assert set(EVERY_LOSS_TAKES) <= set(parameters)
    doc = cls.__dict__.get("__doc__") or ""
    # named there, or in a class it refers the rest to ("Other arguments as :class:`UnifiedFocalLoss`")
    referred = [getattr(L, ref, None) or getattr(L.region, ref)
                for ref in re.findall(r":class:`~?(?:[\w.]+\.)?(\w+)`", doc)]
    docs = doc + "".join(ref.__doc__ or "" for ref in referred if ref.__name__ != "SegmentationLoss")
    undocumented = [p for p in parameters if p not in docs and p not in EVERY_LOSS_TAKES]
    assert not undocumented, f"{name}'s docstring does not name {undocumented}"
    assert all(p in L.region.SegmentationLoss.__doc__ for p in EVERY_LOSS_TAKES)
    loss = cls(**{p: parameters[p].default for p in parameters})  # the defaults shown are the defaults taken
    assert loss.options == cls().options
    with pytest.raises(TypeError):
        cls(0.5)  # no positional hyperparameters: a value always says which one it sets


def test_deep_supervision_takes_its_settings_by_keyword():
    parameters = inspect.signature(L.DeepSupervisionLoss).parameters
    assert [p.kind for p in parameters.values()] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] + \
        [inspect.Parameter.KEYWORD_ONLY] * 2


def test_every_building_block_is_documented_in_the_guide():
    """unifocal.losses.extend is the public surface for writing a loss: each of its names has a docstring and
    appears in docs/losses.md's "Writing a loss"; none of them is taken for a loss of the package."""
    from pathlib import Path

    from unifocal.losses import extend

    guide = (Path(__file__).resolve().parents[1] / "docs" / "losses.md").read_text()
    guide = guide[guide.index("## Writing a loss"):]
    for name in extend.__all__:
        block = getattr(extend, name)
        assert (block.__doc__ or "").strip(), f"{name} has no docstring"
        assert f"`{name}`" in guide, f"{name} is missing from the guide"
    assert not set(extend.__all__) & set(L.__all__)
