"""DFAD's image generators (Fang et al., arXiv 1912.11006) and their mapping to detector inputs.

The generators end in ``tanh``, so they produce images in [-1, 1]. Detectors normalise raw
pixels themselves (``pixel_mean``/``pixel_std``, channel order ``input_format``), so
:func:`to_pixels` maps a generated batch to raw 0-255 pixels in a model's channel order, keeping
gradients; the model's own ``preprocess_image`` then normalises and pads them as it would a
loaded image. That way one generator serves a teacher and a student that normalise differently.
"""

from typing import Sequence, Tuple, Union

from torch import Tensor, nn

__all__ = ["GeneratorA", "GeneratorB", "to_pixels", "generated_inputs"]


def _as_hw(img_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = (int(s) for s in img_size)
    return h, w


class GeneratorA(nn.Module):
    """The small generator of DFAD's MNIST/CIFAR runs: linear, two upsample-conv blocks, tanh, BN.

    ``Linear(nz -> 2ngf·(s/4)²)`` -> BN -> [x2 nearest, conv3x3, BN, LeakyReLU(0.2)] x2 ->
    conv3x3 -> tanh -> ``BatchNorm2d(nc, affine=False)``. The final non-affine BN
    re-standardises each channel over the batch, which matches mean/std-normalised classifier
    inputs (its eval-mode output uses running statistics: only visualisation sees that).
    Default PyTorch init, as the official code.

    Args:
        nz: noise size; ngf: width (official 64); img_size: output side, a multiple of 4;
        nc: output channels.

    Shapes: ``z`` (N, nz) or (N, nz, 1, 1) -> (N, nc, img_size, img_size).
    """

    def __init__(self, nz: int = 100, ngf: int = 64, img_size: int = 32, nc: int = 1):
        super().__init__()
        if img_size % 4:
            raise ValueError(f"[GeneratorA] img_size must be a multiple of 4, got {img_size}")
        self.nz, self.init_size = nz, img_size // 4
        self.l1 = nn.Linear(nz, ngf * 2 * self.init_size**2)
        self.conv_blocks0 = nn.BatchNorm2d(ngf * 2)
        self.conv_blocks1 = nn.Sequential(
            nn.Conv2d(ngf * 2, ngf * 2, 3, padding=1),
            nn.BatchNorm2d(ngf * 2),
            nn.LeakyReLU(0.2),
        )
        self.conv_blocks2 = nn.Sequential(
            nn.Conv2d(ngf * 2, ngf, 3, padding=1),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, nc, 3, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(nc, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = self.l1(z.flatten(1)).view(z.shape[0], -1, self.init_size, self.init_size)
        x = nn.functional.interpolate(self.conv_blocks0(x), scale_factor=2)
        x = nn.functional.interpolate(self.conv_blocks1(x), scale_factor=2)
        return self.conv_blocks2(x)


class GeneratorB(nn.Module):
    """DFAD's DCGAN-style generator (Caltech101 / segmentation runs), for any multiple-of-32 size.

    ``Linear(nz -> 8ngf·h0·w0)`` (h0, w0 = size / 16) -> BN -> 4 x [ConvTranspose 4x4 stride 2
    (8ngf -> 4ngf -> 2ngf -> ngf -> ngf, no bias), BN, LeakyReLU(0.2)] -> conv3x3 -> tanh.
    Init as the official code: conv, transposed-conv and linear weights N(0, 0.02), biases 0,
    BN weights N(1, 0.02). Sides must be multiples of 32 (not only 16 as the original) so the
    images need no padding in a Detectron2 FPN (``size_divisibility`` 32).

    Args:
        nz: noise size (official 256); ngf: base width (official 64); img_size: side or (H, W);
        nc: output channels (RGB).

    Shapes: ``z`` (N, nz) or (N, nz, 1, 1) -> (N, nc, H, W) in [-1, 1], channels RGB.
    """

    def __init__(
        self,
        nz: int = 256,
        ngf: int = 64,
        img_size: Union[int, Sequence[int]] = 128,
        nc: int = 3,
    ):
        super().__init__()
        h, w = _as_hw(img_size)
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"[GeneratorB] img_size sides must be multiples of 32, got {(h, w)}")
        self.nz, self.init_hw = nz, (h // 16, w // 16)
        self.project = nn.Linear(nz, ngf * 8 * self.init_hw[0] * self.init_hw[1])
        self.bn0 = nn.BatchNorm2d(ngf * 8)
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf, ngf]
        blocks = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            blocks += [
                nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.main = nn.Sequential(*blocks, nn.Conv2d(ngf, nc, 3, padding=1), nn.Tanh())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z.flatten(1)).view(z.shape[0], -1, *self.init_hw)
        return self.main(self.bn0(x))


def to_pixels(images: Tensor, input_format: str = "RGB") -> Tensor:
    """Map generated RGB images in [-1, 1] to raw 0-255 pixels in a detector's channel order.

    Differentiable; the detector's ``preprocess_image`` then applies its own ``pixel_mean`` and
    ``pixel_std``, exactly as for a loaded image.

    Args:
        images: (N, 3, H, W) RGB in [-1, 1] (a generator's tanh output).
        input_format: "RGB" or "BGR" (a Detectron2 model's ``input_format``).

    Returns:
        (N, 3, H, W) float pixels in [0, 255].
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"[to_pixels] expected (N, 3, H, W) RGB images, got {tuple(images.shape)}")
    pixels = (images + 1.0) * 127.5
    if input_format == "BGR":
        return pixels.flip(1)
    if input_format != "RGB":
        raise ValueError(f"[to_pixels] input_format must be 'RGB' or 'BGR', got {input_format!r}")
    return pixels


def generated_inputs(images: Tensor, input_format: str = "RGB") -> list:
    """A Detectron2 ``batched_inputs`` list (no annotations) holding generated images.

    Args:
        images: (N, 3, H, W) RGB in [-1, 1].
        input_format: channel order of the model that will read ``"image"``.

    Returns:
        N dicts ``{"image": (3, H, W) 0-255 float, "height": H, "width": W, "input_format"}``;
        gradients flow from each image back to ``images``.
    """
    pixels = to_pixels(images, input_format)
    h, w = pixels.shape[-2:]
    return [
        {"image": p, "height": int(h), "width": int(w), "input_format": input_format}
        for p in pixels.unbind(0)
    ]
