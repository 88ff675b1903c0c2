"""Peak RSS and decode rate of one folder with its context filled (one process, one run).

``python -m edge_agent.bench.fill DIR --prompt-tokens 1960 --new-tokens 64`` prefills a
prompt of that many words, decodes with eos masked, and prints one JSON line with the
whole process's peak RSS. It suits the random-weight benchmark shapes, whose
placeholder tokenizer maps each ``tN`` word to one token. Run it alone: a second
process mapping the same weights file (a hard-linked ``retarget`` folder included)
keeps shared pages resident that the runtime otherwise pages out, and inflates both.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Fill the context, decode, print the JSON line."""
    from edge_agent.bench.engines import mask_eos
    from edge_agent.llm.base import GenerationRequest
    from edge_agent.llm.draft import DraftConfig
    from edge_agent.llm.runtime import OnnxGenerator
    from edge_agent.logs import configure_logging

    parser = argparse.ArgumentParser(prog="edge_agent.bench.fill")
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=1960)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    configure_logging("warning", "console")
    generator = OnnxGenerator.load(
        args.model,
        threads=args.threads,
        verify=False,
        context_tokens=args.context,
        draft=DraftConfig(enabled=False),
    )
    no_eos = mask_eos(generator.manifest.eos_token_ids)

    rng = np.random.default_rng(0)
    text = " ".join(f"t{i}" for i in rng.integers(1000, 200000, size=args.prompt_tokens))
    request = GenerationRequest(
        generator.render(text), max_new_tokens=args.new_tokens, logits_processor=no_eos
    )
    result = generator.generate(request)
    times = generator.last_times
    assert times is not None
    print(
        json.dumps(
            {
                "model": str(args.model),
                "kv_dtype": generator.manifest.kv_dtype,
                "prompt_tokens": result.prompt_tokens,
                "new_tokens": result.new_tokens,
                "prefill_s": round(times.prefill_s, 2),
                "decode_tok_s": round((result.new_tokens - 1) / times.decode_s, 3),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
