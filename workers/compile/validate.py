"""An artifact is published only when it agrees with the fp32 torch engine on the validation
texts, at its own compiled length (both truncate there), within the bound of its dtype."""

import numpy as np

from common import defaults
from common.schemas import CompileRequest, Validation
from workers.compile import samples
from workers.engines.base import Engine, EngineSpec


def reference_engine(request: CompileRequest) -> Engine:
    from workers.engines.registry import create_engine

    return create_engine(EngineSpec(model=request.model.source, task=request.key.task, backend="torch", dtype="fp32",
                                    seqlens=(request.key.seqlen,), pad_to_bucket=True))


def validate(request: CompileRequest, candidate: Engine, reference: Engine | None = None) -> Validation:
    reference = reference or reference_engine(request)
    texts = request.validation_texts or samples.TEXTS
    if request.key.task == "embed":
        ours, ref = candidate.embed(list(texts)), reference.embed(list(texts))
        ok = usable_rows(ours.errors, ref.errors)
        values = row_cosines(ours.vectors[ok], ref.vectors[ok])
        worst, bound, metric = float(values.min()), defaults.ARTIFACT_MIN_COSINE[request.key.dtype], "worst_cosine"
        passed = worst >= bound
    else:
        queries, documents = samples.rerank_pairs(tuple(texts))
        ours, ref = candidate.rerank(queries, documents), reference.rerank(queries, documents)
        ok = usable_rows(ours.errors, ref.errors)
        values = np.abs(ours.scores[ok].astype(np.float64) - ref.scores[ok])
        worst, bound, metric = float(values.max()), defaults.ARTIFACT_MAX_SCORE_DIFF[request.key.dtype], "worst_score_diff"
        passed = worst <= bound
    return Validation(metric=metric, worst=worst, mean=float(values.mean()), bound=bound, samples=int(ok.sum()),
                      passed=bool(passed))


def usable_rows(ours: list, ref: list) -> np.ndarray:
    """Rows both engines produced. A row one engine failed and the other did not is a
    disagreement in itself; a row neither could run (too long for a short compiled length) is not."""
    mismatched = [i for i, (a, b) in enumerate(zip(ours, ref)) if (a is None) != (b is None)]
    if mismatched:
        i = mismatched[0]
        raise ValidationFailed(f"sample {i}: the artifact says {ours[i]!r}, the torch engine {ref[i]!r}")
    ok = np.array([a is None for a in ours])
    if not ok.any():
        raise ValidationFailed("no validation sample fits the compiled length")
    return ok


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class ValidationFailed(Exception):
    pass
