"""The model and loss registries refuse parameters they would otherwise drop: one ValueError naming the unknown
parameter and the valid ones, for every registered model and loss (a new one is tested for free)."""
from __future__ import annotations

import inspect

import pytest

from bench.config.cell import CellConfig
import losses
import models


def _taken(sig: inspect.Signature) -> set[str]:
    return {k for k, p in sig.parameters.items() if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


@pytest.mark.parametrize("name", models.available())
def test_model_rejects_unknown_parameter(name):
    want = _taken(inspect.signature(models.get_factory(name)))
    assert set(models.parameters(name)) == want  # the registry reads the factory's own signature
    with pytest.raises(ValueError) as err:
        models.build(name, no_such_parameter=1)
    msg = str(err.value)
    assert "\n" not in msg and "no_such_parameter" in msg and name in msg
    assert all(k in msg for k in want)  # names the valid ones


@pytest.mark.parametrize("name", losses.available())
def test_loss_rejects_unknown_parameter(name):
    want = _taken(inspect.signature(losses.get_class(name).__init__))
    assert set(losses.parameters(name)) == want
    with pytest.raises(ValueError) as err:
        losses.build(name, no_such_parameter=1)
    msg = str(err.value)
    assert "\n" not in msg and "no_such_parameter" in msg and name in msg
    assert all(k in msg for k in want)


@pytest.mark.parametrize("name", losses.available())
def test_context_reaches_only_the_losses_that_take_it(name, monkeypatch):
    seen = {}
    cls = losses.get_class(name)
    real = cls.__init__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    monkeypatch.setattr(cls.__init__, "__signature__", inspect.signature(real), raising=False)
    try:
        losses.build(name, context={"no_such_setting": 1, "reduction": "mean"})
    except Exception:
        pass  # some losses need weights that are not here offline: what they were given is what counts
    assert "no_such_setting" not in seen
    assert seen.get("reduction") == ("mean" if "reduction" in losses.parameters(name) else None)


def test_composite_gives_each_parameter_to_the_terms_that_take_it():
    loss = losses.build("mse+huber", delta=0.5, reduction="sum")  # huber's delta: mse does not see it
    assert loss.terms[1].delta == 0.5 and all(t.reduction == "sum" for t in loss.terms)
    with pytest.raises(ValueError, match="rebalance"):
        losses.build("mse+l1", rebalance=True)  # no term takes it


@pytest.mark.parametrize("cfg, needle", [
    (CellConfig(model="unet_vgg16", model_params={"skips": "concat"}), "skips"),
    (CellConfig(loss="mse", loss_params={"rebalance": True}), "rebalance"),
    (CellConfig(loss="l1", loss_params={"delta": 0.5}), "delta"),
])
def test_configuration_with_a_parameter_nobody_takes_is_invalid(cfg, needle):
    with pytest.raises(ValueError, match=needle):
        cfg.validate()


def test_run_wide_loss_parameters_reach_the_cells_whose_loss_takes_them():
    """``--set loss_params.rebalance=true`` on the losses grid: the kl cells get it, the others run as they were
    (their configuration, hence their hash and results, unchanged); a key no loss of the grid takes is an error."""
    from bench.config import grids
    from bench.config.cell import preset
    from bench.grid.plan import plan_jobs

    base = preset("quick")
    plain = {(j.cell, j.cfg.seed): j.cfg for j in plan_jobs(grids.get("losses"), base, [base.model], 1)}
    routed = {(j.cell, j.cfg.seed): j.cfg
              for j in plan_jobs(grids.get("losses"), base.replace(loss_params={"rebalance": True}), [base.model], 1)}
    assert plain.keys() == routed.keys()
    for k, cfg in routed.items():
        if cfg.loss == "kl":
            assert cfg.loss_params.get("rebalance") is True, k
        else:
            assert cfg == plain[k], k
    with pytest.raises(ValueError, match="no loss of the grid .* takes loss_params delta"):
        plan_jobs(grids.get("smoke"), base.replace(loss_params={"delta": 0.5}), [base.model], 1)
