import pytest
import torch
import torch.nn.functional as F

from labkit.checkpoints import CheckpointMismatch
from labkit.models import mlp
from labkit.training import History, accuracy, batch_at, cross_entropy, fit, fit_loss


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def noisy_ce(model, batch):
    """A loss that draws from torch's global RNG (as diffusion training does)."""
    x, y = batch
    return F.cross_entropy(model(x + 0.1 * torch.randn_like(x)), y)


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(seed)
    model = mlp(5, [8], 2)
    return model, (x, y)


def run(steps, checkpoint=None, model_and_data=None, **kw):
    model, data = model_and_data or problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    hist = fit(model, noisy_ce, data, optimizer=opt, scheduler=sched, steps=steps, batch_size=32, eval_every=5,
               metrics={"acc": lambda m: accuracy(m, *data)}, checkpoint=checkpoint, checkpoint_every=4,
               snapshots=[10], **kw)
    return model, hist


def test_fit_learns_and_records_history():
    model, data = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    hist = fit(model, ce, data, optimizer=opt, steps=60, eval_every=20, metrics={"acc": lambda m: accuracy(m, *data)})
    assert hist.steps == [0, 20, 40, 60]
    assert len(hist.loss) == 60 and hist.loss[-1] < hist.loss[0]
    assert hist.last("acc") > 0.9 and hist["acc"][0] < hist.last("acc")
    assert hist.first_step("acc", lambda a: a > 0.9) in (20, 40, 60)
    with pytest.raises(KeyError, match="no metric"):
        hist["nope"]


def test_resume_after_interruption_gives_the_same_history(tmp_path):
    torch.manual_seed(5)
    model_full, full = run(30)

    ckpt = tmp_path / "run" / "ckpt.pt"
    torch.manual_seed(5)

    calls = {"n": 0}

    def stop_at_step_13(model, batch):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return noisy_ce(model, batch)

    model, data = problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    with pytest.raises(KeyboardInterrupt):
        fit(model, stop_at_step_13, data, optimizer=opt, scheduler=sched, steps=30, batch_size=32, eval_every=5,
            metrics={"acc": lambda m: accuracy(m, *data)}, checkpoint=ckpt, checkpoint_every=4, snapshots=[10])
    assert ckpt.exists()
    saved = torch.load(ckpt, weights_only=False)
    assert saved["step"] == 13  # Ctrl-C inside step 14's closure: the last completed step is saved, not step 14

    torch.manual_seed(999)  # the checkpoint restores the RNG state: this must not matter
    model_resumed, resumed = run(30, checkpoint=ckpt)
    assert resumed.loss == full.loss
    assert resumed.rows == full.rows
    assert torch.equal(resumed.snapshots[10]["0.weight"], full.snapshots[10]["0.weight"])
    for a, b in zip(model_full.parameters(), model_resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob("run/*.tmp"))


def test_finished_checkpoint_is_not_trained_again(tmp_path):
    ckpt = tmp_path / "c.pt"
    _, first = run(12, checkpoint=ckpt)
    _, again = run(12, checkpoint=ckpt)
    assert again.loss == first.loss


def test_batches_are_a_pure_function_of_seed_and_step():
    data = (torch.arange(10), torch.arange(10) * 2)
    big = 2**62 + 12345  # a Run.seed_for stream seed: 63 bits
    assert torch.equal(batch_at(data, 3, 4, seed=big)[0], batch_at(data, 3, 4, seed=big)[0])
    b1, b2 = batch_at(data, 3, 4, seed=0), batch_at(data, 3, 4, seed=0)
    assert torch.equal(b1[0], b2[0]) and torch.equal(b1[1], 2 * b1[0])
    epoch = torch.cat([batch_at(data, s, 4, seed=0)[0] for s in range(3)])
    assert sorted(epoch.tolist()) == list(range(10))


def test_stop_when_and_nonfinite_handling():
    model, data = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    hist = fit(model, ce, data, optimizer=opt, steps=500, eval_every=10,
               metrics={"acc": lambda m: accuracy(m, *data)}, stop_when=lambda h: h.last("acc") >= 0.9)
    assert hist.steps[-1] < 500 and hist.last("acc") >= 0.9

    def exploding(model, batch):
        return ce(model, batch) * float("inf")

    with pytest.raises(FloatingPointError, match="step 1"):
        fit(model, exploding, data, optimizer=opt, steps=3)
    hist = fit(model, exploding, data, optimizer=opt, steps=3, on_nonfinite="stop")
    assert len(hist.loss) == 1


def test_fit_restores_eval_mode_during_metrics_and_validates_arguments():
    model, data = problem()
    modes = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, ce, data, optimizer=opt, steps=2, eval_every=1,
        metrics={"mode": lambda m: modes.append(m.training) or 0})
    assert modes == [False, False, False] and model.training
    for kwargs, match in [({"steps": 0}, "steps"), ({"steps": 2, "batch_size": 0}, "batch_size"),
                          ({"steps": 2, "eval_every": 0}, "eval_every"),
                          ({"steps": 2, "on_nonfinite": "x"}, "on_nonfinite")]:
        with pytest.raises(ValueError, match=match):
            fit(model, ce, data, optimizer=opt, **kwargs)
    with pytest.raises(ValueError, match="share their first dimension"):
        fit(model, ce, (data[0], data[1][:3]), optimizer=opt, steps=1)
    with pytest.raises(TypeError, match="model must be"):
        fit(lambda x: x, ce, data, optimizer=opt, steps=1)
    with pytest.raises(ValueError, match="scalar"):
        fit(model, lambda m, b: m(b[0]).sum(0), data, optimizer=opt, steps=1)


def test_accuracy_handles_binary_scores():
    class Scores(torch.nn.Module):
        def forward(self, x):
            return x[:, 0]

    x = torch.tensor([[1.0], [-2.0], [3.0]])
    assert accuracy(Scores(), x, torch.tensor([1.0, -1.0, -1.0])) == pytest.approx(2 / 3)


def test_history_round_trip():
    h = History()
    h.record(0, {"a": 1})
    h.loss.append(0.5)
    assert History.from_state_dict(h.state_dict()).rows == h.rows
    with pytest.raises(KeyError, match="no evaluation"):
        h.at(3)


def test_interrupt_during_an_evaluation_resumes_bit_for_bit(tmp_path):
    torch.manual_seed(5)
    model_full, full = run(30)
    ckpt = tmp_path / "ckpt.pt"
    model, data = problem()
    calls = {"n": 0}

    def acc_then_interrupt(m):
        calls["n"] += 1
        if calls["n"] == 4:  # the evaluation of step 15 (after 0, 5, 10)
            raise KeyboardInterrupt
        return accuracy(m, *data)

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    with pytest.raises(KeyboardInterrupt):
        fit(model, noisy_ce, data, optimizer=opt, scheduler=sched, steps=30, batch_size=32, eval_every=5,
            metrics={"acc": acc_then_interrupt}, checkpoint=ckpt, checkpoint_every=4, snapshots=[10])
    assert torch.load(ckpt, weights_only=False)["step"] == 14  # step 15's evaluation never finished
    _, resumed = run(30, checkpoint=ckpt)
    assert resumed.loss == full.loss and resumed.rows == full.rows


def test_a_checkpoint_of_another_configuration_is_refused_unless_forced(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(6, checkpoint=ckpt)
    model, data = problem()
    opt = torch.optim.Adam(model.parameters(), lr=5.0)  # another learning rate
    with pytest.raises(CheckpointMismatch, match="lr"):
        fit(model, noisy_ce, data, optimizer=opt, steps=12, batch_size=32, checkpoint=ckpt)
    with pytest.raises(CheckpointMismatch, match="optimizer: checkpoint has 'Adam', this run has 'SGD'"):
        fit(model, noisy_ce, data, optimizer=torch.optim.SGD(model.parameters(), lr=1e-2), steps=12,
            batch_size=32, checkpoint=ckpt)
    wider = mlp(5, [16], 2)  # another architecture: named, not a raw load_state_dict error
    with pytest.raises(CheckpointMismatch, match="model structure differs"):
        fit(wider, noisy_ce, data, optimizer=torch.optim.Adam(wider.parameters(), lr=1e-2), steps=12,
            batch_size=32, checkpoint=ckpt)
    hist = fit(model, noisy_ce, data, optimizer=opt, steps=8, batch_size=32, checkpoint=ckpt, force_resume=True)
    assert len(hist.loss) == 8


def test_fit_refuses_an_optimizer_of_another_model_or_none():
    model, data = problem()
    other = mlp(5, [8], 2)
    with pytest.raises(ValueError, match="not model's"):
        fit(model, ce, data, optimizer=torch.optim.SGD(other.parameters(), lr=0.1), steps=1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        fit(model, ce, data, optimizer=None, steps=1)
    with pytest.raises(TypeError, match="loss_fn must be"):
        fit(model, None, data, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), steps=1)


def test_fit_loss_wraps_a_criterion():
    model, (x, y) = problem()
    assert torch.equal(cross_entropy(model, (x, y)), F.cross_entropy(model(x), y))
    assert torch.equal(fit_loss(F.mse_loss)(lambda t: t, (x, x)), torch.tensor(0.0))
    with pytest.raises(TypeError, match="criterion must be"):
        fit_loss(3)
