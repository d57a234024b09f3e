"""The separable return decoder composes its first 1x1 with the projector's last: it must be the
same function, with the same gradients, as decoding the projection itself."""

import pytest
import torch

from featcache.distill.heads import Projector, ReturnDecoder


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
