import pytest
import torch
from torch import nn

from modelopt.techniques import optim


@pytest.mark.parametrize("name", optim.OPTIMIZERS.names())
def test_every_optimizer_lowers_a_toy_loss(name):
    torch.manual_seed(0)
    model = nn.Linear(5, 1, bias=False)
    w = model.weight
    opt = optim.build_optimizer({"name": name, "lr": 0.05}, model)
    start = float((w.detach() ** 2).sum())
    for _ in range(50):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert float((w.detach() ** 2).sum()) < start * 0.9


def test_optimizers_are_what_they_say():
    p = nn.Linear(1, 1)
    assert optim.build_optimizer({"name": "nesterov"}, p).defaults["nesterov"] is True
    assert optim.build_optimizer({"name": "momentum"}, p).defaults["momentum"] == 0.9
    assert optim.build_optimizer({"name": "sgd"}, p).defaults["momentum"] == 0
    assert isinstance(optim.build_optimizer({"name": "adamw"}, p), torch.optim.AdamW)
    assert optim.OPTIMIZERS.info("gd").full_batch


def test_weight_decay_leaves_biases_and_norm_scales_alone_unless_asked():
    """As the l2 term does: only weight matrices and kernels decay, unless decay_all."""
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = optim.build_optimizer({"name": "adamw", "weight_decay": 0.1}, model)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.1 if name.endswith("weight") and p.dim() > 1 else 0.0), name
    assert {id(p) for p in optim.weights(model)} == {id(p) for p in model.parameters()
                                                      if decay[id(p)] > 0}
    every = optim.build_optimizer({"name": "sgd", "weight_decay": 0.1, "decay_all": True}, model)
    assert [g["weight_decay"] for g in every.param_groups] == [0.1]
    assert sum(len(g["params"]) for g in every.param_groups) == len(list(model.parameters()))


def test_constraints_in_signatures_are_checked_before_anything_runs():
    from modelopt.spec.registry import RegistryError

    with pytest.raises(RegistryError, match="greater than 0"):
        optim.OPTIMIZERS.check("sgd", {"lr": 0})
    with pytest.raises(RegistryError, match="greater than or equal to 0"):
        optim.OPTIMIZERS.check("adamw", {"weight_decay": -0.1})


def test_adam_takes_no_momentum():
    from modelopt.spec.registry import RegistryError

    with pytest.raises(RegistryError, match="no parameter 'momentum'"):
        optim.OPTIMIZERS.check("adam", {"momentum": 0.9})


def lrs(spec, steps, total=100):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = optim.build_schedule(spec, opt, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_give_the_documented_rates():
    assert lrs({"name": "constant"}, 5) == [1.0] * 5
    s = lrs({"name": "step", "step_size": 10, "gamma": 0.5}, 25)
    assert s[9] == 1.0 and s[10] == 0.5 and s[20] == 0.25
    e = lrs({"name": "exponential", "gamma": 0.9}, 3)
    assert e == pytest.approx([1.0, 0.9, 0.81])
    c = lrs({"name": "cosine", "eta_min": 0.0}, 101)
    assert c[0] == 1.0 and c[50] == pytest.approx(0.5) and c[100] == pytest.approx(0.0, abs=1e-9)
    w = lrs({"name": "warmup_cosine", "warmup_steps": 10}, 60, total=110)
    assert w[0] == pytest.approx(0.1) and w[10] == pytest.approx(1.0)
    assert w[59] < w[10] and all(a < b for a, b in zip(w[:10], w[1:11]))


def test_plateau_reduces_on_flat_validation():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = optim.build_schedule({"name": "plateau", "factor": 0.5, "patience": 1}, opt, 100)
    for _ in range(4):
        sched.step(0.5)
    assert opt.param_groups[0]["lr"] < 1.0
    assert optim.SCHEDULES.info("plateau").on_eval


def test_l1_drives_weights_to_zero_faster_than_no_penalty():
    def train(terms):
        torch.manual_seed(0)
        x = torch.randn(256, 20)
        y = x[:, :2].sum(1, keepdim=True) + torch.randn(256, 1)  # only 2 of 20 inputs matter
        m = nn.Linear(20, 1)
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        for _ in range(500):
            loss = ((m(x) - y) ** 2).mean() + sum(t.penalty(m) for t in terms if t.penalty)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.weight.detach().abs()[0, 2:].mean()

    # least squares gives the 18 useless inputs weights of ~0.05 (fitting the noise)
    assert train(optim.build_terms([{"name": "l1", "weight": 0.1}])) < 0.5 * train([])


def test_l2_and_grad_clip_terms():
    m = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        m.weight.fill_(2.0)
        m.bias.fill_(5.0)
    (t,) = optim.build_terms([{"name": "l2", "weight": 0.5}])
    assert float(t.penalty(m)) == pytest.approx(0.5 * 8.0)  # biases are not penalised
    (c,) = optim.build_terms([{"name": "grad_clip", "max_norm": 1.0}])
    (m(torch.ones(1, 2)) * 100).sum().backward()
    c.before_step(m)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in m.parameters()))
    assert float(total) == pytest.approx(1.0, rel=1e-4)


def test_the_curves_give_the_rate_each_evaluated_step_trained_with():
    """A step schedule that divides the rate after step 10: the evaluation at step 10 reads
    the rate that step used (0.01), not the one the next step will (0.001)."""
    from modelopt.run.cell import run_cell
    from modelopt.spec.suite import parse

    cell = parse("""
name: lr
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 200}
  model: mlp
  optimizer: {name: sgd, lr: 0.01}
  schedule: {name: step, step_size: 10, gamma: 0.1}
  train: {steps: 20, eval_every: 10}
""").cells[0]
    curves = run_cell(cell, 0).curves
    assert [(c["step"], c["lr"]) for c in curves] == [(10, pytest.approx(0.01)),
                                                       (20, pytest.approx(0.001))]


def test_an_optimizer_named_by_import_path_takes_the_model_as_registered_ones_do():
    """`optimizer: {name: "pkg.mod:fn"}` of a function registered with `@optimizer` got the
    model where its raw function wanted parameter groups: it failed at run time."""
    p = nn.Linear(1, 1)
    opt = optim.build_optimizer({"name": "modelopt.techniques.optim:nesterov", "lr": 0.05,
                                 "weight_decay": 0.01}, p)
    assert opt.defaults["nesterov"] is True and opt.defaults["lr"] == 0.05
    # weight decay on the weight, not the bias: the entry's parameter groups
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]


def test_a_plain_optimizer_named_by_import_path_gets_the_parameter_groups():
    """`def nadam(params, /, ...)`, unregistered, named `pkg.mod:nadam`: it got the model
    where it wanted parameter groups, and the cell failed in torch (`can only optimize
    Tensors`) after the suite had loaded."""
    from modelopt.spec.registry import RegistryError

    p = nn.Linear(1, 1)
    opt = optim.build_optimizer({"name": "tests.plugins:plain_nadam", "lr": 0.05,
                                 "weight_decay": 0.01}, p)
    assert isinstance(opt, torch.optim.NAdam) and opt.defaults["lr"] == 0.05
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]
    with pytest.raises(RegistryError, match=r"groups_as_a_setting takes the parameter groups "
                                            r"first, positional-only"):
        optim.OPTIMIZERS.check("tests.plugins:groups_as_a_setting", {})


def test_a_torch_optimizer_class_named_by_import_path_takes_the_groups():
    """`torch.optim:AdamW` was refused (its `params` is not positional-only, as a function
    of ours must have it): the class takes the groups, its weight_decay default is theirs,
    and its `float | Tensor` settings are numbers in a suite."""
    from modelopt.spec.registry import RegistryError

    name = "torch.optim:AdamW"
    params = optim.OPTIMIZERS.check(name, {"lr": 0.05, "betas": [0.8, 0.9]})
    assert params["weight_decay"] == 0.01 and params["betas"] == (0.8, 0.9)
    opt = optim.build_optimizer({"name": name, **params}, nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 0.05
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]
    with pytest.raises(RegistryError, match=r"parameter 'lr': .*expected float"):
        optim.OPTIMIZERS.check(name, {"lr": "fast"})
    with pytest.raises(RegistryError, match=r"LBFGS.step needs a closure"):
        optim.OPTIMIZERS.check("torch.optim:LBFGS", {})
    # a class without weight decay is not handed one it would ignore: refused at load
    assert isinstance(optim.build_optimizer({"name": "torch.optim:Rprop"}, nn.Linear(2, 2)),
                      torch.optim.Rprop)
    with pytest.raises(RegistryError, match=r"no parameter 'weight_decay'"):
        optim.OPTIMIZERS.check("torch.optim:Rprop", {"weight_decay": 0.1})


def test_an_optimizer_without_its_positional_groups_is_refused_when_registered():
    """`def lion(params, lr=...)` made `params` a parameter the suite had to give."""
    with pytest.raises(TypeError, match=r"takes the parameter groups first, positional-only"):
        @optim.optimizer("test_no_slash")
        def no_slash(params, lr: float = 0.1):
            return torch.optim.SGD(params, lr=lr)
    assert "test_no_slash" not in optim.OPTIMIZERS.names()
