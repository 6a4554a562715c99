"""DFAD's generators: shapes, init, and the mapping into each detector's own input space."""

import pytest
import torch
from detectron2.config import instantiate
from helpers import load_cfg

from d2kd.modeling import GeneratorA, GeneratorB, generated_inputs, to_pixels


@pytest.mark.parametrize("size", [64, (64, 96), (128, 32)])
def test_generator_b_shapes_and_range(size):
    g = GeneratorB(nz=16, ngf=8, img_size=size)
    out = g(torch.randn(4, 16, 1, 1))  # (N, nz, 1, 1) as the official code feeds it
    hw = (size, size) if isinstance(size, int) else size
    assert out.shape == (4, 3, *hw)
    assert out.min() >= -1 and out.max() <= 1


def test_generator_b_rejects_sizes_not_multiple_of_32():
    with pytest.raises(ValueError, match=r"multiples of 32, got \(48, 64\)"):
        GeneratorB(img_size=(48, 64))


@torch.no_grad()
def test_generator_b_dcgan_init():
    g = GeneratorB(nz=64, ngf=16, img_size=64)
    assert abs(float(g.project.weight.std()) - 0.02) < 2e-3
    assert float(g.project.bias.abs().max()) == 0
    bn = g.main[1]
    assert abs(float(bn.weight.mean()) - 1.0) < 0.02 and float(bn.bias.abs().max()) == 0


def test_generator_a_standardises_its_output():
    g = GeneratorA(nz=100, ngf=8, img_size=32, nc=1).train()
    out = g(torch.randn(64, 100)).detach()
    assert out.shape == (64, 1, 32, 32)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-2


def test_to_pixels_range_and_channel_order():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    rgb = to_pixels(x, "RGB")
    assert rgb[0, :, 0, 0].tolist() == [0.0, 127.5, 255.0]
    assert to_pixels(x, "BGR")[0, :, 0, 0].tolist() == [255.0, 127.5, 0.0]
    with pytest.raises(ValueError, match="'YUV'"):
        to_pixels(x, "YUV")


def test_generated_images_go_through_the_detector_normalisation_with_gradients():
    cfg = load_cfg()
    model = instantiate(cfg.model.student)
    model.pixel_mean.fill_(100.0)
    model.pixel_std.fill_(50.0)
    images = torch.zeros(2, 3, 64, 64, requires_grad=True)
    inputs = generated_inputs(images, model.input_format)
    assert len(inputs) == 2 and inputs[0]["height"] == 64
    normalised = model.preprocess_image(inputs).tensor
    assert torch.allclose(normalised, torch.full_like(normalised, (127.5 - 100.0) / 50.0))
    normalised.sum().backward()
    assert torch.allclose(images.grad, torch.full_like(images, 127.5 / 50.0))
