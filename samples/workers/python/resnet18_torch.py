"""ResNet-18 image embeddings with PyTorch, as an InferPool worker.

    inferpool run photos/ --worker "python3 samples/workers/python/resnet18_torch.py" --devices cuda:0,1 --replicas 4

Each worker process loads its own model on its own device (InferPool sets CUDA_VISIBLE_DEVICES, so the
script uses cuda:0) and answers batches: an input is an image path, or a JSONL record with a "path". The
output is the 512 features before the classifier (torchvision's ResNet-18 with fc removed).

Weights: a state dict with torchvision's resnet18 key names (e.g. torchvision's resnet18-f37072fd.pth),
given as --weights FILE or INFERPOOL_WEIGHTS; without one, the weights are random with a fixed seed, so
every replica computes the same function (good for measuring speed, useless as features).

Needs torch, numpy and Pillow (Debian: python3-torch python3-pil); torchvision is not needed.
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inferpool_worker import serve  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resnet18_features():
    """torchvision's resnet18 layout (same parameter names), ending at the 512-wide average pool.

    torch is imported here, when the model is built, not when the script starts: with --prefork only the loader
    builds a model, so the other replica processes start without importing torch at all.
    """
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inputs, outputs, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(outputs)
            self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(outputs)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inputs != outputs:
                self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
            self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))
            self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))
            self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512, 1))
            self.avgpool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(self.avgpool(x), 1)

    return ResNet18Features()


def load_model(device, weights=None, threads=None):
    """The model on `device` ("cpu" or "cuda:N"), in eval mode."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = resnet18_features()
    if weights:
        state = torch.load(weights, map_location="cpu")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model.load_state_dict(state)
    target = "cuda:0" if device.startswith("cuda") else "cpu"  # CUDA_VISIBLE_DEVICES holds our one GPU
    if target.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    return model.eval().to(target), torch.device(target)


def decode(item):
    """An image path (or a record with "path") → a normalised 3x224x224 float array."""
    path = item["path"] if isinstance(item, dict) else item
    with Image.open(path) as image:
        image.draft("RGB", (320, 320))  # JPEG: decode at a reduced scale when the image is much larger
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize((max(224, round(image.width * scale)), max(224, round(image.height * scale))), Image.BILINEAR)
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
        pixels = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return pixels.transpose(2, 0, 1)


def embed(loaded, arrays):
    """A list of prepared arrays → a list of 512-float lists."""
    import torch

    model, device = loaded
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(arrays)).to(device, non_blocking=True)
        return model(batch).float().cpu().tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.environ.get("INFERPOOL_WEIGHTS"), help="torchvision resnet18 state dict")
    args = parser.parse_args()
    threads = int(os.environ.get("INFERPOOL_THREADS", "0")) or None
    decoders = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1)

    def load(device):
        return load_model(device, args.weights, threads)

    def infer(loaded, items):
        # Decode in parallel (Pillow releases the GIL); a bad image fails alone.
        prepared = list(decoders.map(_try_decode, items))
        good = [p for p in prepared if not isinstance(p, BaseException)]
        outputs = iter(embed(loaded, good) if good else [])
        return [p if isinstance(p, BaseException) else next(outputs) for p in prepared]

    serve(load, infer, name="resnet18-torch")


def _try_decode(item):
    try:
        return decode(item)
    except Exception as exc:  # noqa: BLE001 - reported as this item's error
        return exc


if __name__ == "__main__":
    main()
