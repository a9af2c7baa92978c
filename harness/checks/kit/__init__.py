"""The check kit every area shares (not an area: `checks.AREAS` never names it).

- `forms`: how a DANN calls a GRL (`FORMS`, `forms`, `form`);
- `inputs`: seeded tensors and batches, and the alphas the columns share;
- `models`: the models around a GRL (`linear_grl_linear`, `Dann`) and one step through them;
- `hooks`: the saved-tensor hooks the offload columns run under;
- `judge`: the judge family, every comparison a verdict rests on, with its tolerance from
  `core.tolerances` and its message in a DANN user's words.

Import from the module that holds a name (`from grl_conformance.checks.kit.judge import ...`).
"""
