"""Refuses API prompts whose shape would kill ComfyUI's prompt worker, with an HTTP 400 that says why.

ComfyUI 0.3.75 validates a prompt only along the links from its output nodes, and trusts the shape of
every node it queues: when the worker builds its cache keys it calls ``node["inputs"].keys()`` on every
node of the prompt. A node whose ``inputs`` is not a JSON object (a list, a string, missing) therefore
passes validation when nothing checks its inputs by name: a node that has no required input (the
pack's view nodes without parameters, such as View: Identity), or any node, core or not, that no output
depends on. The worker thread then dies on an AttributeError and no prompt ever runs again, until
the server restarts. (Malformed nodes elsewhere end in an HTTP 500 rather than a 400.)

Python's JSON parser also accepts ``NaN`` and ``Infinity``, which JSON has not (a browser's
``JSON.stringify`` writes null for them). ComfyUI's bounds checks compare with min and max, and every
comparison with NaN is false, so a NaN slips through any FLOAT widget (a NaN guidance samples noise
into garbage, silently).

Nothing inside a node runs before that crash, and ComfyUI's ``on_prompt`` handlers cannot refuse a
prompt (the server logs and swallows what they raise), so the pack checks the prompt's shape where
the request arrives: an aiohttp middleware in front of ``POST /prompt`` that answers a malformed
prompt the way ComfyUI answers an invalid one (HTTP 400, ``error`` plus ``node_errors``), and passes
every well-formed prompt through untouched. It guards every node of the prompt, the core's included,
because they share the one worker; it checks what JSON can carry (the shape, and numbers that are
numbers). Whether a value suits its input stays ComfyUI's validation and the nodes' own, with one
exception for the pack's own nodes, where ComfyUI 0.3.75 checks nothing: combo values (choices.py).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

from aiohttp import web
from comfy_api.latest import io

from .choices import unknown_choices

logger = logging.getLogger(__name__)

#: The routes that queue a prompt (ComfyUI serves each route with and without the /api prefix).
PROMPT_ROUTES = frozenset({"/prompt", "/api/prompt"})

NODE_SHAPE = 'each node is {"class_type": "<node id>", "inputs": {"<input name>": <value or [node_id, output_index]>}}'


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    return "an object"


def _display_name(class_type: str) -> str:
    # ComfyUI's registry of display names (its top-level ``nodes`` module, not this package), imported
    # here because it is loading this pack when this module is imported.
    import nodes as comfy_nodes

    return comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)


def _node_problem(node: Any) -> tuple[str, str] | None:
    """(field, problem and fix) when a node's shape would crash the worker, else None."""
    if not isinstance(node, dict):
        return "node", f"must be a JSON object, got {_json_kind(node)}. Write {NODE_SHAPE}."
    if "class_type" in node and not isinstance(node["class_type"], str):
        return "class_type", f"must be a string (a node id from /object_info), got {_json_kind(node['class_type'])}."
    if "inputs" not in node:
        return "inputs", 'is missing. Give every node an "inputs" object ({} for a node without inputs).'
    inputs = node["inputs"]
    if not isinstance(inputs, dict):
        fix = "Write an object of input names to values or [node_id, output_index] links."
        if inputs == []:
            # The likely cause: PHP's json_encode writes an empty array as [].
            fix = "A node without inputs takes {} (PHP's json_encode writes [] for an empty array unless given "
            fix += "JSON_FORCE_OBJECT)."
        return "inputs", f"must be a JSON object, got {_json_kind(inputs)}. {fix}"
    for name, value in inputs.items():
        if _has_non_finite(value):
            return str(name), "is NaN or infinite, which is not a number JSON allows. Give a finite number."
    return None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    return False


@functools.cache
def _pack_nodes() -> dict[str, type[io.ComfyNode]]:
    # The node list lives in the package's __init__, which imports this module: read it when needed.
    from . import NODE_CLASSES

    return {node_cls.FINALIZE_SCHEMA().node_id: node_cls for node_cls in NODE_CLASSES}


def _answer(node_errors: dict) -> dict:
    messages = [error["message"] for entry in node_errors.values() for error in entry["errors"]]
    return {
        "error": {"type": "invalid_prompt", "message": messages[0], "details": "\n".join(messages), "extra_info": {}},
        "node_errors": node_errors,
    }


def unknown_choice_answer(prompt: dict) -> dict | None:
    """The HTTP 400 body for combo values of the pack's nodes outside their lists; None when all are valid."""
    node_errors = {}
    for node_id, node in prompt.items():
        node_cls = _pack_nodes().get(node.get("class_type"))
        errors = unknown_choices(node_cls, node["inputs"]) if node_cls is not None else []
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]}
    return _answer(node_errors) if node_errors else None


def malformed_prompt_answer(prompt: Any) -> dict | None:
    """ComfyUI's HTTP 400 body for a prompt whose shape would crash the worker; None for a well-formed one."""
    if not isinstance(prompt, dict):
        message = f"prompt: must be a JSON object of node ids to nodes, got {_json_kind(prompt)}. Write {NODE_SHAPE}."
        return {
            "error": {"type": "invalid_prompt", "message": message, "details": "", "extra_info": {}},
            "node_errors": {},
        }
    node_errors = {}
    for node_id, node in prompt.items():
        problem = _node_problem(node)
        if problem is None:
            continue
        field, text = problem
        class_type = node.get("class_type") if isinstance(node, dict) else None
        where = f"{_display_name(class_type)} (node {node_id})" if isinstance(class_type, str) else f"node {node_id}"
        message = f"{where}: {field}: {text}"
        node_errors[node_id] = {
            "errors": [
                {"type": "malformed_node", "message": message, "details": field, "extra_info": {"input_name": field}}
            ],
            "dependent_outputs": [],
            "class_type": class_type if isinstance(class_type, str) else None,
        }
    return _answer(node_errors) if node_errors else None


@web.middleware
async def refuse_malformed_prompts(request: web.Request, handler):
    if request.method == "POST" and request.path in PROMPT_ROUTES:
        try:
            body = await request.json()  # aiohttp keeps the body, so ComfyUI's handler reads it again
        except ValueError:  # not JSON (or not UTF-8): ComfyUI's handler answers that itself
            return await handler(request)
        if isinstance(body, dict) and "prompt" in body:
            prompt = body["prompt"]
            answer = malformed_prompt_answer(prompt) or unknown_choice_answer(prompt)
            if answer is not None:
                logger.warning("Visual Anagrams: refused a prompt: %s", answer["error"]["details"])
                return web.json_response(answer, status=400)
    return await handler(request)


def install_prompt_guard() -> None:
    """Put the guard in front of ComfyUI's routes (once; only while the server has not started)."""
    from server import PromptServer  # ComfyUI's server module

    server = getattr(PromptServer, "instance", None)
    if server is None:  # the pack imported without a server (scripts, tests): nothing to guard
        return
    middlewares = server.app.middlewares
    if refuse_malformed_prompts in middlewares:
        return
    try:
        middlewares.append(refuse_malformed_prompts)
    except RuntimeError:  # aiohttp froze the list: the server started before the pack loaded
        logger.warning(
            "Visual Anagrams: could not guard POST /prompt against malformed node inputs (the server was already "
            "running); a prompt whose node inputs are not a JSON object can stop ComfyUI's prompt worker."
        )
