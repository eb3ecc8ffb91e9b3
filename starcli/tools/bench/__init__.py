"""``starcli bench``: time the engine itself (``StarEngine``) on random-weight or real models.

Each cell is one (document length, attention mode, block size) on every rank of the run:

- phase 1: ``engine.encode_context`` of random token ids, per ``plan_partition``;
- time to first token: phase 1 plus the question's prefill (``EncodeStats.seconds`` +
  ``AnswerStats.prefill_seconds``);
- decode: greedy tokens after a warm-up, timed between two token callbacks;
- peak memory per rank, FLOPs the method needs, achieved TFLOP/s against a matmul ceiling measured
  at start on the same device.

``hf-dense`` is the user's existing baseline: one transformers forward (``sdpa``) of the document
plus question, so the engine's own ``dense`` can be checked against it. ``hf-static`` is the peer
for phase 2: transformers' ``generate`` with a static cache (which it compiles for decoding) on the
same model, timed the same way (first token, then decode after the same warm-up).

Engine cells run once per ``--decodes`` entry: ``auto`` (a captured CUDA graph on CUDA, eager on
the CPU), ``eager`` (the reference), ``static`` (the graph's fixed-shape step without capture).

Several ranks: torchrun starts them in the worker loop a server's ranks run (``run.pool``); every
rank runs the same cells in the same order (collectives must pair up), rank 0 gathers the report,
and the command's process prints it and writes the JSON.

Modules: ``shapes`` (the named model shapes), ``flops`` (FLOP and memory model), ``cells`` (options,
settings and the cells of a run), ``runner`` (one rank's samples, on a ``run.session.Session``),
``table`` (the printed table), ``command`` (the whole run, here or on ranks).
"""
