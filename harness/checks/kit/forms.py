"""How a GRL is called: the forms a DANN calls it in, each a module with `set_alpha`."""
from __future__ import annotations

from torch import nn

from grl_conformance.core.registry import layer_from_function

FORMS = ("layer.set_alpha", "layer(alpha=)", "fn")


def forms(impl, alpha: float, which: tuple[str, ...] = ("layer.set_alpha", "fn")) -> list:
    """[(label, module)]: the GRL in the forms a DANN calls it in, alpha already given, each a
    module with `set_alpha`. `layer.set_alpha`: built with alpha 1.0, then set (a schedule's
    way, and the seed API's promise); `layer(alpha=)`: the constructor's alpha; `fn`: the
    function, in the layer `--grl-impl` gives a function row (`registry.layer_from_function`)."""
    made = []
    for label in which:
        if label == "layer.set_alpha":
            grl = impl.api.layer(alpha=1.0)
            grl.set_alpha(alpha)
        elif label == "layer(alpha=)":
            grl = impl.api.layer(alpha=alpha)
        elif label == "fn":
            grl = layer_from_function(impl.api.fn, "fn")(alpha)
        else:
            raise ValueError(f"unknown form {label!r}; one of {FORMS}")
        made.append((label, grl))
    return made


def form(impl, label: str, alpha: float) -> nn.Module:
    """One of `forms`: the GRL called as `label`."""
    return forms(impl, alpha, (label,))[0][1]
