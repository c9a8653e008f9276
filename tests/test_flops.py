import pytest
import torch
import torch.nn.functional as F

from speechllm.training.flops import flop_counter, flops_per_optimizer_step, matmul_peak

M, K, N = 8, 16, 32  # (m, k) inputs through a k -> n linear layer: one product is 2*m*k*n FLOPs


@pytest.mark.parametrize("weight_trains, expected_products", [(True, 3), (False, 2)])
def test_a_frozen_weight_gets_no_gradient_flops(weight_trains, expected_products):
    # Forward, gradient of the input, and (only when it trains) gradient of the weight: one product each.
    layer = torch.nn.Linear(K, N, bias=False).requires_grad_(weight_trains)
    x = torch.randn(M, K, requires_grad=True)
    with flop_counter() as counter:
        layer(x).sum().backward()
    assert counter.get_total_flops() == expected_products * 2 * M * K * N


def test_attention_on_a_cpu_is_counted_forward_and_backward():
    b, h, s, d = 2, 4, 16, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with flop_counter() as counter:
        out = F.scaled_dot_product_attention(q, k, v)
    forward = counter.get_total_flops()
    assert forward == 2 * (2 * b * h * s * s * d)  # q @ k^T, then scores @ v
    with flop_counter() as counter:
        out.sum().backward()
    # Five products (torch's formula for a flash kernel): the scores again, then the gradients of v, the scores,
    # q and k.
    assert counter.get_total_flops() == 5 * forward // 2


def test_flops_are_split_at_each_optimizer_step():
    layer = torch.nn.Linear(K, N, bias=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    with flops_per_optimizer_step() as steps:
        for rows in (M, 2 * M):
            layer(torch.randn(rows, K)).sum().backward()  # input needs no gradient: forward + weight gradient
            optimizer.step()
            optimizer.zero_grad()
        layer(torch.randn(M, K))  # after the last step: not a step
    assert steps == [2 * 2 * M * K * N, 2 * 2 * 2 * M * K * N]
    optimizer.step()  # the hook is gone once the block ends
    assert len(steps) == 2


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak(torch.float32, sizes=(64,), seconds=0.01) > 0
