"""What every trainer shares, one module per responsibility.

- `config`: `LearnerConfig`, the settings every learner takes, and their validation;
- `scoring`: every reward of every role and the expert judge (`evaluate` uses it too);
- `update`: group advantages, the chunked loss with its KL reference, the optimisers;
- `checkpoints`: one loader for every policy directory and start-from source, one writer;
- `loop`: `Learner`, the base of every trainer: models, optimisers, metrics, the loop.
"""
