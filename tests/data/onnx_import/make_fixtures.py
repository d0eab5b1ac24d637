"""Make the ONNX fixtures of tests/test_onnx_import.py with PyTorch and pytorch-grad-cam.

Run once, outside CI (PyTorch is not a CI dependency):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch onnx onnxscript numpy opencv-python-headless \
        matplotlib scipy ttach tqdm
    /tmp/torchvenv/bin/pip install grad-cam --no-deps
    /tmp/torchvenv/bin/python tests/data/onnx_import/make_fixtures.py

For each tiny classifier (one per head kind) it writes ``NAME.onnx`` (``torch.onnx.export``) and
``NAME.npz``: ``images`` (N, H, W, 3) uint8 RGB, ``classes`` (the predicted class),
``logits`` and ``cam`` — pytorch-grad-cam's map at feature-map resolution, ReLU'd and not
normalised or resized (``get_cam_image`` on the layer whose output feeds the head) — plus
``method`` (``gradcam``/``hirescam``). The images are normalised with torchvision's ImageNet
mean/std, the default edgecam records for ONNX input.

pytorch-grad-cam imports torchvision (for two helpers GradCAM does not use) and scikit-learn
(for EigenCAM); when no torchvision wheel matches the installed torch, small stand-ins are
registered for those imports: the Grad-CAM maths is pytorch-grad-cam's own.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 24


def _stand_ins() -> None:
    try:
        import torchvision  # noqa: F401,PLC0415
        return
    except Exception:
        pass
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    for name in ("Compose", "Normalize", "ToTensor"):
        setattr(transforms, name, object)
    functional.resize = None
    tv.transforms, transforms.functional, tv.ops = transforms, functional, types.SimpleNamespace()
    sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})
    if "sklearn" not in sys.modules:
        sk = types.ModuleType("sklearn")
        decomposition = types.ModuleType("sklearn.decomposition")
        decomposition.KernelPCA = decomposition.NMF = object
        sk.decomposition = decomposition
        sys.modules.update({"sklearn": sk, "sklearn.decomposition": decomposition})


class Net(nn.Module):
    """Two strided convs (24 → 6 pixels), a ReLU whose output is explained, then ``head``."""

    def __init__(self, head: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1))
        self.explained = nn.ReLU()
        self.head = head
        self.channels_last = channels_last

    def forward(self, x):
        if self.channels_last:  # the ONNX input is then (N, H, W, 3)
            x = x.permute(0, 3, 1, 2)
        return self.head(self.explained(self.features(x)))


class ChannelsLastNorm(nn.Module):
    """torchvision ConvNeXt's LayerNorm2d: LayerNorm over the channels of an NCHW tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _gap(*layers):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *layers)


def _models():
    bn = nn.BatchNorm1d(16)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return {
        # name: (model, static batch, method)
        "gap_linear": (Net(_gap(nn.Linear(16, 5))), False, "gradcam"),
        "flatten_linear": (Net(nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 4))), True, "hirescam"),
        "flatten_gradcam": (Net(nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 4))), False, "gradcam"),
        "mlp": (Net(_gap(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 6))), False, "gradcam"),
        "bn_head": (Net(_gap(bn, nn.Linear(16, 5))), False, "gradcam"),
        "many_classes": (Net(_gap(nn.Linear(16, 100))), False, "gradcam"),
        "max_pool_mlp": (Net(nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 24),
                                           nn.Hardswish(), nn.Linear(24, 3))), False, "gradcam"),
        "nhwc_input": (Net(_gap(nn.Linear(16, 5)), channels_last=True), False, "gradcam"),
        # ConvNeXt's head: pooling, LayerNorm over the channels (a permute around nn.LayerNorm), Linear.
        "layernorm_head": (Net(nn.Sequential(nn.AdaptiveAvgPool2d(1), ChannelsLastNorm(16), nn.Flatten(),
                                             nn.Linear(16, 5))), False, "gradcam"),
        # nn.SiLU exports as x·Sigmoid(x): a Mul whose two inputs branch from one tensor.
        "silu_mlp": (Net(_gap(nn.Linear(16, 24), nn.SiLU(), nn.Linear(24, 5))), False, "gradcam"),
    }


def _images(n: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(rng.integers(0, 256, (4, 4, 3), np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
                     for _ in range(n)])


def _export(model: nn.Module, path: Path, static: bool, channels_last: bool) -> None:
    shape = (1, SIZE, SIZE, 3) if channels_last else (1, 3, SIZE, SIZE)
    dynamic = None if static else {"input": {0: "batch"}, "output": {0: "batch"}}
    torch.onnx.export(model, (torch.zeros(shape),), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)


def _reference(model: Net, x: torch.Tensor, method: str):
    _stand_ins()
    from pytorch_grad_cam import GradCAM, HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with torch.no_grad():
        logits = model(x).numpy()
    classes = logits.argmax(axis=-1)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    cls = HiResCAM if method == "hirescam" else GradCAM
    with cls(model=model, target_layers=[model.explained]) as cam:
        cam(input_tensor=x, targets=targets)  # runs the forward and backward hooks
        activations = cam.activations_and_grads.activations[0].cpu().numpy()
        grads = cam.activations_and_grads.gradients[0].cpu().numpy()
        raw = cam.get_cam_image(x, model.explained, targets, activations, grads, False)
    return np.maximum(raw, 0).astype(np.float32), classes, logits


def make(out_dir: Path = HERE, names=None) -> None:
    """Write ``NAME.onnx`` and ``NAME.npz`` for each model (all, or ``names``) into ``out_dir``."""
    torch.manual_seed(0)
    for index, (name, (model, static, method)) in enumerate(_models().items()):
        if names is not None and name not in names:
            continue
        model.eval()
        images = _images(6, seed=index)
        x = (images.astype(np.float32) / 255.0 - MEAN) / STD
        if not model.channels_last:
            x = x.transpose(0, 3, 1, 2)
        tensor = torch.from_numpy(np.ascontiguousarray(x))
        _export(model, Path(out_dir) / f"{name}.onnx", static, model.channels_last)
        cam, classes, logits = _reference(model, tensor, method)
        np.savez_compressed(Path(out_dir) / f"{name}.npz", images=images, classes=classes, logits=logits, cam=cam,
                            method=np.array(method))
        print(f"{name}: classes {classes.tolist()}, cam {cam.shape}, max {cam.max(axis=(1, 2)).round(3).tolist()}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: beside this script)")
    parser.add_argument("--names", help="comma-separated models to make (default: all)")
    args = parser.parse_args()
    make(args.out, args.names.split(",") if args.names else None)
