"""Adapters that map student features to the teacher's shape (identity when shapes agree)."""

from torch import nn

__all__ = ["conv_adapter", "linear_adapter"]


def conv_adapter(in_channels: int, out_channels: int) -> nn.Module:
    """A 1x1 convolution from student to teacher channels, or identity if they are equal.

    Args:
        in_channels: student channels C_s.
        out_channels: teacher channels C_t.

    Returns:
        A module mapping (N, C_s, H, W) to (N, C_t, H, W).
    """
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


def linear_adapter(in_features: int, out_features: int, force: bool = False) -> nn.Module:
    """A linear map from student to teacher feature size, or identity if equal and not forced.

    Args:
        in_features: student feature size D_s.
        out_features: teacher feature size D_t.
        force: build a linear layer even when the sizes match (HEAD's adapters always exist).

    Returns:
        A module mapping (R, D_s) to (R, D_t).
    """
    if in_features == out_features and not force:
        return nn.Identity()
    return nn.Linear(in_features, out_features)
