"""The world's autoencoder in ComfyUI's TAESD3 layout: an exact thumbnail encoder and a cheaply trained decoder.

ComfyUI's `taesd3` VAE reads two state dicts whose keys index a fixed stack of 64-channel 3x3 convolutions
(encoder `0` ... `14`, decoder `1` ... `19`, with Clamp, ReLU and Upsample layers in between); a residual
block computes ReLU(conv-ReLU-conv-ReLU-conv(x) + x) under the keys `<i>.conv.0|2|4`.

* Encoder: set, not trained. Its stride-2 convolutions average 2 x 2 pixels twice and then fold each 2 x 2
  neighbourhood into channels, its last convolution standardises, and its residual blocks are zero (so
  they pass the non-negative values on): the latent is the image's 16 x 16 RGB thumbnail, standardised per
  colour, as 12 channels of an 8 x 8 grid (`thumbnail_latent`), and 4 zero channels. A learned 8x encoder
  does not converge in minutes on a CPU; this one is exact from the start and smooth for the diffusion model.
* Decoder: trained as a *reduced* stack of the same order, `width` <= 64 channels wide with some residual
  blocks switched off, and written into the full layout exactly: channels past `width` get zero weights
  (they stay zero through every layer), a switched-off block gets zero convolutions (it becomes the ReLU it
  is trained as), and an untrained plain convolution the identity kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LATENT_CHANNELS = 16
SD3_SCALE, SD3_SHIFT = 1.5305, 0.0609
"""SD3's latent format: ComfyUI's VAE outputs and SaveLatent files hold x / SD3_SCALE + SD3_SHIFT of the model's x."""
THUMBNAIL_CHANNELS = 12
"""Latent channels that hold the thumbnail (3 colours x 2 x 2 positions); the rest are zero."""
DOWNSCALE = 8
FULL_WIDTH = 64
# the layer index of every residual block of each resolution level (encoder: 64, 32, 16, 8 px;
# decoder: 8, 16, 32, 64 px), and of the plain convolutions: index -> (role, stride, has bias), where
# `in` reads the image or latent and `out` writes the latent or image
ENCODER_BLOCKS = ((1,), (3, 4, 5), (7, 8, 9), (11, 12, 13))
DECODER_BLOCKS = ((3, 4, 5), (8, 9, 10), (13, 14, 15), (18,))
ENCODER_CONVS = {0: ("in", 1, True), 2: ("mid", 2, False), 6: ("mid", 2, False), 10: ("mid", 2, False),
                 14: ("out", 1, True)}
DECODER_CONVS = {1: ("in", 1, True), 7: ("mid", 1, False), 12: ("mid", 1, False), 17: ("mid", 1, False),
                 19: ("out", 1, True)}
ENCODER_LENGTH, DECODER_LENGTH = 15, 20
DECODER_UPSAMPLE = (6, 11, 16)
DECODER_FULL_RES_CONV = 17


@dataclass(frozen=True)
class StackShape:
    """Which part of a TAESD3 stack is trained: its width, active blocks per level, and the last plain conv."""

    width: int = 32
    """Channels of every hidden layer (<= 64); the rest of the 64 are zero."""
    blocks: tuple[int, int, int, int] = (3, 2, 1, 0)
    """Active residual blocks per level, in the stack's order (decoder: 8 to 64 px, at most 3, 3, 3, 1;
    encoder: 64 to 8 px, at most 1, 3, 3, 3)."""
    full_res_conv: bool = True
    """Train the decoder's 64 px convolution (layer 17); False keeps it the identity."""

    def __post_init__(self) -> None:
        if not 1 <= self.width <= FULL_WIDTH:
            raise ValueError(f"width must be 1..{FULL_WIDTH}, got {self.width}")
        if len(self.blocks) != 4 or any(n < 0 for n in self.blocks):
            raise ValueError(f"blocks must give 4 counts of active blocks, got {self.blocks}")


FULL_DECODER = StackShape(FULL_WIDTH, (3, 3, 3, 1), True)
FULL_ENCODER = StackShape(FULL_WIDTH, (1, 3, 3, 3), True)


def _conv(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """TAESD's residual block: ReLU(conv-ReLU-conv-ReLU-conv(x) + x)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(width, width), nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, width))
        nn.init.zeros_(self.conv[4].weight)  # a new block starts as ReLU(x): deep stacks train faster and smoother
        nn.init.zeros_(self.conv[4].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


class Stack(nn.Module):
    """One side of TAESD3 (decoder or encoder) in the full layout's order; trained layers under their index,
    missing blocks computed as ReLU and a missing layer 17 as the identity."""

    def __init__(self, shape: StackShape, decoder: bool):
        super().__init__()
        self.shape, self.decoder = shape, decoder
        convs, levels = (DECODER_CONVS, DECODER_BLOCKS) if decoder else (ENCODER_CONVS, ENCODER_BLOCKS)
        outer, last = (LATENT_CHANNELS, 3) if decoder else (3, LATENT_CHANNELS)
        layers: dict[str, nn.Module] = {}
        for i, (role, stride, bias) in convs.items():
            if not (decoder and i == DECODER_FULL_RES_CONV and not shape.full_res_conv):
                layers[str(i)] = _conv(outer if role == "in" else shape.width, last if role == "out" else shape.width,
                                       stride, bias)
        for level, n in zip(levels, shape.blocks):
            if n > len(level):
                raise ValueError(f"this level of the {'decoder' if decoder else 'encoder'} has {len(level)} blocks, "
                                 f"not {n}: blocks must be at most {[len(lv) for lv in levels]}")
            for i in level[:n]:
                layers[str(i)] = Block(shape.width)
        self.layers = nn.ModuleDict(layers)
        self._blocks = {i for level in levels for i in level}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(DECODER_LENGTH if self.decoder else ENCODER_LENGTH):
            key = str(i)
            if key in self.layers:
                x = self.layers[key](x)
            elif i in self._blocks or (self.decoder and i == 2):
                x = torch.relu(x)
            elif self.decoder and i == 0:  # TAESD's soft clamp of the latent to (-3, 3)
                x = torch.tanh(x / 3) * 3
            elif self.decoder and i in DECODER_UPSAMPLE:
                x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return x


def _embed(w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`w` in the leading corner of a zero tensor of `shape`."""
    out = torch.zeros(shape, dtype=torch.float32)
    out[tuple(slice(0, n) for n in w.shape)] = w
    return out


def layout_shapes(decoder: bool) -> dict[str, tuple[int, ...]]:
    """Every key of ComfyUI's TAESD3 encoder or decoder file and its shape."""
    convs, levels = (DECODER_CONVS, DECODER_BLOCKS) if decoder else (ENCODER_CONVS, ENCODER_BLOCKS)
    outer, last = (LATENT_CHANNELS, 3) if decoder else (3, LATENT_CHANNELS)
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (role, _, bias) in convs.items():
        cout = last if role == "out" else FULL_WIDTH
        shapes[f"{i}.weight"] = (cout, outer if role == "in" else FULL_WIDTH, 3, 3)
        if bias:
            shapes[f"{i}.bias"] = (cout,)
    for i in (i for level in levels for i in level):
        for j in (0, 2, 4):
            shapes[f"{i}.conv.{j}.weight"] = (FULL_WIDTH, FULL_WIDTH, 3, 3)
            shapes[f"{i}.conv.{j}.bias"] = (FULL_WIDTH,)
    return dict(sorted(shapes.items()))


def full_state_dict(stack: Stack) -> dict[str, torch.Tensor]:
    """The stack's weights in ComfyUI's TAESD key layout, 64 channels wide and every block present: same function.
    Absent blocks are zero; an absent plain convolution (layer 17) is the identity kernel."""
    trained = {f"{k.removeprefix('layers.')}": v.detach() for k, v in stack.state_dict().items()}
    sd = {}
    for key, shape in layout_shapes(stack.decoder).items():
        if key in trained:
            sd[key] = _embed(trained[key], shape)
        elif key == f"{DECODER_FULL_RES_CONV}.weight":
            sd[key] = torch.zeros(shape)
            sd[key][torch.arange(FULL_WIDTH), torch.arange(FULL_WIDTH), 1, 1] = 1.0
        else:
            sd[key] = torch.zeros(shape)
    return sd


def load_stack(state_dict: dict[str, torch.Tensor], decoder: bool) -> Stack:
    """The full 64-wide stack with every block, from a TAESD3 state dict (to run the files here)."""
    stack = Stack(FULL_DECODER if decoder else FULL_ENCODER, decoder)
    stack.load_state_dict({f"layers.{k}": v.float() for k, v in state_dict.items()})
    return stack.eval()


def thumbnail_latent(image_bchw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """What the thumbnail encoder computes for images in [0, 1]: [B, 16, H/8, W/8]."""
    thumb = nn.functional.avg_pool2d(image_bchw, 4)
    z = nn.functional.pixel_unshuffle((thumb - mean[:, None, None]) / std[:, None, None], 2)
    return nn.functional.pad(z, (0, 0, 0, 0, 0, LATENT_CHANNELS - THUMBNAIL_CHANNELS))


def thumbnail_encoder_state_dict(mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    """The TAESD3 encoder whose function is `thumbnail_latent` with per-colour `mean` and `std` [3]."""
    sd = {key: torch.zeros(shape) for key, shape in layout_shapes(decoder=False).items()}
    rgb = torch.arange(3)
    sd["0.weight"][rgb, rgb, 1, 1] = 1.0  # copy the colours; the zero blocks' ReLU keeps them (they are >= 0)
    for key in ("2.weight", "6.weight"):  # stride 2 reads rows/cols 2i-1, 2i, 2i+1: taps 1, 2 are one 2 x 2 cell
        sd[key][rgb, rgb, 1:3, 1:3] = 0.25
    for dy in (0, 1):  # fold 2 x 2 into channels in pixel_unshuffle's order c * 4 + dy * 2 + dx
        for dx in (0, 1):
            sd["10.weight"][rgb * 4 + dy * 2 + dx, rgb, 1 + dy, 1 + dx] = 1.0
    k = torch.arange(THUMBNAIL_CHANNELS)
    sd["14.weight"][k, k, 1, 1] = 1.0 / std[k // 4].float()
    sd["14.bias"][k] = -mean[k // 4].float() / std[k // 4].float()
    return sd
