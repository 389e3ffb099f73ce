"""Network families the zoo lacks, each a small torch model with seeded random weights,
exported to ONNX and timed on cpu against ONNX Runtime (`anychip bench --against ort`).

    python scripts/probe_families.py [--only convnext,mbv2] [--keep DIR]

They found the importer's layout blockers (docs/performance.md, tenth session): a ReLU6 that
TVM imported as TE kernels, LeakyReLU and Mish without a layout rule, GroupNorm exported as
reshapes; ConvTranspose after a convolution did not compile (unet_up, dcgan, style); reflect pads kept NCHW (style). Each line: the family, anychip's and ONNX Runtime's steady-state ms and the ratio
(each from one interleaved `bench` run; the machine's load is printed before and after).
Weights are random: these time the operators, not a trained network's accuracy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path


def _models():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class ConvNeXtBlock(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
            self.norm = nn.LayerNorm(d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.gamma = nn.Parameter(torch.full((d,), 0.1))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))) * self.gamma
            return x + y.permute(0, 3, 1, 2)

    def convnext():
        dims, layers = [48, 96, 192, 384], []
        for i, d in enumerate(dims):
            layers += ([nn.Conv2d(dims[i - 1], d, 2, 2)] if i else []) + [ConvNeXtBlock(d),
                                                                       ConvNeXtBlock(d)]
        return nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), *layers, nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(dims[-1], 1000))

    class InvertedResidual(nn.Module):   # MobileNet-v2's block, ReLU6
        def __init__(self, c, e=6):
            super().__init__()
            h = c * e
            self.body = nn.Sequential(
                nn.Conv2d(c, h, 1), nn.BatchNorm2d(h), nn.ReLU6(),
                nn.Conv2d(h, h, 3, padding=1, groups=h), nn.BatchNorm2d(h), nn.ReLU6(),
                nn.Conv2d(h, c, 1), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.body(x)

    def mobilenet_v2():
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU6(), InvertedResidual(32),
            nn.Conv2d(32, 64, 3, 2, 1), InvertedResidual(64), InvertedResidual(64),
            nn.Conv2d(64, 96, 3, 2, 1), InvertedResidual(96), InvertedResidual(96),
            nn.Conv2d(96, 160, 3, 2, 1), InvertedResidual(160), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(160, 1000))

    class Residual(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return torch.relu(x + self.body(x))

    def regnet():   # grouped 3x3 convolutions, 8 channels a group
        def block(c):
            return Residual(nn.Sequential(
                nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1, groups=c // 8), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)))
        return nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1), block(48), nn.Conv2d(48, 104, 3, 2, 1),
                             block(104), nn.Conv2d(104, 208, 3, 2, 1), block(208),
                             nn.Conv2d(208, 440, 3, 2, 1), block(440), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(440, 1000))

    class WindowAttention(nn.Module):   # Swin's windows: 64 windows of 49 tokens
        def __init__(self, d=96, heads=3):
            super().__init__()
            self.att = nn.MultiheadAttention(d, heads, batch_first=True)
            self.norm = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            for _ in range(4):
                y = self.norm(x)
                x = x + self.att(y, y, y, need_weights=False)[0]
                x = x + self.mlp(self.norm(x))
            return x

    def text_encoder():   # CLIP's text tower shape: 77 tokens
        layer = nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True, norm_first=True,
                                           dropout=0.0)
        return nn.TransformerEncoder(layer, 4)

    class UNetResBlock(nn.Module):   # a diffusion U-Net's: GroupNorm(32) + SiLU + conv, twice
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(32, c), nn.Conv2d(c, c, 3, padding=1)
            self.n2, self.c2 = nn.GroupNorm(32, c), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            h = self.c1(nn.functional.silu(self.n1(x)))
            return x + self.c2(nn.functional.silu(self.n2(h)))

    def unet_block():
        return nn.Sequential(nn.Conv2d(4, 128, 3, padding=1), UNetResBlock(128),
                             UNetResBlock(128))

    def yolo_neck():   # LeakyReLU and Mish activations, a x2 nearest upsampling
        return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.LeakyReLU(0.1),
                             nn.Conv2d(32, 64, 3, 2, 1), nn.Mish(),
                             nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(64, 32, 3, 1, 1), nn.LeakyReLU(0.1))

    class UNetUp(nn.Module):   # a U-Net decoder stage: 2x2/2 ConvTranspose, skip concat
        def __init__(self, c):
            super().__init__()
            self.up = nn.ConvTranspose2d(2 * c, c, 2, 2)
            self.conv = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.BatchNorm2d(c),
                                      nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU())

        def forward(self, x, skip):
            return self.conv(torch.cat([self.up(x), skip], 1))

    class UNetDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.ModuleList([nn.Conv2d(3, 32, 3, padding=1),
                                       nn.Conv2d(32, 64, 3, 2, 1), nn.Conv2d(64, 128, 3, 2, 1),
                                       nn.Conv2d(128, 256, 3, 2, 1)])
            self.ups = nn.ModuleList([UNetUp(128), UNetUp(64), UNetUp(32)])

        def forward(self, x):
            skips = []
            for conv in self.down:
                x = torch.relu(conv(x))
                skips.append(x)
            for up, skip in zip(self.ups, reversed(skips[:-1])):
                x = up(x, skip)
            return x

    def dcgan():   # a DCGAN generator's upsampling: 4x4/2 pad 1 transposed convolutions
        layers, c = [nn.Conv2d(64, 256, 3, padding=1)], 256
        for _ in range(3):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        return nn.Sequential(*layers, nn.Conv2d(c, 3, 3, padding=1), nn.Tanh())

    class StyleResidual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c, affine=True),
                nn.ReLU(), nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3),
                nn.InstanceNorm2d(c, affine=True))

        def forward(self, x):
            return x + self.body(x)

    def style_transfer():   # Johnson et al.'s network: reflect pads, instance norms, upsampling
        def down(a, b, k, s):
            return [nn.ReflectionPad2d(k // 2), nn.Conv2d(a, b, k, s),
                    nn.InstanceNorm2d(b, affine=True), nn.ReLU()]
        return nn.Sequential(*down(3, 32, 9, 1), *down(32, 64, 3, 2), *down(64, 128, 3, 2),
                             *[StyleResidual(128) for _ in range(3)],
                             nn.ConvTranspose2d(128, 64, 3, 2, 1, output_padding=1),
                             nn.InstanceNorm2d(64, affine=True), nn.ReLU(),
                             nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
                             nn.InstanceNorm2d(32, affine=True), nn.ReLU(),
                             nn.ReflectionPad2d(4), nn.Conv2d(32, 3, 9))

    def espcn():   # super-resolution by sub-pixel convolution: PixelShuffle (DepthToSpace)
        return nn.Sequential(nn.Conv2d(3, 64, 5, padding=2), nn.Tanh(),
                             nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
                             nn.Conv2d(32, 3 * 9, 3, padding=1), nn.PixelShuffle(3))

    image = (1, 3, 224, 224)
    return {"convnext": (convnext, image), "mbv2": (mobilenet_v2, image),
            "regnet": (regnet, image), "swin": (WindowAttention, (64, 49, 96)),
            "text77": (text_encoder, (1, 77, 256)), "unet_block": (unet_block, (1, 4, 64, 64)),
            "yolo_neck": (yolo_neck, image), "unet_up": (UNetDecoder, (1, 3, 128, 128)),
            "dcgan": (dcgan, (1, 64, 8, 8)), "style": (style_transfer, (1, 3, 128, 128)),
            "espcn": (espcn, (1, 3, 128, 128))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated families (default: all)")
    parser.add_argument("--keep", help="folder to keep the exported models in")
    args = parser.parse_args(argv)
    import torch

    models = _models()
    names = args.only.split(",") if args.only else list(models)
    unknown = [n for n in names if n not in models]
    if unknown:
        print(f"probe_families: unknown families {unknown}; known: {', '.join(models)}",
              file=sys.stderr)
        return 2
    folder = Path(args.keep or tempfile.mkdtemp(prefix="anychip-probe-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for name in names:
        build, shape = models[name]
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():   # the exporter's own deprecation chatter
            warnings.simplefilter("ignore")
            torch.onnx.export(build().eval(), (torch.randn(*shape),), str(path), dynamo=True,
                              opset_version=18, verbose=False)
        run = subprocess.run([sys.executable, "-m", "anychip.compiler.cli.main", "bench",
                              str(path), "--target", "cpu", "--against", "ort"],
                             capture_output=True, text=True)
        rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()
                if line.split()[:1] in (["anychip"], ["ort"])}
        if run.returncode or "anychip" not in rows or "ort" not in rows:
            print(f"{name}: bench failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}",
                  flush=True)
            continue
        ours, theirs = float(rows["anychip"][2]), float(rows["ort"][2])
        print(f"{name:12s} anychip {ours:8.2f} ms  ort {theirs:8.2f} ms  "
              f"{ours / theirs:.2f}x", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
