"""The per-iteration optimizer reset (rl.optim.reset_optimizer_state): hand-computed AdamW steps after each scope."""
from __future__ import annotations

import pytest
import torch

from kimi_rl.rl.optim import reset_optimizer_state


def _adamw_after(grads: list[float], scope: str | None) -> tuple[torch.Tensor, torch.optim.AdamW]:
    """One weight at 0, AdamW (lr 0.1, no decay) stepped on each gradient; the reset (if any) before the last."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.0, eps=0.0)
    for i, g in enumerate(grads):
        if scope is not None and i == len(grads) - 1:
            reset_optimizer_state(opt, scope)
        w.grad = torch.tensor([g])
        opt.step()
    return w.detach(), opt


def test_a_full_reset_makes_the_next_step_sign_like_and_a_momentum_reset_keeps_it_gradient_sized() -> None:
    w0, _ = _adamw_after([1.0, 1.0], None)
    # two steps on g = 1, fresh: each m_hat / sqrt(v_hat) = 1, so w = -0.1 - 0.1
    assert w0.item() == pytest.approx(-0.2)
    # g = 1 then a reset then g = 0.01: a full reset forgets v, so the tiny gradient still moves w by lr
    w_all, opt = _adamw_after([1.0, 0.01], "all")
    assert w_all.item() == pytest.approx(-0.1 - 0.1)
    assert opt.state[opt.param_groups[0]["params"][0]]["step"].item() == 1  # the step count restarted
    # momentum: m = 0.1 * 0.01 = 0.001, m_hat = 0.001 / (1 - 0.9^2) = 0.005263;
    # v = 0.999 * 0.001 + 0.001 * 1e-4 = 0.0010991, v_hat = v / (1 - 0.999^2) = 0.549825; step = 0.1 * m_hat / sqrt(v_hat)
    w_m, opt = _adamw_after([1.0, 0.01], "momentum")
    m_hat = 0.1 * 0.01 / (1 - 0.9**2)
    v_hat = (0.999 * 0.001 + 0.001 * 0.01**2) / (1 - 0.999**2)
    assert w_m.item() == pytest.approx(-0.1 - 0.1 * m_hat / v_hat**0.5, rel=1e-5)
    assert abs(w_m.item() + 0.1) < 0.001  # a step under 1% of the full reset's
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["step"].item() == 2 and state["exp_avg_sq"].item() == pytest.approx(0.999 * 0.001 + 1e-7)


def test_a_momentum_reset_zeroes_sgds_buffer_and_a_bad_scope_is_an_error() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    w.grad = torch.tensor([1.0])
    opt.step()
    reset_optimizer_state(opt, "momentum")
    assert opt.state[w]["momentum_buffer"].item() == 0.0
    with pytest.raises(ValueError, match="algo.reset_scope"):
        reset_optimizer_state(opt, "half")
