"""End-to-end timing of a DecoderEngine: prefill at M tokens, decode at batch M.

prefill(M): M <= 1024 -> one sequence of M tokens, else ceil(M/1024) sequences of 1024 (the seed's
mapping); tokens/s = tokens processed / median forward time.
decode(M): batch M, prompt of ``prompt_len`` tokens prefilled once, then ``steps`` decode steps; on
CUDA one step is captured in a CUDA graph (the position advances inside the graph) and replayed;
tokens/s = M / median step time over the replays (steady state).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..engine import DecoderEngine, prefill_batch


@dataclass
class E2EResult:
    stage: str
    M: int
    tokens: int            # tokens per timed unit (a forward for prefill, a step for decode)
    median_s: float
    p10_s: float
    p90_s: float
    runs: int
    graphs: bool

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median_s

    def row(self) -> dict:
        return {"M": self.M, "tokens_per_s": round(self.tokens_per_s, 3), "time_s": self.median_s,
                "p10_s": self.p10_s, "p90_s": self.p90_s, "runs": self.runs, "cuda_graphs": self.graphs,
                "tokens_per_unit": self.tokens}


def _quantiles(ts: list[float]) -> tuple[float, float, float]:
    s = sorted(ts)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return statistics.median(s), pick(0.1), pick(0.9)


def _timer(device: torch.device):
    """A function that times one call of fn (seconds), CUDA events on GPU, perf_counter on CPU."""
    if device.type == "cuda":
        def run(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        return run

    def run_cpu(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return run_cpu


def _tokens(engine: DecoderEngine, B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, engine.cfg.vocab, (B, T), generator=gen).to(engine.device)


@torch.no_grad()
def bench_prefill(engine: DecoderEngine, M: int, *, warmup: int = 2, repeat: int = 5, seed: int = 0) -> E2EResult:
    B, T = prefill_batch(M)
    engine.setup_cache(B, T)
    gen = torch.Generator().manual_seed(seed)
    inputs = [_tokens(engine, B, T, gen) for _ in range(2)]  # fresh tokens, alternated
    timer = _timer(engine.device)
    for i in range(warmup):
        engine.prefill(inputs[i % 2])
    ts = [timer(lambda i=i: engine.prefill(inputs[i % 2])) for i in range(repeat)]
    med, p10, p90 = _quantiles(ts)
    return E2EResult("prefill", M, B * T, med, p10, p90, repeat, False)


@torch.no_grad()
def bench_decode(engine: DecoderEngine, M: int, *, prompt_len: int = 16, steps: int = 64, warmup: int = 3,
                 cuda_graphs: bool = True, seed: int = 0) -> E2EResult:
    """Median time of one decode step at batch M over ``steps`` steps after a ``prompt_len`` prefill."""
    if steps < 1 or prompt_len < 1:
        raise ValueError("decode needs steps >= 1 and prompt_len >= 1")
    S = prompt_len + warmup + steps + 1
    engine.setup_cache(M, S)
    gen = torch.Generator().manual_seed(seed)
    engine.prefill(_tokens(engine, M, prompt_len, gen))
    tok = _tokens(engine, M, 1, gen)
    pos = torch.tensor([prompt_len], device=engine.device, dtype=torch.int64)
    timer = _timer(engine.device)
    use_graph = cuda_graphs and engine.device.type == "cuda"

    def step():
        engine.decode_step(tok, pos)
        pos.add_(1)  # inside the graph too: each replay writes the next cache slot

    if use_graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up off the default stream before capture (torch's recipe)
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
        pos.fill_(prompt_len + warmup)
        run = g.replay
    else:
        for _ in range(warmup):
            step()
        run = step
    ts = [timer(run) for _ in range(steps)]
    med, p10, p90 = _quantiles(ts)
    return E2EResult("decode", M, M, med, p10, p90, steps, use_graph)
