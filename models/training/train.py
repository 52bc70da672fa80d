"""Training: stage 1 (LIIF base at full width) and stage 2 (AnySR rebuild, Algorithm 1), with exact resume.

One loop serves both stages; they differ only in how each batch's (scale, width) is drawn
(:func:`draw_scale_and_width`). Everything random comes from one data generator and the torch
global RNG, both checkpointed, so stopping and resuming reproduces the uninterrupted run bit for bit
(same machine, same thread count). Training state is stored as safetensors: no pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.anysr import AnySR, build_model
from models.devices import resolve_device
from models.prefix import restore_unused, snapshot_unused
from models.registry import resolve_spec
from models.spec import DEFAULT_SPEC, ModelSpec, migrate_flat_spec
from models.training.data import PatchSampler, TrainBatch
from models.widths import GROUP_COUNT, SCALE_GROUP_BOUNDS, WIDTHS, group_width

log = logging.getLogger("anysr.train")

#: Scale interval of each group for stage-2 sampling: the continuous version of the paper's S_t.
GROUP_INTERVALS: tuple[tuple[float, float], ...] = tuple(zip((1.0, *SCALE_GROUP_BOUNDS), (*SCALE_GROUP_BOUNDS, 4.0)))


@dataclass
class TrainConfig:
    """Every knob of a training run; read from YAML by ``anysr train --config``."""

    run_dir: str = "runs/stage1"
    data_dirs: list[str] = field(
        default_factory=lambda: ["../shared/datasets/train/T91", "../shared/datasets/train/BSD200"]
    )
    #: 1 = arbitrary-scale base (full width only); 2 = Algorithm 1 over the four widths.
    stage: int = 1
    #: Stage 2: model checkpoint (safetensors) of stage 1 to start from; ASE starts as identity.
    init_from: str | None = None
    #: Which parts ``init_from`` supplies: "all" (the whole model) or "encoder" (only the backbone, e.g.
    #: the shipped LIIF base's EDSR-baseline under a fresh Meta-SR or SRNO decoder: the paper's rows share
    #: their backbone recipe, and on our compute a trained backbone is the budget we cannot re-spend).
    init_parts: str = "all"
    #: Ignore ``init_from``'s ASE tensors: ASE restarts at identity (or the model has none). Lets a trained
    #: stage-2 file seed a stage-1 run or an ablation, as if it were a stage-1 base.
    init_drop_ase: bool = False
    #: The model, as a spec naming registered parts: ``{encoder: {name, args}, decoder: {name, args}}``.
    #: Omitted parts and arguments take the product defaults (EDSR-baseline + LIIF); stage 1 sets
    #: ``encoder: {name: edsr-baseline, args: {ase: false}}``.
    model: dict[str, Any] = field(default_factory=lambda: DEFAULT_SPEC.to_dict())
    batch_size: int = 8
    patch: int = 48
    queries: int = 2304
    steps: int = 10000
    lr: float = 2e-4
    lr_min: float = 1e-6
    #: Fraction of ``steps`` after which the learning rate follows a cosine down to ``lr_min``.
    decay_start: float = 0.75
    scale_min: float = 1.0
    scale_max: float = 4.0
    #: Algorithm 1's reset probability: train the full network instead of the group's subnet.
    reset_p: float = 0.6
    #: Stage 2: relative draw weight of each scale group (one per group, e.g. [2, 1, 1, 1] draws the
    #: x1.0-x1.75 group twice as often as each other). None: uniform, the paper's Algorithm 1. Lets a
    #: weak group (the narrowest subnet at small scales) get more of a fixed budget without more steps.
    group_weights: list[float] | None = None
    seed: int = 0
    bf16: bool = True
    channels_last: bool = True
    threads: int = 0
    #: "cpu", "cuda", "cuda:1", or "auto" (CUDA when present). On CUDA, fp32 runs (bf16: false) use TF32.
    device: str = "cpu"
    checkpoint_every_s: float = 300.0
    log_every: int = 25
    #: Fit the run to a time box: after a short calibration the run sets ``steps`` (then only a cap) so
    #: that its training loop ends after about this many seconds, lr decay included. Stored on resume.
    time_budget_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "spec" in data:  # configs written before the registry: flat EDSR-baseline + LIIF overrides
            if "model" in data:
                raise ValueError("give the model as 'model' ({encoder, decoder}); 'spec' is the old flat form")
            data["model"] = migrate_flat_spec(data.pop("spec")).to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}")
        config = cls(**data)
        if config.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {config.stage}")
        if config.stage == 2 and not config.init_from:
            raise ValueError("stage 2 needs init_from: a stage-1 checkpoint")
        if config.init_parts not in ("all", "encoder"):
            raise ValueError(f"init_parts must be 'all' or 'encoder', got {config.init_parts!r}")
        if not 0.0 <= config.reset_p <= 1.0:
            raise ValueError(f"reset_p must be in [0, 1], got {config.reset_p}")
        if config.group_weights is not None:
            weights = config.group_weights
            if len(weights) != GROUP_COUNT or any(not w >= 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(
                    f"group_weights must be {GROUP_COUNT} non-negative numbers with a positive sum, got {weights}"
                )
        resolve_spec(config.model_spec())  # unknown parts or arguments fail here, not after data loading
        return config

    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.model)

    def torch_device(self) -> torch.device:
        """The device named by ``device``; "auto" picks CUDA when it is available."""
        return resolve_device(self.device)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Constant, then a cosine from ``lr`` to ``lr_min`` over the last (1 - decay_start) of the run."""
    start = int(config.decay_start * config.steps)
    if step < start:
        return config.lr
    progress = min(1.0, (step - start) / max(1, config.steps - start))
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * progress))


def draw_scale_and_width(
    config: TrainConfig, generator: torch.Generator, widths: tuple[float, ...] = WIDTHS
) -> tuple[float, float]:
    """(scale, width) of the next batch. Stage 1: s ~ U(min, max) at full width. Stage 2 (Algorithm 1):
    group t uniform (or by ``group_weights``), s ~ U(interval of t), the model's width w_t for that group
    (``widths``), reset to full width with probability ``reset_p``. Uniform groups keep the exact draw
    sequence of runs made before ``group_weights`` existed."""
    draws = torch.rand(3, generator=generator).tolist()
    if config.stage == 1:
        return config.scale_min + draws[0] * (config.scale_max - config.scale_min), 1.0
    if config.group_weights is None:
        group = min(int(draws[0] * GROUP_COUNT), GROUP_COUNT - 1)
    else:
        group = pick_weighted(draws[0], config.group_weights)
    low, high = GROUP_INTERVALS[group]
    scale = low + draws[1] * (high - low)
    width = 1.0 if draws[2] < config.reset_p else group_width(group, widths)
    return scale, width


def pick_weighted(draw: float, weights: list[float]) -> int:
    """Index i with probability weights[i] / sum(weights), for a draw in [0, 1); zero weights never win."""
    target = draw * sum(weights)
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        if target < cumulative:
            return index
    return max(i for i, w in enumerate(weights) if w > 0)  # draw * total rounded up to the total


class BatchProducer:
    """Samples batches in a background thread, in strict order, tagging each with the generator state
    after it was drawn, so a checkpoint taken after consuming batch n resumes exactly at n + 1."""

    def __init__(
        self,
        sampler: PatchSampler,
        config: TrainConfig,
        generator: torch.Generator,
        device: torch.device | None = None,
        depth: int = 2,
        widths: tuple[float, ...] = WIDTHS,
        whole_grid: bool = False,
    ):
        self.sampler = sampler
        self.config = config
        self.generator = generator
        self.device = device
        self.widths = widths
        self.whole_grid = whole_grid
        self.items: queue.Queue[tuple[TrainBatch, float, torch.Tensor] | BaseException] = queue.Queue(depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="batch-producer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                scale, width = draw_scale_and_width(self.config, self.generator, self.widths)
                batch = self.sampler.sample(
                    self.config.batch_size, (scale, scale), self.generator, self.device, whole_grid=self.whole_grid
                )
                item = (batch, width, self.generator.get_state())
                while not self.stopped.is_set():
                    try:
                        self.items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # surfaced to the trainer on its next get()
            self.items.put(error)

    def next(self) -> tuple[TrainBatch, float, torch.Tensor]:
        item = self.items.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def _optimizer_tensors(optimizer: torch.optim.Adam, model: AnySR) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                tensors[f"optim.{names[id(param)]}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    return tensors


def _restore_optimizer(optimizer: torch.optim.Adam, model: AnySR, tensors: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        state = {
            key.rsplit(".", 1)[1]: value if key.endswith(".step") else value.to(param.device)
            for key, value in tensors.items()
            if key.rsplit(".", 1)[0] == f"optim.{name}"
        }
        if state:
            optimizer.state[param] = state


def save_train_state(
    path: Path, model: AnySR, optimizer: torch.optim.Adam, meta: dict[str, Any], generator_state: torch.Tensor
) -> None:
    """Write the whole training state atomically (tmp file + rename): a kill mid-write loses nothing."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer, model))
    tensors["rng.data"] = generator_state.clone()
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {"anysr.train_meta": json.dumps(meta), "anysr.spec": model.spec.to_json()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_train_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), json.loads(metadata["anysr.train_meta"])


def _adam_moments(optimizer: torch.optim.Adam) -> dict[torch.nn.Parameter, list[torch.Tensor]]:
    """Each parameter's Adam moments (absent before its first step)."""
    moments = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            moments[param] = [state[key] for key in ("exp_avg", "exp_avg_sq") if key in state]
    return moments


def train_step(
    model: AnySR, optimizer: torch.optim.Adam, batch: TrainBatch, width: float, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of Algorithm 1: a single forward of ``batch`` at ``width``, L1 loss, backward, Adam step.

    At a narrow width only the used prefix may move: gradients outside it are zero, but Adam would still
    move those weights on old momentum, so everything outside :meth:`AnySR.used_regions` (weights and both
    moments) is put back after the step. A ``grid`` decoder gets the batch's whole HR grid. The caller sets the learning rate. Returns the detached loss and
    prediction (B, Q, 3), for logging; both stay on the model's device, so a GPU step never waits on the host.
    """
    lr = batch.lr.contiguous(memory_format=torch.channels_last) if config.channels_last else batch.lr
    with torch.autocast(lr.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        prediction = model(lr, batch.coord, batch.cell, width, batch.scale, grid=batch.grid)
    loss = F.l1_loss(prediction.float(), batch.rgb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    saved = snapshot_unused(model, _adam_moments(optimizer), width) if width < 1.0 else []
    optimizer.step()
    if saved:
        restore_unused(saved, _adam_moments(optimizer))
    return loss.detach(), prediction.detach()


def build_initial_model(config: TrainConfig) -> AnySR:
    """Stage 1: fresh model, or warm-started from ``init_from`` (e.g. the shipped stage-1 base, when the
    run's own state file is gone; the optimiser then starts afresh). Stage 2: the stage-1 weights, ASE
    parameters at their identity init."""
    torch.manual_seed(config.seed)
    model = build_model(config.model_spec())
    if config.init_from:
        from models.checkpoint import load_weights_into

        # A stage-1 file has no ASE tensors; the rebuilt model's ASE then starts at its identity init.
        parts = None if config.init_parts == "all" else (config.init_parts,)
        load_weights_into(config.init_from, model, allow_missing_ase=True, parts=parts, drop_ase=config.init_drop_ase)
    return model


class _BudgetCalibration:
    """Measures the step rate in consecutive windows after a warm-up, reading the loss at each window's
    end so queued GPU work is counted.

    The first windows run slow (cuDNN autotunes each width's shapes on first sight, the allocator grows,
    the producer fills its queue): on an H200 the first window read 17 steps/s against a steady 29. So
    the step count is re-resolved after every window for as long as the learning rate is still
    constant; once the decay has begun the count is frozen, so the schedule never jumps.
    """

    WARMUP = 20
    WINDOW = 60
    #: Keep a little time in hand: checkpoints and rate drift happen after the measurement.
    SAFETY = 0.97

    def __init__(self, first_step: int, budget_s: float, cap: int) -> None:
        self.budget_s = budget_s
        self.cap = cap
        self.next_mark = first_step + self.WARMUP
        self.marked_at: float | None = None
        self.rate = 0.0
        self.resolved = False

    def observe(self, step: int, loss: torch.Tensor, elapsed_s: float, config: TrainConfig) -> int | None:
        """Call after each step with the loop's elapsed time; returns a new step count when one is due."""
        if step != self.next_mark:
            return None
        float(loss)  # wait for the queued work up to this step
        now = time.monotonic()
        measured, self.marked_at = self.marked_at, now
        self.next_mark = step + self.WINDOW
        if measured is None:
            return None
        self.rate = self.WINDOW / (now - measured)
        steps = min(self.cap, step + max(1, int(self.SAFETY * (self.budget_s - elapsed_s) * self.rate)))
        decay_from = min(int(config.decay_start * config.steps), int(config.decay_start * steps))
        if self.resolved and decay_from <= step:
            return None  # the decay has begun (or would have): keep the schedule as it is
        self.resolved = True
        return steps


def _install_stop_handler() -> threading.Event:
    """SIGTERM/SIGINT end the run after the current step, with a checkpoint.

    Background jobs start with SIGINT ignored, so SIGTERM is the dependable way to stop a detached
    run; the handler is only installed from the main thread (signals cannot be set elsewhere).
    """
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: stop.set())
    return stop


def train(config: TrainConfig, max_steps: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) training in ``config.run_dir``; returns the final metadata.

    ``max_steps`` stops early after that many steps in this call (for tests and time-boxed sessions);
    the learning-rate schedule still follows ``config.steps``. ``config.time_budget_s`` instead fixes
    ``steps`` from a measured step rate (:class:`_BudgetCalibration`), so the schedule ends in time.
    """
    from models.checkpoint import save_checkpoint

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    state_path = run_dir / "state.safetensors"
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    device = config.torch_device()
    if device.type == "cuda":
        # Fixed shapes every step (patch, queries): let cuDNN pick its fastest kernels once. An fp32 run
        # uses TF32 tensor cores; bf16 autocast (config.bf16) is the faster, lower-precision option.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_initial_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    meta: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "loss_ema": None, "width_counts": {}, "stage": config.stage}
    if state_path.exists():
        tensors, meta = load_train_state(state_path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _restore_optimizer(optimizer, model, {k: v for k, v in tensors.items() if k.startswith("optim.")})
        generator.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        log.info("resumed %s at step %d", state_path, meta["step"])
        if "steps" in meta:  # resolved from a time budget by the interrupted call
            config = dataclasses.replace(config, steps=meta["steps"])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()

    sampler = PatchSampler.from_folders(config.data_dirs, config.patch, config.queries)
    # Taken before the producer starts drawing: the state a checkpoint at this step must hold.
    last_generator_state = generator.get_state()
    producer = BatchProducer(
        sampler, config, generator, device, widths=model.widths, whole_grid=model.query_mode == "grid"
    )
    first_step = meta["step"]
    stop_at = config.steps if max_steps is None else min(config.steps, first_step + max_steps)
    started = time.monotonic()
    calibration = None
    if config.time_budget_s and "steps" not in meta:
        calibration = _BudgetCalibration(first_step, config.time_budget_s, config.steps)
    elapsed_before = meta["elapsed_s"]
    last_save = time.monotonic()
    progress = None
    if not quiet:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=meta["step"], dynamic_ncols=True, mininterval=2.0)

    # The loss EMA lives on the device and is read only when logging or saving, so steps queue back to back.
    loss_ema = None if meta["loss_ema"] is None else torch.tensor(meta["loss_ema"], device=device)

    logged_steps = config.steps

    def checkpoint() -> None:
        # The step count a time budget resolved belongs in the run's config record too.
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        meta["loss_ema"] = None if loss_ema is None else float(loss_ema)
        meta["elapsed_s"] = elapsed_before + time.monotonic() - started
        save_train_state(state_path, model, optimizer, meta, last_generator_state)
        info = {
            "stage": config.stage,
            "step": meta["step"],
            "elapsed_s": round(meta["elapsed_s"], 1),
            "config": dataclasses.asdict(config),
        }
        save_checkpoint(run_dir / "model.safetensors", model, training_info=info)

    stop_requested = _install_stop_handler()
    try:
        while meta["step"] < stop_at and not stop_requested.is_set():
            batch, width, last_generator_state = producer.next()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, meta["step"])
            value, prediction = train_step(model, optimizer, batch, width, config)
            meta["step"] += 1
            loss_ema = value.clone() if loss_ema is None else 0.98 * loss_ema + 0.02 * value
            key = f"{width:.1f}"
            meta["width_counts"][key] = meta["width_counts"].get(key, 0) + 1
            steps = None
            if calibration is not None:
                steps = calibration.observe(meta["step"], value, time.monotonic() - started, config)
            if calibration is not None and steps is not None and steps != meta.get("steps"):
                config = dataclasses.replace(config, steps=steps)
                stop_at = steps if max_steps is None else min(steps, first_step + max_steps)
                if "steps" not in meta or abs(steps - logged_steps) > 0.01 * logged_steps:  # not every window
                    logged_steps = steps
                    log.info(
                        "time budget %.0fs: %.2f steps/s measured, run set to %d steps",
                        config.time_budget_s,
                        calibration.rate,
                        steps,
                    )
                meta["steps"] = steps
                if progress is not None:
                    progress.total = steps
            if meta["step"] % config.log_every == 0:
                meta["loss_ema"] = float(loss_ema)
                mse = float(F.mse_loss(prediction.float().clamp(0, 1), batch.rgb))
                psnr = -10 * math.log10(max(mse, 1e-10))
                elapsed = elapsed_before + time.monotonic() - started
                log.info(
                    "step %d loss %.5f ema %.5f psnr %.2f scale %.2f width %.1f lr %.2e elapsed %.0fs",
                    meta["step"],
                    float(value),
                    meta["loss_ema"],
                    psnr,
                    batch.scale[0],
                    width,
                    optimizer.param_groups[0]["lr"],
                    elapsed,
                )
                if progress is not None:
                    progress.set_postfix(loss=f"{meta['loss_ema']:.4f}", psnr=f"{psnr:.2f}", refresh=False)
            if progress is not None:
                progress.update(1)
            if time.monotonic() - last_save >= config.checkpoint_every_s:
                checkpoint()
                last_save = time.monotonic()
    finally:
        producer.close()
        if progress is not None:
            progress.close()
        if meta["step"] > 0:
            checkpoint()
        if device.type == "cuda":
            log.info("peak CUDA memory %.0f MiB", torch.cuda.max_memory_allocated(device) / 2**20)
        log.info("stopped at step %d of %d after %.0fs", meta["step"], config.steps, meta["elapsed_s"])
    return meta
