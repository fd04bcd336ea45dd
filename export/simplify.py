"""Graph surgery the exporter leaves to us: the NaN guard after each attention softmax.

torch's SDPA decomposes into `Add(scores, Where(mask, 0, -inf)) -> Softmax -> IsNaN -> Where(
isnan, 0, probs)`: the guard zeroes rows whose every key is masked, which -inf turns into NaN.
With the mask filled with float32's lowest finite value instead (what transformers' eager
attention uses), such a row comes out uniform rather than NaN, so the guard can go. Only
padding query rows are ever fully masked (a real token always sees itself), and pooling
ignores them. The guard is two passes over batch x heads x seq x seq per layer: 7% of
EmbeddingGemma's int8 time at 256 tokens (profiled).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

LOWEST = np.finfo(np.float32).min


def drop_softmax_nan_guards(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns the number of guards removed. A softmax is touched
    only when its input is `Add(x, Where(c, 0, -inf))` with constant fills and its output
    feeds nothing but `IsNaN` and that guard's `Where`."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: i for i in g.initializer}

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def is_fill(name: str, value: float) -> bool:
        c = const(name)
        return c is not None and c.size == 1 and (c.item() == value)

    removed, fills, drop = 0, set(), set()
    for sm in [n for n in g.node if n.op_type == "Softmax"]:
        add = producer.get(sm.input[0])
        if add is None or add.op_type != "Add":
            continue
        mask = next((producer.get(i) for i in add.input
                     if producer.get(i) is not None and producer[i].op_type == "Where"), None)
        if mask is None or not (is_fill(mask.input[1], 0.0) and is_fill(mask.input[2], -np.inf)):
            continue
        users = consumers.get(sm.output[0], [])
        isnan = next((u for u in users if u.op_type == "IsNaN"), None)
        guard = next((u for u in users if u.op_type == "Where"), None)
        if (isnan is None or guard is None or len(users) != 2
                or consumers.get(isnan.output[0], []) != [guard]
                or list(guard.input) != [isnan.output[0], guard.input[1], sm.output[0]]
                or not is_fill(guard.input[1], 0.0)):
            continue
        if any(o.name == guard.output[0] for o in g.output):
            continue
        fills.add(mask.input[2])
        for u in consumers.get(guard.output[0], []):
            u.input[:] = [sm.output[0] if i == guard.output[0] else i for i in u.input]
        drop.update((id(isnan), id(guard)))
        removed += 1
    for name in fills:
        lowest = np.full_like(const(name), LOWEST)
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(lowest, name))
        else:
            node = producer[name]
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(lowest))
    kept = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(kept)
    return removed
