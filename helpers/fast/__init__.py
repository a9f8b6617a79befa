"""What a learner need not read: the machinery that makes the course fast, and the stored results it made.

The modules one level up hold what the notebooks teach and call. Each of them computes its numbers the plain way or
calls in here through one documented function; nothing here is needed to understand a result, only to get it
quickly or to check that the quick way gives the plain way's numbers:

- ``packing``: packed rows (several sequences in one row, each seeing only itself) and the models they work for.
- ``zero_shot_scorer``: lm-eval's log-likelihoods of (context, continuation) requests, on packed rows or a shared
  KV cache (``score_texts``; ``helpers.zero_shot.evaluate_zero_shot`` is the front door).
- ``lm_eval_engine``: the same per-item results computed by lm-eval itself (``evaluate_zero_shot(...,
  engine="lm-eval")``): the engine for models that outgrow one CPU, and the reference the scorer is tested against.
- ``ppl_criterion``: the PPL criterion from cached block inputs on packed rows (``nll_without_blocks``;
  ``helpers.data_criteria.ppl_scores`` is the front door, ``cached=False`` its plain loop).
- ``gguf``: the packaged GGUF model converted once into a float32 checkpoint (``helpers.model.load_model`` calls it).
- ``stored_results``: the course's stored zero-shot results, their code fingerprint and their live check
  (``helpers.variant_benchmarks`` reads them; ``benchmarks/zero_shot_results.py`` writes them).
"""
