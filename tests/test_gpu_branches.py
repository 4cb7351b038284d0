"""The branches of unifocal.losses that run only on an accelerator or under torch.compile, forced on the CPU.

No GPU has run this code (docs/performance.md). What differs there is small and forced here:

- the region statistics take the whole tensor as one slab instead of cache-sized slabs (device predicate
  and the compile predicate);
- validation, the one host read per call, is skipped under torch.compile;
- the fused Functions disable autocast for the device of their input, in the forward and the backward;
- one host read per deep-supervision output in eager mode, none elsewhere in the loss;
- the nnU-Net trainers compile the loss when nnU-Net compiles (compiled == eager).
"""

import pytest
import torch

import unifocal.losses as L
from unifocal.losses import _region_stats


def _region_batch(shape=(2, 3, 6, 5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).requires_grad_()
    target = torch.rand(shape, generator=g) > 0.6
    mask = torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.2
    return logits, target, mask


def test_the_slab_length_is_the_whole_tensor_off_the_cpu_and_under_compile(monkeypatch):
    x = torch.empty(2, 3, 1000)
    assert _region_stats._slab_length(x) == 1000  # small enough for one slab on the CPU
    monkeypatch.setattr(_region_stats, "_SLAB_ELEMENTS", 600)
    assert _region_stats._slab_length(x) == 100  # ten equal slabs of 6 x 100 elements
    assert _region_stats._slab_length(torch.empty(2, 3, 1000, device="meta")) == 1000  # any accelerator
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert _region_stats._slab_length(x) == 1000


@pytest.mark.parametrize("cls", [L.AsymmetricUnifiedFocalLoss, L.SymmetricUnifiedFocalLoss, L.DiceCELoss])
def test_region_losses_in_one_slab_equal_the_cpu_slabs(cls, monkeypatch):
    logits, target, mask = _region_batch()
    loss = cls(multilabel=True)
    monkeypatch.setattr(_region_stats, "_SLAB_ELEMENTS", 40)  # several CPU slabs, the last one short
    sliced = loss(logits, target, mask=mask)
    grad_sliced = torch.autograd.grad(sliced, logits)[0]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the accelerator / compiled branch
    whole = loss(logits, target, mask=mask)
    grad_whole = torch.autograd.grad(whole, logits)[0]
    torch.testing.assert_close(whole, sliced, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(grad_whole, grad_sliced, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("multilabel", [False, True])
def test_compiled_validation_branch_asserts_in_graph_and_changes_nothing_else(multilabel, monkeypatch):
    logits, target, mask = _region_batch()
    if not multilabel:
        target = target[:, :1].long() + target[:, 1:2].long()  # a (B, 1, *S) label map in 0..2
    loss = L.AsymmetricUnifiedFocalLoss(multilabel=multilabel)
    eager = loss(logits, target)
    grad_eager = torch.autograd.grad(eager, logits)[0]
    # torch's own predicate, so every compile branch is taken: this batch is one region slab either way
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    compiled_branch = loss(logits, target)
    torch.testing.assert_close(compiled_branch, eager, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(compiled_branch, logits)[0], grad_eager, rtol=0, atol=0)
    bad = logits.detach().clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="NaN or Inf"):  # the in-graph assertion, not the eager check
        loss(bad, target)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(bad, target)


class _HostReads:
    """Counts reads of tensor values by the host (``item``, ``tolist``, ``bool``, ``float``, ``int``): each is a
    synchronisation on an accelerator."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def wrapper(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)

        return wrapper


@pytest.mark.parametrize("regions", [False, True])
def test_one_host_read_per_deep_supervision_output(regions, monkeypatch):
    """nnU-Net's inputs (int16 label maps, or bool region masks with an ignore channel) through the trainers'
    adapter: the validation's one read per output, nothing in the statistics, the loss or its backward."""
    from nnunet_trainers.loss_builder import NnUNetTargetAdapter

    g = torch.Generator().manual_seed(1)
    outputs, targets = [], []
    for size in (16, 8, 4, 2):
        outputs.append(torch.randn((2, 3, size, size), generator=g, requires_grad=True))
        if regions:
            targets.append(torch.rand((2, 4, size, size), generator=g) > 0.7)
        else:
            targets.append(torch.randint(0, 3, (2, 1, size, size), generator=g, dtype=torch.int16))
    inner = L.AsymmetricUnifiedFocalLoss(multilabel=regions, batch_dice=True)
    loss = L.DeepSupervisionLoss(NnUNetTargetAdapter(inner, regions, has_ignore=regions), weights="nnunet")
    reads = _HostReads(monkeypatch)
    loss(outputs, targets).backward()
    assert reads.count == 3  # four outputs, the last weighted 0 (not evaluated)


@pytest.mark.parametrize("multilabel", [False, True])
def test_fused_functions_disable_autocast_in_forward_and_backward(multilabel):
    logits, target, mask = _region_batch(shape=(2, 3, 8, 8))
    x = logits.detach().float().requires_grad_()
    if not multilabel:
        target = target[:, :1].long() + target[:, 1:2].long()
    loss = L.SymmetricUnifiedFocalLoss(multilabel=multilabel)
    reference = loss(x.detach().bfloat16().float().requires_grad_(), target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x.bfloat16(), target)
        (grad,) = torch.autograd.grad(value, x)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    x_ref = x.detach().bfloat16().float().requires_grad_()
    (grad_ref,) = torch.autograd.grad(loss(x_ref, target), x_ref)
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref.bfloat16().float(), rtol=1e-2, atol=1e-6)


@pytest.mark.slow
def test_trainer_compiles_the_loss_when_nnunet_compiles_and_compiled_equals_eager():
    """nnUNetTrainer._build_loss compiles its Dice loss when _do_i_compile(); build_loss compiles ours then.
    Inductor on the CPU: one tiny region batch (compiling takes tens of seconds)."""
    from nnunet_trainers.loss_builder import TrainerState, build_loss, resolve
    from nnunet_trainers.config import Settings

    eager_state = TrainerState(has_regions=True, num_channels=3, batch_dice=True)
    compiled_state = TrainerState(has_regions=True, num_channels=3, batch_dice=True, compiled=True)
    resolved = resolve("asymmetric_unified_focal", Settings(), eager_state)
    eager, compiled = build_loss(resolved, eager_state), build_loss(resolved, compiled_state)
    assert not isinstance(eager.loss, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(compiled.loss, torch._dynamo.eval_frame.OptimizedModule)
    logits, target, _ = _region_batch(shape=(2, 3, 8, 8, 8))
    x = logits.detach().float()
    values, grads = [], []
    for module in (eager, compiled):
        xx = x.clone().requires_grad_()
        value = module(xx, target)
        values.append(value.detach())
        grads.append(torch.autograd.grad(value, xx)[0])
    torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
