"""Sites: where features live. `conditioning` (SD3.5's prompt embedding [L, 4096] plus pooled [2048]) or
`joint_blocks.{i}.txt|img` (the text or image stream output of MMDiT joint block i)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import ShapeMismatchError, SSAEError

Stream = Literal["txt", "img"]
_SITE = re.compile(r"^joint_blocks\.(\d+)\.(txt|img)$")


@dataclass(frozen=True)
class Site:
    """`conditioning`, or joint block `block`'s `stream` output."""

    block: int | None = None
    stream: Stream | None = None

    @property
    def is_conditioning(self) -> bool:
        return self.block is None

    def __str__(self) -> str:
        return "conditioning" if self.is_conditioning else f"joint_blocks.{self.block}.{self.stream}"


def parse_site(site: str) -> Site:
    """'conditioning' or 'joint_blocks.7.txt' -> Site; anything else is an error listing the forms."""
    if site == "conditioning":
        return Site()
    m = _SITE.match(site)
    if not m:
        raise SSAEError(f"unknown site {site!r}: use 'conditioning' or 'joint_blocks.<i>.txt' / 'joint_blocks.<i>.img'")
    return Site(int(m.group(1)), m.group(2))  # type: ignore[arg-type]


def check_block_site(site: Site, depth: int, hidden: int, feature_width: int) -> None:
    """Refuse a block site the model does not have, or one whose width is not the model's hidden size."""
    if site.is_conditioning:
        raise SSAEError("this SSAE was trained on the conditioning: use SSAEApplyConditioning, not a block patch")
    if not 0 <= site.block < depth:
        raise ShapeMismatchError(f"site {site} does not exist: this model has joint blocks 0..{depth - 1}")
    if site.stream == "txt" and site.block == depth - 1:
        raise ShapeMismatchError(f"site {site}: the last joint block's text stream is not computed by SD3 "
                                 f"(pre_only); use joint_blocks.{depth - 1}.img or an earlier block's txt")
    if feature_width != hidden:
        raise ShapeMismatchError(f"this SSAE was trained on features {feature_width} wide, but the model's hidden size "
                                 f"is {hidden}: it belongs to another model (SD3.5 Medium is 1536, Large 2432)")
