"""A Detoxify checkpoint, loaded from local files only, and batched inference on it.

Detoxify's checkpoints (``toxic_original-*.ckpt``, ``original-albert-*.ckpt``, …) are a torch
file holding ``config.arch.args`` (``model_type``, ``model_name``, ``tokenizer_name``,
``num_classes``), ``config.dataset.args.classes`` and the ``state_dict`` of a transformers
``*ForSequenceClassification`` model. Detoxify's own ``load_checkpoint`` asks the Hugging Face
hub for ``model_type``'s config before it looks at a local one, so this module builds the same
model from the checkpoint and a local folder holding the model's ``config.json`` and tokenizer
files (what ``save_pretrained`` writes) and never touches the network. Scores are Detoxify's:
the sigmoid of each class logit, classes renamed the way Detoxify renames them.

Backends: ``torch`` (CPU or CUDA), ``torch-fp16`` (CUDA), ``onnx`` and ``onnx-int8`` (ONNX Runtime
on the CPU; exported once and cached, int8 by dynamic quantization). An ONNX or fp16 backend is
used only after its scores on a set of probe texts are checked against the float32 torch model
(``tolerance``); ``auto`` takes the fastest one that passes.

This module imports nothing from the collector, so it can be used (and benchmarked) alone.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Detoxify renames these classes of the Jigsaw datasets.
CLASS_ALIASES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
# The classes that measure toxicity; a checkpoint's other outputs (the unbiased model's identity
# subgroups) are reported but never count towards the score.
TOXICITY_CLASSES = frozenset({"toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack",
                              "sexual_explicit"})
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
BACKENDS = ("auto", "torch", "torch-fp16", "onnx", "onnx-int8")
HOW_TO = (
    "Provide a Detoxify checkpoint and its model files on local disk: download a checkpoint (e.g. "
    "toxic_original-c1212f89.ckpt from Detoxify's GitHub releases), and on a machine with network save "
    "the base model's config and tokenizer next to it: python -c \"from transformers import AutoConfig, "
    "AutoTokenizer; AutoConfig.from_pretrained('bert-base-uncased').save_pretrained('DIR'); "
    "AutoTokenizer.from_pretrained('bert-base-uncased').save_pretrained('DIR')\" (bert-base-uncased for "
    "'original', albert-base-v2 for 'original-small', roberta-base for 'unbiased'). Then set "
    "processors.toxicity.checkpoint (and config_dir, if DIR is not the checkpoint's folder); "
    "docs/processors.md#toxicity has the steps.")

# Texts the faster backends are checked on: short and long, plain and hostile, so that the
# comparison covers the padding and the range of scores a model gives.
PROBE_TEXTS = (
    "Thanks, that fixed it!",
    "You are an idiot and everyone here hates you.",
    "The meeting moved to 3 pm on Thursday; the agenda is attached.",
    "Shut up. Nobody asked for your stupid opinion, you worthless clown.",
    "I will find where you live and make you regret this.",
    "Here is a summary of the report: revenue grew 12% while costs fell, mainly in logistics and support.",
    "What a lovely photo of your garden, the roses look great this year.",
    "This is garbage code written by a moron; delete it and never touch the repo again.",
    "Sure. To reset the router, hold the button for ten seconds, wait for the light to blink green, and pair "
    "it again from the app. If that does not help, restore factory settings and set the network up again "
    "from scratch; your saved devices will have to be paired once more.",
    "People like you should not be allowed to vote.",
    "ok",
    "I respectfully disagree with the reviewer's second point, for the reasons given in section 4.",
)


class ToxicityModelError(ValueError):
    """The checkpoint or model files cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Checkpoint:
    model_type: str
    model_name: str
    tokenizer_name: str
    num_classes: int
    classes: tuple[str, ...]
    state_dict: dict[str, Any]


def read_checkpoint(path: str | os.PathLike[str], allow_pickle: bool = False) -> Checkpoint:
    """The checkpoint at ``path``. Only tensors and plain containers are unpickled unless
    ``allow_pickle`` (a full unpickle runs code from the file: only for files you trust)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ToxicityModelError(f"toxicity checkpoint {str(path)!r} is not a file. {HOW_TO}")
    with path.open("rb") as f:
        magic = f.read(2)
    if not (zipfile.is_zipfile(path) or magic[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise ToxicityModelError(f"toxicity checkpoint {str(path)!r} is not a torch checkpoint file. {HOW_TO}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if allow_pickle:
            raise ToxicityModelError(f"toxicity checkpoint {str(path)!r} cannot be read: {exc}") from None
        raise ToxicityModelError(
            f"toxicity checkpoint {str(path)!r} holds Python objects besides tensors and plain containers, "
            "and unpickling them would run code from the file. If you trust the file, set "
            "processors.toxicity.allow_pickle: true") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ToxicityModelError(f"toxicity checkpoint {str(path)!r} is not a torch checkpoint: {exc}") from None
    try:
        args = loaded["config"]["arch"]["args"]
        classes = [str(c) for c in loaded["config"]["dataset"]["args"]["classes"]]
        state_dict = loaded["state_dict"]
        checkpoint = Checkpoint(str(args["model_type"]), str(args["model_name"]), str(args["tokenizer_name"]),
                                int(args["num_classes"]), tuple(CLASS_ALIASES.get(c, c) for c in classes),
                                state_dict)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToxicityModelError(
            f"toxicity checkpoint {str(path)!r} is not in Detoxify's format (needs config.arch.args with "
            f"model_type, model_name, tokenizer_name, num_classes; config.dataset.args.classes; state_dict): "
            f"missing {exc}") from None
    if not checkpoint.model_name.endswith("ForSequenceClassification"):
        raise ToxicityModelError(f"toxicity checkpoint: model_name {checkpoint.model_name!r} is not a transformers "
                                 "sequence-classification model")
    if not checkpoint.tokenizer_name.endswith(("Tokenizer", "TokenizerFast")):
        raise ToxicityModelError(f"toxicity checkpoint: tokenizer_name {checkpoint.tokenizer_name!r} is not a "
                                 "transformers tokenizer")
    if not 0 < len(checkpoint.classes) <= checkpoint.num_classes:
        raise ToxicityModelError(f"toxicity checkpoint: {len(checkpoint.classes)} class names for "
                                 f"{checkpoint.num_classes} outputs")
    return checkpoint


def build_model(checkpoint: Checkpoint, config_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(model in eval mode on the CPU, tokenizer), from the checkpoint and the local model files."""
    import transformers

    config_dir = Path(config_dir)
    if not (config_dir / "config.json").is_file():
        raise ToxicityModelError(f"toxicity: {str(config_dir)!r} has no config.json for {checkpoint.model_type!r}. "
                                 f"{HOW_TO}")
    model_class = getattr(transformers, checkpoint.model_name, None)
    tokenizer_class = getattr(transformers, checkpoint.tokenizer_name, None)
    if model_class is None or tokenizer_class is None:
        missing = checkpoint.model_name if model_class is None else checkpoint.tokenizer_name
        raise ToxicityModelError(f"toxicity checkpoint: transformers {transformers.__version__} has no {missing}")
    transformers.utils.logging.disable_progress_bar()  # no per-tensor progress bar on the collector's stderr
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # its mismatch report: we raise with a short message
    try:
        config = model_class.config_class.from_pretrained(config_dir, num_labels=checkpoint.num_classes,
                                                          local_files_only=True)
        # As Detoxify does: the checkpoint's state_dict on the local config, no hub look-up.
        model = model_class.from_pretrained(None, config=config, state_dict=checkpoint.state_dict,
                                            local_files_only=True)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise ToxicityModelError(f"toxicity: the checkpoint does not fit the model files in {str(config_dir)!r}: "
                                 f"{_first_line(exc)}") from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    if not any((config_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ToxicityModelError(f"toxicity: {str(config_dir)!r} has no {checkpoint.tokenizer_name} files (one of "
                                 f"{', '.join(TOKENIZER_FILES)}). {HOW_TO}")
    try:
        tokenizer = tokenizer_class.from_pretrained(config_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ToxicityModelError(f"toxicity: no usable {checkpoint.tokenizer_name} files in {str(config_dir)!r}: "
                                 f"{_first_line(exc)}. {HOW_TO}") from None
    if len(tokenizer) > model.config.vocab_size:
        raise ToxicityModelError(f"toxicity: the tokenizer in {str(config_dir)!r} has {len(tokenizer)} tokens, the "
                                 f"model's embedding {model.config.vocab_size}: they are not from the same model")
    return model.eval(), tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Scorer:
    """Per-class scores of texts: tokenized once, sorted by length, run in padded batches."""

    def __init__(self, tokenizer: Any, run: Any, classes: tuple[str, ...], batch_size: int, max_tokens: int,
                 backend: str) -> None:
        self.tokenizer = tokenizer
        self._run = run  # (input_ids int64 [b, s], attention_mask int64 [b, s]) -> logits float32 [b, k]
        self.classes = classes
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.backend = backend
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._lock = threading.Lock()

    def scores(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), len(classes)]: each class's probability."""
        out = np.zeros((len(texts), len(self.classes)), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_tokens, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = max(len(ids[i]) for i in chunk)
                input_ids = np.full((len(chunk), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(chunk), width), dtype=np.int64)
                for row, i in enumerate(chunk):
                    input_ids[row, :len(ids[i])] = ids[i]
                    mask[row, :len(ids[i])] = 1
                logits = np.asarray(self._run(input_ids, mask), dtype=np.float32)[:, :len(self.classes)]
                out[chunk] = 1.0 / (1.0 + np.exp(-logits))
        return out


def _max_tokens(model: Any, tokenizer: Any, wanted: int) -> int:
    limit = wanted
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        limit = min(limit, tokenizer_max)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models offset positions by the padding index.
        offset = (model.config.pad_token_id or 0) + 1 if model.config.model_type in ("roberta", "xlm-roberta") else 0
        limit = min(limit, positions - offset)
    return limit


def _torch_runner(model: Any, device: str, fp16: bool) -> Any:
    import torch

    # fp16 on a copy: the float32 model stays usable if the half-precision scores are off.
    model = copy.deepcopy(model).to(device).half() if fp16 else model.to(device)

    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(input_ids).to(device),
                           attention_mask=torch.from_numpy(mask).to(device)).logits
        return logits.float().cpu().numpy()

    return run


def _onnx_files(model: Any, checkpoint_path: Path, cache_dir: Path, quantize: bool) -> Path:
    """The model exported to ONNX (and quantized), cached by the checkpoint file (path, size,
    modification time: the file was just read whole by torch, so it is not hashed again) and the
    versions that shape the export."""
    import onnxruntime
    import torch
    import transformers

    stat = checkpoint_path.stat()
    digest = hashlib.sha256(f"{checkpoint_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{torch.__version__}|"
                            f"{transformers.__version__}|{onnxruntime.__version__}".encode())
    stem = f"toxicity-{digest.hexdigest()[:20]}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    fp32 = cache_dir / f"{stem}.onnx"
    if not fp32.is_file():
        log.info("toxicity: exporting the model to ONNX (once; cached in %s)", cache_dir)
        started = time.monotonic()
        tmp = fp32.with_suffix(f".tmp{os.getpid()}")
        sample = torch.ones((2, 8), dtype=torch.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.cpu(), (sample, sample), str(tmp), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}})
        os.replace(tmp, fp32)
        log.info("toxicity: ONNX export took %.1f s", time.monotonic() - started)
    if not quantize:
        return fp32
    int8 = cache_dir / f"{stem}.int8.onnx"
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        log.info("toxicity: quantizing the ONNX model to int8 (once; cached in %s)", cache_dir)
        tmp = int8.with_suffix(f".tmp{os.getpid()}")
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(max(level, logging.ERROR))  # quantize_dynamic's pre-processing hint on the root logger
        try:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        finally:
            quiet.setLevel(level)
        os.replace(tmp, int8)
    return int8


def _onnx_runner(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]

    return run


@dataclass
class Loaded:
    scorer: Scorer
    classes: tuple[str, ...]
    probe_difference: float  # the chosen backend's largest score difference from torch float32 on the probes


def load(checkpoint_path: str | os.PathLike[str], config_dir: str | os.PathLike[str] | None = None, *,
         device: str = "cpu", backend: str = "auto", batch_size: int = 32, max_tokens: int = 512,
         threads: int | None = None, tolerance: float = 0.01, cache_dir: str | os.PathLike[str] = ".lqo/models",
         allow_pickle: bool = False) -> Loaded:
    """A scorer for the checkpoint, on the fastest backend whose scores stay within
    ``tolerance`` of the float32 torch model (``backend='auto'``), or on the one named."""
    import torch

    if backend not in BACKENDS:
        raise ToxicityModelError(f"toxicity: backend {backend!r} is not one of {', '.join(BACKENDS)}")
    on_cuda = device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise ToxicityModelError(f"toxicity: device {device!r} asked for, but torch {torch.__version__} sees no CUDA "
                                 "device; use device: cpu")
    if on_cuda and backend in ("onnx", "onnx-int8"):
        raise ToxicityModelError(f"toxicity: backend {backend} runs on the CPU; use torch or torch-fp16 on {device}")
    if not on_cuda and backend == "torch-fp16":
        raise ToxicityModelError("toxicity: backend torch-fp16 needs device: cuda")
    if threads:
        torch.set_num_threads(threads)
    checkpoint_path = Path(checkpoint_path)
    checkpoint = read_checkpoint(checkpoint_path, allow_pickle)
    model, tokenizer = build_model(checkpoint, config_dir if config_dir is not None else checkpoint_path.parent)
    classes = checkpoint.classes
    del checkpoint  # the state_dict now lives in the model
    limit = _max_tokens(model, tokenizer, max_tokens)

    def scorer(run: Any, name: str) -> Scorer:
        return Scorer(tokenizer, run, classes, batch_size, limit, name)

    reference = scorer(_torch_runner(model, "cpu", False), "torch")
    if backend == "torch" and not on_cuda:
        return Loaded(reference, classes, 0.0)
    expected = reference.scores(list(PROBE_TEXTS))
    if on_cuda:
        candidates = ["torch-fp16", "torch"] if backend == "auto" else [backend]
    else:
        candidates = ["onnx-int8", "onnx", "torch"] if backend == "auto" else [backend]
    for name in candidates:
        try:
            if name == "torch":
                chosen = scorer(_torch_runner(model, device, False), name)
            elif name == "torch-fp16":
                chosen = scorer(_torch_runner(model, device, True), name)
            else:
                path = _onnx_files(model, checkpoint_path, Path(cache_dir), quantize=name == "onnx-int8")
                chosen = scorer(_onnx_runner(path, threads), name)
        except ImportError as exc:
            if backend != "auto":
                raise ToxicityModelError(f"toxicity: backend {name} needs {exc.name}: pip install "
                                         "'lqo-processors[toxicity]'") from None
            log.info("toxicity: backend %s unavailable (%s)", name, exc.name)
            continue
        difference = float(np.abs(chosen.scores(list(PROBE_TEXTS)) - expected).max())
        if difference <= tolerance or backend != "auto" or name == "torch":
            level = logging.WARNING if difference > tolerance else logging.INFO
            log.log(level, "toxicity: backend %s on %s, scores within %.4f of torch float32 on the probe texts "
                    "(tolerance %.4f)", name, device, difference, tolerance)
            return Loaded(chosen, classes, difference)
        log.info("toxicity: backend %s differs by %.4f from torch float32 (over %.4f); trying the next",
                 name, difference, tolerance)
    raise AssertionError("unreachable: torch is always the last candidate")

