"""Training MCC (imported as ``mcc_fast.training``; never as a top-level ``training``).

- ``trainer``: ``train(config, out_dir, resume=..., init_from=...)`` and ``Trainer``, one GPU or
  many (``torchrun -m mcc_fast.training``), exact resume; ``mcc-fast train`` is its CLI.
- ``config``: ``load_config(path_or_name, overrides)`` of the YAML configs (``configs/``:
  official, demo, smoke).
- ``checkpointing``: the checkpoint folders (``save_checkpoint``, ``load_checkpoint``,
  ``latest_checkpoint``, ``load_init_weights``).
- ``losses``, ``objective``: the paper's losses and their weighting; ``data``: datasets and
  video I/O; ``synth``: synthetic talking heads (``mcc-fast synth``); ``benchmark``: the
  training-step benchmark; ``demo_model``: exports the embedded demo model.
"""
