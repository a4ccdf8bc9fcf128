import torch
from compressai.models import MeanScaleHyperprior

from icmh_hub.demo.codec_training import train_codec
from icmh_hub.demo.proxy import SHAPES, make_proxy


def test_proxy_set_is_seeded_and_labelled_consistently():
    a, b = make_proxy(12, 48, seed=3), make_proxy(12, 48, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, make_proxy(12, 48, seed=4).images)
    assert a.images.shape == (12, 3, 48, 48) and 0 <= a.images.min() and a.images.max() <= 1
    for label, mask, box in zip(a.labels, a.masks, a.boxes):
        assert set(mask.unique().tolist()) == {0, int(label) + 1}
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # backgrounds carry most of the pixels and none of the task
    assert (a.masks > 0).float().mean() < 0.25
    assert set(a.labels.tolist()) <= set(range(len(SHAPES)))


def test_mse_codec_training_lowers_the_rate_distortion_loss():
    torch.manual_seed(0)
    images = make_proxy(16, 64, seed=0).images
    model = MeanScaleHyperprior(16, 24)
    log = []
    train_codec(model, lambda step: images[(step % 2) * 8 : (step % 2) * 8 + 8], 0.0067, 40, lr=1e-3,
                log=lambda step, record: log.append(record.loss))
    assert sum(log[-5:]) / 5 < 0.5 * sum(log[:5]) / 5
    assert not model.training
    strings = model.compress(images[:1])["strings"]
    assert model.decompress(strings, [1, 1])["x_hat"].shape == (1, 3, 64, 64)
