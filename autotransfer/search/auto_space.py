"""The choices a search space leaves to ``auto``: which backbones and which input resolutions, from
the data (the images' native size), the machine (measured throughput of each backbone here, now,
under whatever load there is) and the budget. A space file that lists them pins them instead.

Rules (docs/search.md):
- resolutions come from a ladder (64–224 px on a CPU, up to 448 on a GPU) that goes up to the images'
  native shorter side and at least to 128 px (224 on a GPU); the cheap stage probes at the profile's
  size (data/resolution.py's ``profile_resolution``: the same for `profile` and `fit`) and at a
  second size: the largest whose feature extraction fits the budget, or the next smaller one;
- backbones are those whose weights are available (the user's weights directory, the offline zoo,
  the hub when it is reachable), measured on 16 images, taken fastest-first while their extraction
  at the first size fits: breadth first, since on real data the backbone matters more than the second
  size (clip art in gray at 128 px: logistic regression on tf_efficientnet_lite0's codes 0.643 against
  mobilenetv2_100's best probe 0.557, benchmarks/results/real-cpu); the probe stage takes the second
  size last, best backbone first, while the budget lasts. The reasons for every one left out are kept
  for the summary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from autotransfer.cpu_threads import use_free_cpus
from autotransfer.data.resolution import native_short_sides, profile_resolution
from autotransfer.errors import AutoTransferError, written_by_another_version
from autotransfer.models.weights import OFFLINE_ZOO, hub_reachable, offline_weights_available
from autotransfer.models.zoo import TORCHVISION_PREFIX, create_backbone
from autotransfer.report.search_choices import reasons_once
from autotransfer.search import planner
from autotransfer.settings import user_weights_dir
from autotransfer.transfer.profile import DEFAULT_BACKBONE

log = logging.getLogger(__name__)

LADDER = (64, 96, 128, 160, 192, 224, 288, 384, 448)  # multiples of 32 up to 224, as the profile's sizes
CPU_MAX, GPU_MAX = 224, 448  # px: what the device affords (shared/DESIGN.md: plan CPU runs at 64-128 px)
LADDER_FLOOR, LADDER_FLOOR_GPU = 128, 224  # px: the ladder reaches at least this far, whatever the images' size
EXTRACT_SHARE = 0.35  # of the budget, for extracting every (backbone, resolution) of the cheap stage
MAX_BACKBONES = 3  # at the reference budget; planner.scaled_plan adds one per doubling of the budget
SHORT_BUDGET = 60.0  # seconds: below it, `auto` takes the profiler's backbone without timing others (~2 s each)
SAMPLE = 16  # images timed per backbone
TIMING_NOISE = 0.10  # timings closer than this (relative) do not tell which backbone is faster
TIMING_ROUNDS = 3  # turns of timing every backbone; each keeps its fastest
# Strong ImageNet backbones worth trying when the hub is reachable (timm names).
HUB_BACKBONES = ("efficientnet_b0.ra_in1k", "convnext_tiny.fb_in22k_ft_in1k", "resnet50.a1_in1k")


@dataclass
class AutoChoice:
    """What ``auto`` resolved to, and why (for the summary and ``profile.json``)."""

    backbones: tuple[str, ...]
    resolutions: tuple[int, ...]
    native_side: int
    profile_resolution: int
    seconds_per_image: dict[str, float] = field(default_factory=dict)  # at the ladder's first rung
    skipped: dict[str, str] = field(default_factory=dict)  # backbone -> why it was left out
    resolutions_reason: str = ""

    @classmethod
    def from_json(cls, document: dict) -> AutoChoice:
        """The choice stored in a study (``to_json``); another version's fields are one clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise written_by_another_version("run's `auto` choice", unknown)
        return cls(**{**document, "backbones": tuple(document["backbones"]),
                      "resolutions": tuple(document["resolutions"])})  # fmt: skip

    def to_json(self) -> dict:
        return {
            "backbones": list(self.backbones),
            "resolutions": list(self.resolutions),
            "native_side": self.native_side,
            "profile_resolution": self.profile_resolution,
            "seconds_per_image": self.seconds_per_image,
            "skipped": self.skipped,
            "resolutions_reason": self.resolutions_reason,
        }


def native_side(data: str | Path, sample: int = 200, seed: int = 0) -> int:
    """Median shorter side (pixels) of up to ``sample`` of the images of ``data``, read from their headers
    (data/resolution.py's ``native_short_sides``); 224 when none can be read."""
    sides = native_short_sides(data, sample=sample, seed=seed)
    return int(np.median(sides)) if sides else 224


def resolution_ladder(native: int, cuda: bool, top: int | None = None) -> tuple[int, ...]:
    """The sizes worth trying for images of shorter side ``native``: the ladder up to the first rung at
    or above ``native``, and at least to ``LADDER_FLOOR`` (small images may gain from upsampling:
    pretrained filters expect ImageNet-sized objects; the probes measure whether they do). ``top``: the
    largest size the budget affords (search/planner.py's ``scaled_plan``; default the device's)."""
    top = top or (GPU_MAX if cuda else CPU_MAX)
    above = [s for s in LADDER if s >= native]
    cap = min(top, max(above[0] if above else top, LADDER_FLOOR_GPU if cuda else LADDER_FLOOR))
    return tuple(s for s in LADDER if s <= cap)


def choose_resolutions(
    ladder: tuple[int, ...], first: int, seconds_per_image: float, n_images: int, budget: float
) -> tuple[int, ...]:
    """``first`` and a second size that tells whether resolution matters: the largest rung above it
    whose extraction fits (``n_images`` at ``seconds_per_image`` measured at ``first``, scaled by
    pixels, within ``EXTRACT_SHARE`` / 2 of the budget: the other half is for more backbones), or
    else the rung below it (cheaper to fine-tune)."""

    def cost(size: int) -> float:
        return seconds_per_image * (size / first) ** 2 * n_images

    above = [s for s in ladder if s > first and cost(first) + cost(s) <= EXTRACT_SHARE / 2 * budget]
    below = [s for s in ladder if s < first]
    second = above[-1] if above else (below[-1] if below else None)
    return tuple(sorted({first, second} - {None}))


def resolutions_reason(sizes: tuple[int, ...], first: int, native: int, pinned: bool) -> str:
    """Why these sizes, in words (the summary's `auto` line)."""
    if pinned:
        return "sizes pinned by the search space"
    start = f"{first} px (the profiler's size for images of {native} px on this device)"
    second = next((s for s in sizes if s != first), None)
    if second is None:
        return f"{start} only: no other size on the ladder"
    if second > first:
        why = "the largest larger size whose feature extraction fits the budget"
    else:
        why = "no larger size's extraction fits the budget; the next smaller one is cheaper to fine-tune"
    return f"{start} and {second} px ({why}): the probes at both tell whether resolution matters"


def available_backbones(cuda: bool) -> list[str]:
    """Backbones with ImageNet weights here, in the order they are tried: the user's weights
    directory, the offline zoo, then (when reachable) strong hub models."""
    names: list[str] = []
    folder = user_weights_dir()
    if folder and folder.is_dir():
        names += sorted(p.stem for p in folder.iterdir() if p.suffix in (".safetensors", ".pth"))
    # The offline zoo's members once fetched (`autotransfer zoo fetch`), and the profiler's own one.
    names += [
        n
        for n in OFFLINE_ZOO
        if not n.startswith(TORCHVISION_PREFIX) and (offline_weights_available(n) or n == DEFAULT_BACKBONE)
    ]
    if hub_reachable():
        names += list(HUB_BACKBONES)
    return list(dict.fromkeys(names))


def time_backbones(
    names: list[str], pixels: np.ndarray, device: torch.device, rounds: int = TIMING_ROUNDS
) -> tuple[dict[str, float], dict[str, str]]:
    """Measured forward seconds per image of each backbone on ``pixels`` (N x S x S x 3 uint8), and
    the reason for each that could not run. After a warm-up, the backbones are timed in turns,
    ``rounds`` times, and each keeps its fastest: a burst of load then slows one turn of each rather
    than every turn of one, so it does not rank backbones wrongly. Timed with the threads the machine's
    load leaves free (cpu_threads.py), the ones the run's extraction will use."""
    use_free_cpus()
    batch = torch.from_numpy(np.array(pixels)).to(device).permute(0, 3, 1, 2).float()
    models: dict[str, torch.nn.Module] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            model = create_backbone(name, device=device).model.eval()
            with torch.inference_mode():
                model(batch)
            models[name] = model
        except (AutoTransferError, RuntimeError, ValueError) as error:
            failed[name] = str(error).splitlines()[0][:200]
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, model in models.items():
                tic = time.perf_counter()
                model(batch)
                times[name].append(time.perf_counter() - tic)
    return {name: min(t) / len(batch) for name, t in times.items()}, failed


def seconds_per_image(name: str, pixels: np.ndarray, device: torch.device) -> float:
    """``time_backbones`` of one backbone; raises what creating or running it raised."""
    measured, failed = time_backbones([name], pixels, device)
    if name in failed:
        raise AutoTransferError(f"Backbone {name} could not run here: {failed[name]}")
    return measured[name]


def left_out_by_count(name: str, measured: dict[str, float], chosen: list[str], max_backbones: int) -> str:
    """Why ``name`` is not a candidate when ``max_backbones`` faster ones are. Timings within
    ``TIMING_NOISE`` of the slowest one chosen do not say which is faster: then the words say so, and
    that the order of this one timing decided."""
    slowest = max(chosen, key=measured.get)
    if measured[name] <= measured[slowest] * (1 + TIMING_NOISE):
        return (f"timed within noise of {slowest} ({measured[name] * 1e3:.1f} vs {measured[slowest] * 1e3:.1f} ms "
                f"per image, under {TIMING_NOISE:.0%} apart); at most {max_backbones} backbones at this budget, so "
                "the order of this one timing decided")  # fmt: skip
    return (f"{max_backbones} backbones that timed faster on this machine now are candidates "
            f"already (at most {max_backbones} at this budget)")  # fmt: skip


def resolve_auto(
    backbones: tuple[str, ...],
    resolutions: tuple[int, ...],
    sample: np.ndarray,
    *,
    native: int,
    n_images: int,
    budget: float,
    device: torch.device,
    shape: planner.SearchShape | None = None,
) -> AutoChoice:
    """Fill in ``auto`` (an empty tuple) backbones and/or resolutions; keep what the space pins.

    ``sample``: a few decoded images at ``profile_resolution([native])`` (data/resolution.py, the one
    rule `profile` and `fit` share); ``native``: the images' median
    shorter side. ``shape``'s ``max_backbones`` and ``max_resolution`` grow with the budget (planner.scaled_plan;
    None: ``MAX_BACKBONES``, no cap): at long budgets the slower, stronger backbones are not dropped and the
    sizes reach the images' native one.
    Raises AutoTransferError when no backbone with weights can run here.
    """
    cuda = device.type == "cuda"
    max_backbones, max_resolution = (shape.max_backbones, shape.max_resolution) if shape else (MAX_BACKBONES, None)
    names = list(backbones) or available_backbones(cuda)
    if not backbones and budget < SHORT_BUDGET:  # timing several backbones would eat the budget
        why = (f"{budget:.0f} s were left for the search, under {SHORT_BUDGET:.0f} s: one backbone, the others not "
               f"timed (a --time-budget of {SHORT_BUDGET + 30:.0f}s or more times them all)")  # fmt: skip
        names, skipped_all = [DEFAULT_BACKBONE], dict.fromkeys(names, why)
    else:
        skipped_all = {}
    skipped: dict[str, str] = {k: v for k, v in skipped_all.items() if k != DEFAULT_BACKBONE}
    measured, failed = time_backbones(names, sample[:SAMPLE], device)
    skipped.update(failed)
    if not measured:
        raise AutoTransferError(
            "No backbone with ImageNet weights could run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
            fix="run `autotransfer zoo fetch`, or put weights in $AUTOTRANSFER_WEIGHTS.",
        )
    first = profile_resolution([native], device=device)
    fastest = min(measured, key=measured.get)
    sizes = resolutions or choose_resolutions(
        resolution_ladder(native, cuda, max_resolution), first, measured[fastest], n_images, budget
    )
    why_sizes = resolutions_reason(tuple(sizes), first, native, pinned=bool(resolutions))
    if backbones:
        return AutoChoice(backbones=tuple(backbones), resolutions=tuple(sizes), native_side=native,
                          profile_resolution=first, seconds_per_image=measured, skipped=skipped,
                          resolutions_reason=why_sizes)  # fmt: skip
    scale = (min(sizes) / first) ** 2 * n_images  # each backbone's first (smallest) size: breadth first
    chosen: list[str] = []
    spent = 0.0
    for name in sorted(measured, key=measured.get):
        cost = measured[name] * scale
        if chosen and len(chosen) == max_backbones:
            skipped[name] = left_out_by_count(name, measured, chosen, max_backbones)
            continue
        if chosen and spent + cost > EXTRACT_SHARE * budget:
            # one sentence for every backbone it leaves out (said once for them all: report.search_choices)
            skipped[name] = (
                f"extracting their features would take the backbones' extraction past its share of the budget "
                f"({EXTRACT_SHARE:.0%}: {EXTRACT_SHARE * budget:.0f} s; the faster ones take {spent:.0f} s)"
            )
            continue
        chosen.append(name)
        spent += cost
    left_out = reasons_once(skipped)
    log.info("auto: backbones %s at %s px (native shorter side %d px)%s", chosen, list(sizes), native,
             f"; left out {left_out}" if left_out else "")  # fmt: skip
    return AutoChoice(backbones=tuple(chosen), resolutions=tuple(sizes), native_side=native, profile_resolution=first,
                      seconds_per_image=measured, skipped=skipped, resolutions_reason=why_sizes)  # fmt: skip
