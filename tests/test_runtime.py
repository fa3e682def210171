import json
import os
import random
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
import torch

import labkit
from labkit.runtime import Config, check_scale, derive_seed, make_generator, pick_device, setup, start


def test_setup_seeds_everything_the_same_way():
    setup(123)
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    setup(123)
    second = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    setup(124)
    assert not torch.equal(torch.rand(3), second[2])


def test_setup_returns_device_and_sets_one_thread_on_cpu():
    before = torch.get_num_threads()
    try:
        device = setup(0, "cpu")
        assert device == torch.device("cpu")
        assert torch.get_num_threads() == 1
        setup(0, "cpu", threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_auto_device_follows_cuda_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.parametrize("bad", ["gpu0", "tpu"])
def test_unknown_device_names_the_argument(bad):
    with pytest.raises(ValueError, match="device must be"):
        pick_device(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed must be"),
    ({"seed": 1.5}, "seed must be"),
    ({"seed": 0, "threads": 0}, "threads must be"),
])
def test_bad_setup_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        setup(**kwargs)


def test_scale_check_and_generator():
    assert check_scale("teach") == "teach"
    with pytest.raises(ValueError, match="scale must be one of"):
        check_scale("huge")
    assert torch.equal(torch.rand(4, generator=make_generator(7)), torch.rand(4, generator=make_generator(7)))


# --- the experiment layer: labkit.start and Run ------------------------------------------------------


CONFIG = {"teach": {"steps": 10, "width": 8}, "paper": {"steps": 1000, "width": 64}}


def test_start_selects_the_config_of_the_scale_and_keeps_it_read_only():
    run = start(seed=2, scale="paper", device="cpu", config=CONFIG)
    assert (run.seed, run.scale, run.device) == (2, "paper", torch.device("cpu"))
    assert run.config["steps"] == 1000 and run.config.width == 64 and dict(run.config) == CONFIG["paper"]
    with pytest.raises(TypeError, match="read-only"):
        run.config.steps = 3
    with pytest.raises(TypeError):
        run.config["steps"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        run.seed = 5  # frozen
    assert run.config.replace(steps=3)["steps"] == 3 and run.config["steps"] == 1000
    with pytest.raises(KeyError, match="no entries"):
        run.config.replace(depth=3)
    assert start(seed=0, device="cpu", config={"lr": 0.1}).config == Config({"lr": 0.1})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seed": -1}, ValueError, "seed must be"),
    ({"seed": True}, ValueError, "seed must be"),
    ({"scale": "huge"}, ValueError, "scale must be one of"),
    ({"device": "tpu"}, ValueError, "device must be"),
    ({"device": "mps"}, ValueError, "device must be"),
    ({"config": {"teach": {}}}, ValueError, "missing \\['paper'\\]"),
    ({"config": [1, 2]}, TypeError, "config must be a mapping"),
    ({"config": {"teach": 1, "paper": {}}}, TypeError, "config\\['teach'\\] must be a mapping"),
])
def test_start_rejects_bad_parameters_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        start(**{"device": "cpu", **kwargs})


def test_named_streams_are_deterministic_independent_and_need_no_offsets():
    run, same, other = start(seed=0, device="cpu"), start(seed=0, device="cpu"), start(seed=1, device="cpu")
    draw = lambda r, name: torch.rand(5, generator=r.generator(name))  # noqa: E731
    assert torch.equal(draw(run, "data"), draw(same, "data"))
    assert not torch.equal(draw(run, "data"), draw(run, "init"))
    assert not torch.equal(draw(run, "data"), draw(other, "data"))
    assert run.seed_for("data") == derive_seed(0, "data") and 0 <= run.seed_for("data") < 2**63
    with pytest.raises(ValueError, match="non-empty name"):
        run.generator("")


def test_seeded_block_seeds_the_global_generator_and_restores_it():
    run = start(seed=4, device="cpu")
    torch.manual_seed(123)
    expected_after = torch.rand(3)
    torch.manual_seed(123)
    with run.seeded("init"):
        a = torch.nn.Linear(3, 2).weight.detach().clone()
    assert torch.equal(torch.rand(3), expected_after), "the global generator must continue as if untouched"
    with run.seeded("init"):
        b = torch.nn.Linear(3, 2).weight.detach().clone()
    assert torch.equal(a, b)


def test_run_record_names_what_produced_the_result():
    record = start(seed=3, scale="teach", device="cpu", config=CONFIG, notebook="demo/01_x").record()
    assert record["seed"] == 3 and record["scale"] == "teach" and record["device"] == "cpu"
    assert record["notebook"] == "demo/01_x" and record["config"] == CONFIG["teach"]
    assert record["torch"] == torch.__version__ and record["labkit"] == labkit.__version__
    assert record["python"].count(".") == 2 and record["runner"] in ("python", "jupyter")


def test_check_claims_records_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("LABKIT_SEED", raising=False)
    run = start(seed=3, device="cpu", notebook="demo/02_y")
    labkit.check_claims([labkit.Claim("c", "s", measured=1.0, criterion="x > 0", holds=True)], run=run)
    record = json.loads((tmp_path / "demo_02_y.json").read_text())
    assert record["seed"] == 3 and record["scale"] == "teach" and record["claims"][0]["verdict"] == "reproduced"
    with pytest.raises(TypeError, match="run must be"):
        labkit.check_claims([labkit.Claim("c", "s", measured=1.0, criterion="x", holds=True)], run="run")


def test_plain_papermill_run_records_the_injected_seed(tmp_path):
    """`papermill nb.ipynb out.ipynb -p SEED 3` with LABKIT_RESULTS_DIR set records seed 3 (not None)."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('SEED: int = 0\nSCALE: str = "teach"\nDEVICE: str = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import labkit\n"
        "run = labkit.start(seed=SEED, scale=SCALE, device='cpu', config={'teach': {'n': 1}, 'paper': {'n': 2}})\n"
        "labkit.check_claims([labkit.Claim('n', 'n is one', measured=run.config.n, criterion='n = 1',\n"
        "                                  holds=run.config.n == 1)], run=run)\n")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "demo" / "03_seeded.ipynb"
    source.parent.mkdir()
    nbformat.write(nb, source)
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")}
    env.update(LABKIT_RESULTS_DIR=str(results), LABKIT_PROGRESS="0")
    subprocess.run([sys.executable, "-m", "papermill", str(source), str(tmp_path / "out.ipynb"), "-p", "SEED", "3",
                    "--kernel", "python3", "--no-progress-bar"], check=True, env=env, capture_output=True,
                   timeout=300)
    (record_file,) = results.glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["seed"] == 3 and record["scale"] == "teach" and record["runner"] == "papermill"
    assert record["notebook"] == "demo/03_seeded" and record_file.name == "demo_03_seeded.json"


def test_run_checkpoint_is_none_without_a_folder_and_names_seed_and_scale_inside_one(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_CHECKPOINTS", raising=False)
    assert start(seed=3, device="cpu").checkpoint("grid f=0.3") is None  # nothing is written without a folder
    run = start(seed=3, scale="paper", device="cpu", checkpoints=tmp_path)
    assert run.checkpoint("grid f=0.3, wd 1") == tmp_path / "seed3-paper" / "grid_f=0.3__wd_1.pt"
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "from-env"))
    assert start(seed=0, device="cpu").checkpoint("a").parent == tmp_path / "from-env" / "seed0-teach"
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        run.checkpoint(" ")
    with pytest.raises(TypeError, match="checkpoints must be a folder path"):
        start(device="cpu", checkpoints=3)


def test_a_run_cut_off_resumes_from_its_run_checkpoint(tmp_path):
    """What `labkit reproduce --resume` relies on: a second execution of the same cell continues the run."""
    from labkit.training import fit

    def train(steps):
        run = start(seed=0, device="cpu", checkpoints=tmp_path)
        model = torch.nn.Linear(2, 1)
        with run.seeded("init"):
            torch.nn.init.normal_(model.weight)
        x = torch.randn(16, 2, generator=run.generator("data"))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = lambda m, b: ((m(b[0]) - b[0].sum(1, keepdim=True)) ** 2).mean()  # noqa: E731
        return fit(model, loss, (x,), optimizer=opt, steps=steps, progress=False,
                   checkpoint=run.checkpoint("linear")), model

    first, _ = train(5)
    assert (tmp_path / "seed0-teach" / "linear.pt").exists() and len(first.loss) == 5
    resumed, model = train(12)
    assert len(resumed.loss) == 12 and resumed.loss[:5] == first.loss  # continued, not restarted
    shutil.rmtree(tmp_path / "seed0-teach")
    fresh, fresh_model = train(12)
    assert fresh.loss == pytest.approx(resumed.loss, rel=1e-6)
    assert torch.allclose(model.weight, fresh_model.weight, atol=1e-6)
