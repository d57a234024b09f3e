"""The separable return decoder composes its first 1x1 with the projector's last: it must be the
same function, with the same gradients, as decoding the projection itself."""

import pytest
import torch
import torch.nn.functional as F

from featcache.distill.heads import Projector, ReturnDecoder, pointwise


@pytest.mark.parametrize("kind", ["separable", "conv3x3"])
def test_return_decoder_decodes_the_projection(kind):
    torch.manual_seed(0)
    projector, decoder = Projector(6, 10, kind), ReturnDecoder(10, 6, kind)
    x = torch.randn(2, 6, 5, 5)

    def grads(composed: bool):
        projector.zero_grad()
        decoder.zero_grad()
        projection, hidden = projector(x)
        if composed:
            recon = decoder(projection, hidden, projector)
        else:
            recon = decoder.rest(decoder.first(projection))
        (recon.square().sum() + projection.sum()).backward()
        params = [*projector.parameters(), *decoder.parameters()]
        return recon.detach(), [p.grad.clone() for p in params]

    recon, g = grads(True)
    expected, g_expected = grads(False)
    torch.testing.assert_close(recon, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(g, g_expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_projector_shapes():
    projection, hidden = Projector(6, 10, "separable")(torch.randn(2, 6, 5, 5))
    assert projection.shape == (2, 10, 5, 5) and hidden.shape == (2, 6, 5, 5)


@pytest.mark.parametrize("with_bias", [True, False])
def test_pointwise_is_a_1x1_convolution(with_bias):
    """The heads' 1x1 layers run as batched matrix products: same values, same gradients."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 6, requires_grad=True)
    weight = torch.randn(7, 5, 1, 1, requires_grad=True)
    bias = torch.randn(7, requires_grad=True) if with_bias else None
    leaves = [x, weight] + ([bias] if with_bias else [])
    g = torch.randn(3, 7, 4, 6)

    def run(f):
        for t in leaves:
            t.grad = None
        out = f(x, weight, bias)
        out.backward(g)
        return out.detach(), [t.grad.clone() for t in leaves]

    out, grads = run(pointwise)
    expected, expected_grads = run(F.conv2d)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
