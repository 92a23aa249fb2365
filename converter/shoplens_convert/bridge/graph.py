"""A Keras 3 model as one flat graph of layer calls, with nested models expanded in place.

Keras Applications models hold nested models (ConvNeXt's stem and downsampling blocks), and the
canonical transfer-learning model is ``Sequential([backbone, pooling, head])``. TFMOT can only
wrap the layers of one flat functional model, so the bridge first walks the model's serialised
graph, recursively: a nested model's call becomes the calls of its own layers, bound to the
tensors the outer graph passes in. Layer names are kept (the report names layers as the user
knows them); a name that a nested model repeats gets the nested model's name as a prefix.

Nothing here imports tf-keras: the graph is plain data plus the Keras 3 layer objects, whose
weights the bridge copies later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoplens.errors import ConversionError
from shoplens_convert._tf import keras3

__all__ = ["Call", "FlatGraph", "Ref", "flatten_model"]

_MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass(frozen=True)
class Ref:
    """Output ``index`` of the layer call ``call`` (an index into :attr:`FlatGraph.calls`)."""

    call: int
    index: int = 0


@dataclass
class Call:
    """One call of one layer (a shared layer has several calls with the same ``name``)."""

    name: str  # unique per layer in the flat model
    source: Any  # the Keras 3 layer or operation object
    class_name: str
    module: str  # "keras.layers", "keras.src.ops.numpy", "keras.src.applications.convnext", ...
    config: dict[str, Any]
    args: list[Any]  # Refs and constants, as the source called it
    kwargs: dict[str, Any]
    path: tuple[str, ...] = ()  # the nested models this layer lives in, outermost first

    @property
    def is_op(self) -> bool:
        """A Keras 3 operation node (``x + 3.0`` in a functional graph), not a layer."""
        return self.module.startswith("keras.src.ops")

    @property
    def where(self) -> str:
        return "/".join((*self.path, self.name)) if self.path else self.name


@dataclass
class FlatGraph:
    """Inputs (placeholders), layer calls in topological order, and outputs."""

    name: str
    input_specs: list[tuple[tuple[int | None, ...], str, str]]  # (batch shape, dtype, name)
    calls: list[Call] = field(default_factory=list)
    outputs: list[Ref] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)  # nested models expanded, in order
    renamed: dict[str, str] = field(default_factory=dict)  # new name -> where it came from

    def consumers(self, ref: Ref) -> list[int]:
        """Indices of the calls that take ``ref`` as an argument."""
        return [i for i, c in enumerate(self.calls) if ref in _refs(c.args) or ref in _refs(c.kwargs)]

    def uses(self, ref: Ref) -> int:
        """How often ``ref`` is read: as an argument, or as a model output."""
        n = sum(_refs(c.args).count(ref) + _refs(c.kwargs).count(ref) for c in self.calls)
        return n + self.outputs.count(ref)


INPUT = -1  # Ref(INPUT - i) is model input i


def input_ref(i: int) -> Ref:
    return Ref(INPUT - i, 0)


def _refs(obj: Any) -> list[Ref]:
    if isinstance(obj, Ref):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _refs(v)]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _refs(v)]
    return []


def functional_twin(model: Any) -> Any:
    """A Sequential as the functional model with the same layers (other models unchanged)."""
    keras = keras3()
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise ConversionError(f"nested Sequential {model.name!r} was never built; give it an Input")
        inp = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name="input")
        x = inp
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inp, x, name=model.name)
    return model


class _Flattener:
    def __init__(self, root: Any) -> None:
        self.graph = FlatGraph(getattr(root, "name", "model"), [])
        self._name_of: dict[int, str] = {}  # id(source layer) -> its unique flat name
        self._taken: set[str] = set()

    def unique_name(self, source: Any, name: str, path: tuple[str, ...]) -> str:
        key = id(source)
        if key in self._name_of:
            return self._name_of[key]  # a shared layer: every call uses the same layer
        new = name
        if new in self._taken:
            base = f"{path[-1]}_{name}" if path else name
            new, k = base, 1
            while new in self._taken:
                k += 1
                new = f"{base}_{k}"
            self.graph.renamed[new] = "/".join((*path, name))
        self._taken.add(new)
        self._name_of[key] = new
        return new

    def expand(self, model: Any, inputs: list[Ref], path: tuple[str, ...]) -> list[Ref]:
        """Add the calls of ``model`` to the graph, its inputs bound to ``inputs``; its outputs."""
        model = functional_twin(model)
        config = model.get_config()
        by_name = {op.name: op for op in getattr(model, "operations", model.layers)}
        local: dict[tuple[str, int, int], Ref] = {}
        in_specs = _triples(config.get("input_layers", []))
        if len(in_specs) != len(inputs):
            where = "/".join(path) or model.name
            raise ConversionError(
                f"bridge: model {where!r} takes {len(in_specs)} inputs but is called with {len(inputs)}"
            )
        for (name, node, index), ref in zip(in_specs, inputs, strict=True):
            local[(name, node, index)] = ref
        for spec in config["layers"]:
            cls = spec["class_name"]
            name = spec["config"].get("name", spec.get("name"))
            if cls == "InputLayer":
                continue
            source = by_name.get(name)
            if source is None:
                raise ConversionError(f"bridge: layer {name!r} of {model.name!r} is in the config only")
            for node_index, node in enumerate(spec.get("inbound_nodes", [])):
                args = _resolve(node.get("args", []), local, name)
                kwargs = _resolve(node.get("kwargs", {}), local, name)
                if cls in _MODEL_CLASSES or isinstance(source, keras3().Model):
                    inner_in = _refs(args)
                    self.graph.nested.append("/".join((*path, name)))
                    outs = self.expand(source, inner_in, (*path, name))
                    for i, r in enumerate(outs):
                        local[(name, node_index, i)] = r
                    continue
                flat = self.unique_name(source, name, path)
                module = str(spec.get("module") or "keras.layers")
                self.graph.calls.append(
                    Call(flat, source, cls, module, dict(spec["config"]), args, kwargs, path)
                )
                idx = len(self.graph.calls) - 1
                for i in range(_n_outputs(source)):
                    local[(name, node_index, i)] = Ref(idx, i)
        outs = []
        for triple in _triples(config["output_layers"]):
            if triple not in local:
                raise ConversionError(f"bridge: output {triple[0]!r} of {model.name!r} is never computed")
            outs.append(local[triple])
        return outs


def _n_outputs(source: Any) -> int:
    """Outputs of one call; layers of these models have one (multi-output layers are rare)."""
    try:
        out = source.output
    except (AttributeError, ValueError):
        return 1
    return len(out) if isinstance(out, (list, tuple)) else 1


def _triples(refs: Any) -> list[tuple[str, int, int]]:
    if not refs:
        return []
    if isinstance(refs[0], str):  # a single [name, node, index]
        refs = [refs]
    return [(str(r[0]), int(r[1]), int(r[2])) for r in refs]


def _resolve(arg: Any, local: dict[tuple[str, int, int], Ref], user: str) -> Any:
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        name, node, index = arg["config"]["keras_history"]
        try:
            return local[(name, int(node), int(index))]
        except KeyError:
            raise ConversionError(
                f"bridge: {user!r} reads {name}[{node}][{index}] before it is built"
            ) from None
    if isinstance(arg, list):
        return [_resolve(a, local, user) for a in arg]
    if isinstance(arg, tuple):
        return tuple(_resolve(a, local, user) for a in arg)
    if isinstance(arg, dict):
        return {k: _resolve(v, local, user) for k, v in arg.items()}
    return arg


def flatten_model(model: Any) -> FlatGraph:
    """The flat graph of a Keras 3 model (Functional or Sequential, nested models expanded)."""
    twin = functional_twin(model)
    f = _Flattener(model)
    names = [t[0] for t in _triples(twin.get_config().get("input_layers", []))]
    specs = []
    for i, t in enumerate(twin.inputs):
        shape = tuple(None if d is None else int(d) for d in t.shape)
        specs.append((shape, str(t.dtype), names[i] if i < len(names) else f"input_{i}"))
    f.graph.input_specs = specs
    f.graph.outputs = f.expand(twin, [input_ref(i) for i in range(len(specs))], ())
    return f.graph
