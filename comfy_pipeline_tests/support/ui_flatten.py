"""Test helper: flatten a UI-format ComfyUI workflow (nodes/links, with subgraphs) into API format.

It follows the rules of the frontend's "Export (API)" (frontend 1.49.6, docs/PROTOCOL.md §10), so that the tests
can prove that our workflow files are the official templates, flattened:
* ids are ``[...subgraph instance path, node id].join(":")``;
* virtual nodes (notes, reroutes) and muted (mode 2) / bypassed (mode 4) nodes are dropped; a consumer of a
  bypassed node is wired to the bypassed node's input of the same type;
* a subgraph input that is not linked outside becomes a plain value: the instance's promoted widget value,
  else the inner widget's value;
* widget values are named from the node's object_info input order; ``control_after_generate`` values are
  skipped; dynamic-combo children are named ``parent.child``; the image-upload button is serialized as
  ``upload``.
"""

from typing import Any

VIRTUAL_NODES = {"MarkdownNote", "Note", "Reroute"}
MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")


class FlattenError(ValueError):
    pass


def _is_widget(spec: list) -> bool:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if options.get("forceInput") or options.get("hidden"):  # hidden: kept for old API callers, no widget
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES or "widgetType" in options


def _name_widgets(spec_inputs: dict, order: list[str], values: list, prefix: str, out: dict, node: str) -> None:
    """Consume ``values`` (a list, popped from the front) for the widget inputs in ``order``."""
    for name in order:
        spec = spec_inputs.get(name)
        if spec is None or not _is_widget(spec):
            continue
        if not values:
            raise FlattenError(f"node {node}: no widget value left for input {prefix + name!r}")
        value = values.pop(0)
        out[prefix + name] = {"__value__": value} if isinstance(value, list) else value
        options = spec[1] if len(spec) > 1 else {}
        if options.get("control_after_generate"):
            values.pop(0)  # the frontend keeps it in widgets_values but never serializes it
        if any(options.get(flag) for flag in UPLOAD_FLAGS):
            out["upload"] = values.pop(0)
        if spec[0] == "COMFY_DYNAMICCOMBO_V3":
            chosen = next((o for o in options["options"] if o["key"] == value), None)
            if chosen is None:
                raise FlattenError(f"node {node}: {prefix + name} = {value!r} is not an option")
            child_inputs: dict = {}
            child_order: list[str] = []
            for section in ("required", "optional"):
                child_inputs.update(chosen["inputs"].get(section, {}))
                child_order += list(chosen["inputs"].get(section, {}))
            _name_widgets(child_inputs, child_order, values, f"{prefix}{name}.", out, node)


def widget_inputs(class_type: str, widgets_values: list, object_info: dict, node: str = "?") -> dict[str, Any]:
    """Name a node's ``widgets_values`` the way the frontend does."""
    info = object_info[class_type]
    spec_inputs: dict = {}
    order: list[str] = []
    for section in ("required", "optional"):
        spec_inputs.update(info["input"].get(section, {}))
        order += info.get("input_order", {}).get(section, list(info["input"].get(section, {})))
    values = list(widgets_values)
    out: dict[str, Any] = {}
    _name_widgets(spec_inputs, order, values, "", out, node)
    if values:
        raise FlattenError(f"node {node} ({class_type}): {len(values)} widget value(s) left over: {values!r}")
    return out


class _Level:
    """One graph level: the top-level graph or one subgraph instance."""

    def __init__(self, nodes: list, links: list, path: list[str], parent: "_Level | None", instance: dict | None,
                 definition: dict | None):
        self.nodes = {n["id"]: n for n in nodes}
        self.links = {}
        for link in links:
            if isinstance(link, list):  # top level: [id, origin_id, origin_slot, target_id, target_slot, type]
                link = dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
            self.links[link["id"]] = link
        self.path, self.parent, self.instance, self.definition = path, parent, instance, definition

    def api_id(self, node_id: int) -> str:
        return ":".join([*self.path, str(node_id)])


class _Flattener:
    def __init__(self, ui: dict, object_info: dict):
        self.object_info = object_info
        self.subgraphs = {s["id"]: s for s in ui.get("definitions", {}).get("subgraphs", [])}
        self.prompt: dict[str, dict] = {}
        self._walk(_Level(ui["nodes"], ui["links"], [], None, None, None))

    def _child(self, level: _Level, node: dict) -> _Level:
        definition = self.subgraphs[node["type"]]
        return _Level(definition["nodes"], definition["links"], [*level.path, str(node["id"])], level, node, definition)

    def _walk(self, level: _Level) -> None:
        for node in level.nodes.values():
            if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MUTED, BYPASSED):
                continue
            if node["type"] in self.subgraphs:
                self._walk(self._child(level, node))
                continue
            api_id = level.api_id(node["id"])
            inputs = widget_inputs(node["type"], node.get("widgets_values") or [], self.object_info, api_id)
            for slot in node.get("inputs", []):
                if slot.get("link") is None:
                    continue
                resolved = self._resolve_link(level, slot["link"], node, slot["name"])
                if resolved is _UNCONNECTED:
                    inputs.pop(slot["name"], None)
                else:
                    inputs[slot["name"]] = resolved
            title = node.get("title") or self.object_info[node["type"]].get("display_name") or node["type"]
            self.prompt[api_id] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}

    def _resolve_link(self, level: _Level, link_id: int, consumer: dict, input_name: str) -> Any:
        link = level.links[link_id]
        origin_id, slot = link["origin_id"], link["origin_slot"]
        if origin_id == SUBGRAPH_INPUT:
            return self._resolve_subgraph_input(level, slot, consumer, input_name)
        return self._resolve_output(level, origin_id, slot)

    def _resolve_subgraph_input(self, level: _Level, slot: int, consumer: dict, input_name: str) -> Any:
        sub_input = level.definition["inputs"][slot]
        outer = next((i for i in level.instance.get("inputs", []) if i["name"] == sub_input["name"]), None)
        if outer is not None and outer.get("link") is not None:
            return self._resolve_link(level.parent, outer["link"], level.instance, outer["name"])
        promoted = self._promoted_value(level, sub_input["name"])
        if promoted is not _UNCONNECTED:
            return promoted
        inner = widget_inputs(consumer["type"], consumer.get("widgets_values") or [], self.object_info)
        if input_name not in inner:
            return _UNCONNECTED
        return inner[input_name]

    def _promoted_value(self, level: _Level, name: str) -> Any:
        """The instance's own widget value for a widget-typed subgraph input, when the instance stores them."""
        widget_inputs_ = [i["name"] for i in level.definition["inputs"] if i["type"] in WIDGET_TYPES]
        values = level.instance.get("widgets_values") or []
        if name in widget_inputs_ and len(values) == len(widget_inputs_):
            return values[widget_inputs_.index(name)]
        return _UNCONNECTED

    def _resolve_output(self, level: _Level, node_id: int, slot: int) -> Any:
        node = level.nodes[node_id]
        if node["type"] in self.subgraphs:
            child = self._child(level, node)
            link = next(candidate for candidate in child.links.values()
                        if candidate["target_id"] == SUBGRAPH_OUTPUT and candidate["target_slot"] == slot)
            return self._resolve_output(child, link["origin_id"], link["origin_slot"])
        mode = node.get("mode", 0)
        if mode == MUTED:
            return _UNCONNECTED
        if mode == BYPASSED:
            # The frontend passes the output through from an input of the same type, same slot index first.
            out_type = node["outputs"][slot]["type"]
            candidates = [i for i in node.get("inputs", []) if i["type"] == out_type and i.get("link") is not None]
            same_slot = [i for n, i in enumerate(node.get("inputs", [])) if n == slot and i in candidates]
            chosen = (same_slot or candidates or [None])[0]
            if chosen is None:
                return _UNCONNECTED
            return self._resolve_link(level, chosen["link"], node, chosen["name"])
        if node["type"] == "Reroute":
            return self._resolve_link(level, node["inputs"][0]["link"], node, node["inputs"][0]["name"])
        return [level.api_id(node_id), slot]


_UNCONNECTED = object()


def flatten(ui: dict, object_info: dict) -> dict[str, dict]:
    """API-format prompt for a UI-format workflow, as the frontend's "Export (API)" writes it."""
    return _Flattener(ui, object_info).prompt
