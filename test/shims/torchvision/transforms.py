"""ToTensor, Normalize and CenterCrop with torchvision's semantics (test-only; see test/shims/README.md)."""
import numpy as np
import torch


class ToTensor:
    """PIL image / HxWxC uint8 array -> CxHxW float32 in [0, 1]."""

    def __call__(self, pic):
        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return t.to(dtype=torch.get_default_dtype()).div(255) if t.dtype == torch.uint8 else t


class Normalize:
    """(x - mean) / std per channel."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, t):
        mean = torch.as_tensor(self.mean, dtype=t.dtype, device=t.device)
        std = torch.as_tensor(self.std, dtype=t.dtype, device=t.device)
        return t.sub(mean[:, None, None]).div(std[:, None, None])


class CenterCrop:
    """Centre crop of the last two dimensions to (h, w)."""

    def __init__(self, size):
        self.h, self.w = (size, size) if isinstance(size, int) else size

    def __call__(self, t):
        H, W = t.shape[-2:]
        top, left = int(round((H - self.h) / 2.0)), int(round((W - self.w) / 2.0))
        return t[..., top:top + self.h, left:left + self.w]
