import torch
import torch.nn.functional as F

from featcache.distill.model import DistillModel
from featcache.distill.targets import Target
from featcache.manifest import DistillSpec, StudentConfig
from featcache.student import Student

TINY = StudentConfig(encoder="mobilenetv3_small_050", encoder_weights=None,
                     decoder_channels=[32, 16, 16, 8, 8])


def test_gate_prefers_the_teacher_whose_features_explain_the_mask():
    """Teacher `good` carries the mask in its features, teacher `noise` is random: the gate must
    learn to weight `good` higher (the demo's real-vs-uninformative question, in miniature)."""
    torch.manual_seed(0)
    targets = [Target("good", "f", 4, (8, 8), "dec3"), Target("noise", "f", 4, (8, 8), "dec3")]
    model = DistillModel(Student(TINY), targets, DistillSpec(), num_datasets=1)
    heads = [p for n, p in model.named_parameters() if n.startswith(("probes.", "gates."))]
    others = [p for n, p in model.named_parameters() if not n.startswith(("probes.", "gates."))]
    opt = torch.optim.Adam([{"params": others, "lr": 1e-3}, {"params": heads, "lr": 1e-2}])
    weights = []
    for _ in range(60):
        image = torch.rand(8, 3, 32, 32)
        mask = (F.avg_pool2d(image[:, :1], 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
                > 0.5).float()
        small = F.adaptive_avg_pool2d(mask, (8, 8))
        good = torch.cat([4 * small - 2, torch.randn(8, 3, 8, 8) * 0.1], dim=1)
        teacher = {"good/f@dec3": good, "noise/f@dec3": torch.randn(8, 4, 8, 8)}
        valid = {k: torch.ones(8, 1, 8, 8) for k in teacher}
        out = model(image, mask, torch.zeros(8, dtype=torch.long), teacher, valid)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        weights.append(out["gates"]["dec3"].mean(0))
    late = torch.stack(weights[-10:]).mean(0)
    assert late[0] > 0.65 > late[1], late
