"""labkit.sam.simplicity: the LMS-k data against its definition (Shah et al., 2020), randomization tests against
hand-built classifiers whose features are known, k-means against scikit-learn on separated blobs, USEFUL's split,
up-sampling and training run against their definitions (Nguyen et al., 2024), side effects and bad input."""

import pytest
import torch
from model_state import assert_same, busy_mlp, snapshot
from torch import nn

from labkit.models import mlp
from labkit.sam.simplicity import (
    KMeans,
    LMSData,
    RandomizationTest,
    feature_learning_curve,
    kmeans,
    lms_data,
    randomization_test,
    randomize_coordinates,
    slab_centres,
    train_useful,
    upsample,
    useful_split,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("slabs", [3, 5, 7])
def test_lms_data_follows_its_definition(slabs):
    data = lms_data(2000, dim=6, slabs=slabs, margin=0.1, slab_gap=0.2, generator=gen())
    assert isinstance(data, LMSData) and data.x.shape == (2000, 6) and data.y.shape == (2000,)
    assert data.simple == (0,) and data.complex == (1, 2, 3, 4, 5)
    assert int(data.y.sum()) == 1000                                      # balanced classes
    s = 2.0 * data.y - 1
    assert bool((data.x[:, 0] * s >= 0.1 - 1e-6).all()) and bool((data.x[:, 0].abs() <= 1).all())
    centres = slab_centres(slabs)
    slab = ((data.x[:, 1:].double() + 1) * slabs / 2).floor().long().clamp(0, slabs - 1)
    assert bool((slab % 2 == data.y.unsqueeze(1)).all())                 # each slab coordinate alone is perfect
    half = (1 - 0.2) / slabs
    assert bool(((data.x[:, 1:].double() - centres[slab]).abs() <= half + 1e-6).all())
    used = set(slab.flatten().tolist())
    assert used == set(range(slabs))                                      # every slab is populated


def test_slab_centres_closed_form():
    assert torch.allclose(slab_centres(5), torch.tensor([-0.8, -0.4, 0.0, 0.4, 0.8], dtype=torch.float64))


def test_lms_noise_flips_the_simple_coordinate_on_that_share():
    data = lms_data(20000, dim=3, simple_noise=0.2, generator=gen(1))
    wrong = ((data.x[:, 0] > 0).long() != data.y).double().mean().item()
    assert wrong == pytest.approx(0.2, abs=0.015)                        # ~5 binomial SE
    slab = ((data.x[:, 1:] + 1) * 5 / 2).floor().long().clamp(0, 4)
    assert bool((slab % 2 == data.y.unsqueeze(1)).all())                 # the slabs stay noise-free


def test_lms_data_is_a_function_of_the_generator():
    a, b = lms_data(50, generator=gen(3)), lms_data(50, generator=gen(3))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, lms_data(50, generator=gen(4)).x)
    assert lms_data(10, dtype=torch.float64, generator=gen()).x.dtype == torch.float64


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, ValueError, "n"), ({"dim": 1}, ValueError, "dim"), ({"slabs": 1}, ValueError, "slabs"),
    ({"margin": 1.0}, ValueError, "margin"), ({"simple_noise": 1.5}, ValueError, "simple_noise"),
    ({"dtype": torch.int64}, TypeError, "dtype"), ({"generator": 3}, TypeError, "generator"),
])
def test_lms_data_refuses_bad_input(kwargs, error, match):
    args = {"n": 10, **kwargs}
    with pytest.raises(error, match=match):
        lms_data(args.pop("n"), **args)


def test_randomize_coordinates_is_one_permutation_of_the_chosen_columns():
    x = torch.arange(40.0).reshape(10, 4)
    out = randomize_coordinates(x, [1, 3], generator=gen(5))
    perm = torch.randperm(10, generator=gen(5))
    assert torch.equal(out[:, [1, 3]], x[perm][:, [1, 3]])
    assert torch.equal(out[:, [0, 2]], x[:, [0, 2]])
    assert torch.equal(x, torch.arange(40.0).reshape(10, 4))              # the input is not modified
    with pytest.raises(ValueError, match="coordinates"):
        randomize_coordinates(x, [4], generator=gen())
    with pytest.raises(TypeError, match="coordinates"):
        randomize_coordinates(x, 1)
    with pytest.raises(ValueError, match="repeated"):
        randomize_coordinates(x, [1, 1])


class SlabOnly(nn.Module):
    """A perfect classifier that reads only coordinate ``column`` through the 5-slab rule."""

    def __init__(self, column):
        super().__init__()
        self.column = column
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        parity = (((x[:, self.column] + 1) * 5 / 2).floor().clamp(0, 4) % 2) * self.scale
        return torch.stack([1 - parity, parity], dim=1)


def test_randomization_test_on_classifiers_with_known_features():
    data = lms_data(4000, dim=5, generator=gen(2))
    linear = nn.Linear(5, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[1, 0], linear.weight[0, 0] = 1.0, -1.0
        linear.bias.zero_()
    r = randomization_test(linear, data.x, data.y, generator=gen())
    assert isinstance(r, RandomizationTest)
    assert r.standard == 1.0 and r.complex_randomized == 1.0
    assert r.simple_randomized == pytest.approx(0.5, abs=0.03)
    s = randomization_test(SlabOnly(2), data.x, data.y, generator=gen())
    assert s.standard == 1.0 and s.simple_randomized == 1.0
    assert s.complex_randomized == pytest.approx(0.5, abs=0.03)
    only = randomization_test(SlabOnly(2), data.x, data.y, complex=[1], generator=gen())
    assert only.complex_randomized == 1.0                                 # column 2 untouched


def test_randomization_test_leaves_the_model_as_found():
    x = torch.randn(64, 5, generator=gen())
    model, calls = busy_mlp(x, classes=2)
    before = snapshot(model)
    randomization_test(model, x, (x[:, 0] > 0).long(), generator=gen())
    assert_same(before, snapshot(model))
    with pytest.raises(ValueError, match="rows"):
        randomization_test(model, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="repeats"):
        randomization_test(model, x, (x[:, 0] > 0).long(), repeats=0)


def test_kmeans_agrees_with_scikit_learn_on_separated_blobs():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    g = gen(7)
    pts = torch.cat([torch.randn(50, 3, generator=g, dtype=torch.float64) + 5,
                     torch.randn(70, 3, generator=g, dtype=torch.float64) - 5])
    result = kmeans(pts, 2, generator=gen())
    assert isinstance(result, KMeans) and result.converged
    truth = torch.cat([torch.zeros(50), torch.ones(70)]).long()
    assert torch.equal(result.labels, truth) or torch.equal(result.labels, 1 - truth)
    for j in (0, 1):
        assert torch.allclose(result.centres[j], pts[result.labels == j].mean(0))
    ref = sklearn_cluster.KMeans(2, n_init=10, random_state=0).fit(pts.numpy())
    ours = sorted(result.centres.tolist())
    theirs = sorted(ref.cluster_centers_.tolist())
    assert torch.allclose(torch.tensor(ours), torch.tensor(theirs), atol=1e-9)
    with pytest.raises(ValueError, match="k"):
        kmeans(pts, 0)


def test_useful_split_marks_the_higher_loss_cluster_of_each_class():
    # logits = inputs: in each class, half the examples are confidently right, half nearly undecided
    x = torch.tensor([[4.0, -4.0], [4.1, -4.0], [0.1, 0.0], [0.0, 0.1],       # class 0
                      [-4.0, 4.0], [-4.0, 4.2], [0.0, 0.2], [0.1, 0.0]])     # class 1
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    split = useful_split(nn.Identity(), x, y, generator=gen())
    assert split.slow.tolist() == [False, False, True, True, False, False, True, True]
    assert split.share == 0.5
    assert torch.allclose(split.losses, nn.functional.cross_entropy(x, y, reduction="none"))
    with pytest.raises(ValueError, match="y"):
        useful_split(nn.Identity(), x, y.float())


def test_upsample_repeats_the_marked_examples():
    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    mask = torch.tensor([False, True, False, True, False])
    xu, yu = upsample(x, y, mask, factor=3)
    assert yu.tolist() == [0, 1, 2, 3, 4, 1, 3, 1, 3]
    assert torch.equal(xu[5:], x[[1, 3, 1, 3]])
    x1, y1 = upsample(x, y, mask, factor=1)
    assert torch.equal(x1, x) and torch.equal(y1, y)
    with pytest.raises(TypeError, match="mask"):
        upsample(x, y, mask.long())
    with pytest.raises(ValueError, match="factor"):
        upsample(x, y, mask, factor=0)


def test_train_useful_follows_its_definition_and_leaves_init_alone():
    data = lms_data(120, dim=4, simple_noise=0.2, generator=gen(8))
    torch.manual_seed(0)
    init = mlp(4, [16], 2)
    before = snapshot(init)
    out = train_useful(init, (data.x, data.y), early_steps=10, factor=2, lr=0.1, steps=20, batch_size=30,
                       progress=False, generator=gen(9))
    assert_same(before, snapshot(init))
    again = useful_split(out.early.model, data.x, data.y, generator=gen(9))
    assert torch.equal(out.split.slow, again.slow)
    assert out.size == 120 + int(out.split.slow.sum())
    assert out.early.history.steps[-1] == 10 and out.trained.history.steps[-1] == 20
    with pytest.raises(ValueError, match="early_steps"):
        train_useful(init, (data.x, data.y), early_steps=0, lr=0.1, steps=5)


def test_feature_learning_curve_records_the_randomization_test_of_each_evaluation():
    data = lms_data(200, dim=4, generator=gen(10))
    test = lms_data(300, dim=4, generator=gen(11))
    torch.manual_seed(1)
    init = mlp(4, [16], 2)
    before = snapshot(init)
    run = feature_learning_curve(init, (data.x, data.y), (test.x, test.y), kind="sam", rho=0.1, lr=0.1, steps=20,
                                 batch_size=50, every=10, repeats=1, generator=gen(12), progress=False)
    assert_same(before, snapshot(init))
    assert run.history.steps == [0, 10, 20]
    final = randomization_test(run.model, test.x, test.y, repeats=1, generator=gen(12))
    # the generator advanced over the three evaluations: replay it to compare the last one
    g = gen(12)
    for _ in range(2):
        randomization_test(init, test.x, test.y, repeats=1, generator=g)
    replay = randomization_test(run.model, test.x, test.y, repeats=1, generator=g)
    assert run.history["test accuracy"][-1] == final.standard == replay.standard
    assert run.history["simple randomized"][-1] == replay.simple_randomized
    assert run.history["complex randomized"][-1] == replay.complex_randomized
