"""The language-model task end to end: text windows, the char transformer, bits per character,
the CLI run and sampling from its checkpoint. Everything runs on a tiny corpus written here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_config import compose_with

from helpers import REPO, run_cli
from src import build
from src.common.errors import UserError
from src.data.idx import DataError
from src.data.text import TextWindows, build_loaders, decode, encode, read_corpus
from src.launch.distributed import World
from src.model.char_transformer import CharTransformer
from src.reporting.logger import read_metrics
from src.runner import Runner
from src.sample import main as sample_main
from src.task.language_model import LanguageModel, generate
from src.training.checkpoint import Checkpointer, CheckpointError, load_checkpoint
from src.training.options import RunnerOptions
from src.training.schedulers import one_cycle

BLOCK = 8


def tiny_text() -> str:
    """About 5k characters of small, regular Python: learnable in a few steps."""
    return "".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n" for i in range(160))


def tiny_overrides(corpus: Path, run_dir: Path) -> list[str]:
    """A language-model run on the tiny corpus with a tiny model: a few seconds."""
    return [
        "task=language_model",
        f"data.path={corpus}",
        f"data.block_size={BLOCK * 2}",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=16",
        "runner.max_epochs=2",
        "runner.log_every_n_steps=5",
        "runner.progress=log",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose corpus is deleted afterwards: sampling must not need it."""
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text(tiny_text())
    result = run_cli(*tiny_overrides(corpus, root / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    corpus.unlink()
    return root / "run"


def tokens(n: int = 403) -> torch.Tensor:
    return torch.arange(n)  # the token at position i is i: every window names its own start


def loader(shuffle: bool = True, batch_size: int = 4, **kwargs: int) -> TextWindows:
    return TextWindows(tokens(), BLOCK, batch_size, shuffle=shuffle, **kwargs)


def epoch(windows: TextWindows, number: int, start: int = 0) -> list[torch.Tensor]:
    windows.set_epoch(number, start)
    return list(windows)


# ------------------------------------------------------------------------------------- data
def test_text_is_encoded_once_with_a_sorted_vocabulary_and_decodes_back(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("héllo wörld\n")
    text = read_corpus(corpus)
    vocab = "".join(sorted(set(text)))
    ids = encode(text, vocab)
    assert ids.dtype == torch.int64 and decode(ids, vocab) == text
    assert [vocab[i] for i in ids[:2]] == ["h", "é"]
    with pytest.raises(DataError, match="not in the vocabulary: 'z€'"):
        encode("z€h", vocab)
    default = read_corpus(None)  # Python's own pydoc topics: no file, no download
    assert len(default) > 300_000 and default == read_corpus("")


def test_training_order_is_a_pure_function_of_seed_and_epoch() -> None:
    first, again = epoch(loader(), 3), epoch(loader(), 3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], epoch(loader(), 4)[0])
    assert not torch.equal(first[0], epoch(loader(seed=1), 3)[0])


def test_an_epoch_cuts_each_window_once_from_its_random_offset() -> None:
    seen: set[int] = set()
    for number in range(4):
        windows = torch.cat(epoch(loader(), number))
        assert len(windows) == 48  # (403 - BLOCK) // BLOCK = 49 windows, in whole batches of 4
        for row in windows:  # BLOCK + 1 consecutive characters of the text
            assert torch.equal(row, torch.arange(BLOCK + 1) + row[0])
        starts = windows[:, 0]
        offsets = set((starts % BLOCK).tolist())
        assert len(offsets) == 1 and len(set(starts.tolist())) == len(starts)
        seen.update(offsets)
    assert len(seen) > 1  # the offset moves from epoch to epoch


def test_ranks_take_contiguous_slices_of_every_global_batch() -> None:
    whole = epoch(loader(batch_size=8), 2)
    parts = [epoch(loader(batch_size=8, rank=r, world_size=2), 2) for r in range(2)]
    for batch, a, b in zip(whole, *parts, strict=True):
        assert torch.equal(batch, torch.cat([a, b]))


def test_evaluation_shards_cover_every_window_once() -> None:
    single = torch.cat(list(loader(shuffle=False, batch_size=5)))
    shards = [loader(shuffle=False, batch_size=5, rank=r, world_size=3) for r in range(3)]
    merged = torch.cat([batch for shard in shards for batch in shard])
    assert torch.equal(merged, single)
    assert torch.equal(single[:, 0], torch.arange(50) * BLOCK)  # from offset 0: (403 - 1) // 8


def test_set_epoch_start_batch_resumes_mid_epoch() -> None:
    full = epoch(loader(), 5)
    resumed = epoch(loader(), 5, start=3)
    assert len(resumed) == len(full) - 3
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed, strict=True))


def test_build_loaders_reports_vocab_and_context(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(tiny_text())
    loaders = build_loaders(str(corpus), 16, 8, 16, 0.1, 0.1)
    info = loaders.info
    assert info["vocab"] == "".join(sorted(set(tiny_text())))
    assert info["vocab_size"] == len(info["vocab"]) and info["block_size"] == 16
    assert next(iter(loaders.train)).shape == (8, 17)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("", "is empty"),
        ("abc", "too few for one batch"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_unusable_corpora_are_one_line_data_errors(
    tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    corpus = tmp_path / "c.txt"
    if isinstance(content, bytes):
        corpus.write_bytes(content)
    elif content is not None:
        corpus.write_text(content)
    with pytest.raises(DataError, match=expected):
        build_loaders(str(corpus), 16, 8, 16, 0.1, 0.1)


def test_missing_data_path_is_one_line_from_the_data_target(tmp_path: Path) -> None:
    """`build` lets a UserError raised inside a target through as it is: the CLI prints its one
    line and exits 2 (test_cli.py checks that path once for every target)."""
    corpus = tmp_path / "c.txt"  # never written; an empty one fails the same way (test above)
    cfg = compose_with(*tiny_overrides(corpus, tmp_path / "run")[:-1])
    with pytest.raises(DataError, match=f"^data.path={corpus}: no such file$") as raised:
        build.build_loaders(cfg, torch.device("cpu"), World())
    assert isinstance(raised.value, UserError)


# ------------------------------------------------------------------------------------ model
def test_char_transformer_is_causal() -> None:
    torch.manual_seed(0)
    model = CharTransformer(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16).eval()
    ids = torch.randint(0, 20, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (ids[:, 7:] + 1) % 20  # every token from position 7 on differs
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7], b[:, 7])


def test_char_transformer_refuses_more_context_than_block_size() -> None:
    model = CharTransformer(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8)
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 5)
    with pytest.raises(ValueError, match="more than block_size 4"):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_tied_weights_share_one_matrix() -> None:
    model = CharTransformer(
        vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8, tie_weights=True
    )
    assert model.head.weight is model.token_embedding.weight


# ------------------------------------------------------------------------------------- task
def test_bpc_is_the_mean_loss_over_every_position_in_bits() -> None:
    torch.manual_seed(0)
    model = CharTransformer(vocab_size=7, block_size=5, n_layer=1, n_head=1, n_embd=8)
    task = LanguageModel()
    batches = [torch.randint(0, 7, (3, 6)), torch.randint(0, 7, (1, 6))]  # uneven batches
    meter = task.metrics()
    hand_nats, positions = 0.0, 0
    for batch in batches:
        loss, outputs = task.loss(model, batch)
        meter.update(loss, outputs, batch, task.batch_size(batch))
        log_p = torch.log_softmax(model(batch[:, :-1]).detach(), dim=-1)
        picked = log_p.gather(-1, batch[:, 1:].unsqueeze(-1))
        hand_nats -= float(picked.sum())
        positions += picked.numel()
    metrics = meter.compute()
    assert metrics["samples"] == 4
    assert metrics["loss"] == pytest.approx(hand_nats / positions, rel=1e-6)
    assert metrics["bpc"] == pytest.approx(hand_nats / positions / math.log(2), rel=1e-6)
    assert task.metric_names == ("loss", "bpc")


def test_generate_is_seeded_and_greedy_at_zero_temperature() -> None:
    torch.manual_seed(0)
    model = CharTransformer(vocab_size=9, block_size=4, n_layer=1, n_head=1, n_embd=8).eval()
    prompt = torch.tensor([[1, 2, 3]])

    def run(seed: int, **options) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return generate(model, prompt, 10, block_size=4, generator=generator, **options)

    assert run(0).shape == (1, 13) and torch.equal(run(0)[:, :3], prompt)
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    greedy = run(0, temperature=0.0)
    assert torch.equal(greedy, run(1, temperature=0.0))
    assert torch.equal(greedy, run(2, top_k=1))  # one candidate left: the likeliest
    ids = prompt
    for _ in range(10):  # greedy by hand, the context cropped to block_size
        logits = model(ids[:, -4:])[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, ids)


def lm_runner(max_steps: int, checkpoints: Path | None = None) -> Runner:
    """The tiny transformer on windows of a random text, AdamW and a one-cycle schedule."""
    torch.manual_seed(0)
    model = CharTransformer(vocab_size=50, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return Runner(
        model,
        optimizer,
        LanguageModel(),
        torch.device("cpu"),
        scheduler=one_cycle(optimizer, total_steps=14),
        options=RunnerOptions(max_epochs=2, max_steps=max_steps, log_every_n_steps=3),
        checkpointer=Checkpointer(checkpoints or ".", enabled=checkpoints is not None),
    )


def test_resume_mid_epoch_is_bitwise_identical(tmp_path: Path) -> None:
    text = torch.randint(0, 50, (600,), generator=torch.Generator().manual_seed(0))
    train, val = TextWindows(text, BLOCK, 8, shuffle=True), TextWindows(text[:100], BLOCK, 8)
    full = lm_runner(max_steps=14)  # 9 batches an epoch: the cut at step 5 is mid-epoch
    full.fit(train, val)
    cut = lm_runner(max_steps=5, checkpoints=tmp_path)
    cut.fit(train, val)
    resumed = lm_runner(max_steps=14)
    resumed.load(load_checkpoint(tmp_path / "last.pt"))
    assert resumed.state.batch_in_epoch == 5
    resumed.fit(train, val)
    for name, tensor in full.plain_model.state_dict().items():
        assert torch.equal(tensor, resumed.plain_model.state_dict()[name]), name
    assert full.evaluate(val, "val") == resumed.evaluate(val, "val")


# ------------------------------------------------------------------------------ config, CLI
def test_task_yaml_selects_text_data_and_the_transformer_and_the_cli_still_wins() -> None:
    cfg = compose_with("task=language_model")
    assert cfg.data._target_ == "src.data.text.build_loaders"
    assert cfg.model._target_ == "src.model.char_transformer.CharTransformer"
    assert (cfg.runner.monitor, cfg.runner.monitor_mode) == ("val/bpc", "min")
    assert cfg.model.vocab_size is None and cfg.model.block_size is None  # from the data
    cfg = compose_with("task=language_model", "runner.monitor=val/loss", "optimizer.lr=0.5")
    assert cfg.runner.monitor == "val/loss" and cfg.optimizer.lr == 0.5
    cfg = compose_with("task=language_model", "model=mlp", "runner.max_epochs=1")
    assert cfg.model._target_ == "src.model.mlp.MLP" and cfg.runner.max_epochs == 1


def test_cli_run_reports_bpc_in_metrics_csv_and_results(lm_run: Path) -> None:
    rows = read_metrics(lm_run / "metrics.csv")
    assert {"loss", "bpc"} <= set(rows[0]) and "acc" not in rows[0]
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 2 and float(val[-1]["bpc"]) < float(val[0]["bpc"])
    results = json.loads((lm_run / "results.json").read_text())
    assert results["test/bpc"] == pytest.approx(results["test/loss"] / math.log(2))
    assert results["best/val/bpc"] < math.log2(len(set(tiny_text())))  # beats a uniform guess
    info = torch.load(lm_run / "checkpoints" / "best.pt", weights_only=True)["data_info"]
    assert info["vocab"] == "".join(sorted(set(tiny_text()))) and info["block_size"] == BLOCK * 2


def test_two_ranks_train_like_one_process(tmp_path: Path) -> None:
    """DDP through torchrun (gloo): the same global batches, so the same model and metrics."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_text())
    sgd = ["optimizer=sgd", "scheduler=none", "runner.max_epochs=1", "runner.max_steps=6"]
    single = run_cli(*tiny_overrides(corpus, tmp_path / "single"), *sgd)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [
        str(Path(sys.executable).with_name("torchrun")),
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    ddp = subprocess.run(
        [*torchrun, "-m", "src.main", *tiny_overrides(corpus, tmp_path / "ddp"), *sgd],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = (
        load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("single", "ddp")
    )
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], rtol=1e-4, atol=1e-5, msg=name)
    results = [
        json.loads((tmp_path / run / "results.json").read_text()) for run in ("single", "ddp")
    ]
    assert results[0]["test/samples"] == results[1]["test/samples"]  # every window once
    assert results[0]["test/bpc"] == pytest.approx(results[1]["test/bpc"], rel=1e-4)


def test_make_sample_continues_a_prompt_from_the_checkpoint_alone(lm_run: Path) -> None:
    venv = Path(sys.executable).parent.parent
    make = ["make", "-s", "-C", str(REPO), f"VENV={venv}", "sample", f"RUN={lm_run}"]
    prompt = "return x * "  # spaces and a star survive the Makefile's quoting
    result = subprocess.run(
        [*make, f"PROMPT={prompt}", "ARGS=length=40 seed=3"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout[result.stdout.index(prompt) :].removesuffix("\n")
    assert len(text) == len(prompt) + 40 and set(text) <= set(tiny_text())
    assert sample_main([f"run={lm_run}", f"prompt={prompt}", "length=40", "seed=3"]) == text


def test_sample_refuses_other_tasks_and_foreign_characters(lm_run: Path, finished_run) -> None:
    with pytest.raises(CheckpointError) as other:  # a UserError: one line, exit 2 at the CLI
        sample_main([f"run={finished_run}"])
    assert str(other.value) == (
        "this checkpoint's task is Classification, not a language model: "
        "sample needs a run trained with task=language_model"
    )
    with pytest.raises(CheckpointError, match=r"^prompt: characters not in the vocabulary: '€'$"):
        sample_main([f"run={lm_run}", "prompt=€"])
    with pytest.raises(CheckpointError, match="length=ten: not a valid int"):
        sample_main([f"run={lm_run}", "length=ten"])
