"""The eager area: a GRL's autograd semantics without any transformation (docs/checks.md,
'Eager'; the contexts in docs/contexts.md). One job per module, imported here in the report's
column order (definition order within each):

- `reversal`: forward.identity, backward.*, alpha.update, graph.shared_trunk (only the domain
  branch reversed);
- `memory`: memory.saved, memory.graph_freed, memory.offload;
- `graph`: graph.several_grls, inplace.after (other GRLs and in-place ops around the layer);
- `contexts`: the contexts real training and evaluation put a GRL in (autocast,
  checkpointing, serialization, grad mode).
"""
import importlib

# The modules in column order (an import sorter would reorder `from . import a, b`).
MODULES = ("reversal", "memory", "graph", "contexts")
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
