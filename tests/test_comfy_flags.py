"""ComfyUI's dtype and memory flags decide the pack's loaders as they decide ComfyUI's own models.

This machine has no GPU, and on a CPU most flags change nothing. So ComfyUI's real ``model_management`` runs
in child processes that simulate one CUDA card (torch.cuda's queries answer for it) before ComfyUI reads its
flags at import, one child per flag set. Each child calls the loaders' real ``execute`` with only the weight
loading (``load_if_stage``, and ``load_t5`` when the encoder would go to the simulated GPU) and ComfyUI's move to
the GPU (``load_models_gpu``) replaced by recorders, and prints what ComfyUI decides for its own models
(``unet_dtype``, ``text_encoder_device``, ``text_encoder_dtype``, ``vram_state``) next to what the loaders
decided. One more child, on the CPU, checks out-of-memory and the error labels.

The children are forked from one process that imported torch, diffusers and transformers once, so the flag sets
cost a ComfyUI import each, not a Python start.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
NODES_DIR = TESTS_DIR.parent / "nodes"

#: Simulated cards: (name, compute capability, VRAM in GiB).
RTX_3090 = ("NVIDIA GeForce RTX 3090", (8, 6), 24)  # Ampere: fp16 and bf16
TESLA_M40 = ("Tesla M40 24GB", (5, 2), 24)  # Maxwell: ComfyUI uses neither fp16 nor bf16 there

#: name -> (card, ComfyUI command-line flags). None: no simulated card (the CPU, with --cpu).
FLAG_SETS = {
    "default": (RTX_3090, ()),
    "maxwell": (TESLA_M40, ()),
    "fp32-unet": (RTX_3090, ("--fp32-unet",)),
    "bf16-unet": (RTX_3090, ("--bf16-unet",)),
    "fp16-unet": (TESLA_M40, ("--fp16-unet",)),
    "fp16-text-enc": (RTX_3090, ("--fp16-text-enc",)),
    "bf16-text-enc": (RTX_3090, ("--bf16-text-enc",)),
    "fp32-text-enc": (RTX_3090, ("--fp32-text-enc",)),
    "cpu": (RTX_3090, ("--cpu",)),
    "lowvram": (RTX_3090, ("--lowvram",)),
    "novram": (RTX_3090, ("--novram",)),
    "gpu-only": (TESLA_M40, ("--gpu-only",)),
    "highvram": (RTX_3090, ("--highvram",)),
    "checks": (None, ("--cpu",)),
}

#: What each flag set must give, stated: the Stage I loader's (device, dtype, offload), the T5 loader's
#: (device, precision, whether ComfyUI moves it) with device "default", the CLIP loader's auto dtype.
EXPECTED = {
    "default": (("cuda:0", "fp16", "none"), ("cuda:0", "fp16", True), "fp16"),
    "maxwell": (("cuda:0", "fp32", "none"), ("cpu", "fp32", False), "fp16"),
    "fp32-unet": (("cuda:0", "fp32", "none"), ("cuda:0", "fp16", True), "fp16"),
    "bf16-unet": (("cuda:0", "bf16", "none"), ("cuda:0", "fp16", True), "fp16"),
    "fp16-unet": (("cuda:0", "fp16", "none"), ("cpu", "fp32", False), "fp16"),
    "fp16-text-enc": (("cuda:0", "fp16", "none"), ("cuda:0", "fp16", True), "fp16"),
    "bf16-text-enc": (("cuda:0", "fp16", "none"), ("cuda:0", "bf16", True), "bf16"),
    "fp32-text-enc": (("cuda:0", "fp16", "none"), ("cuda:0", "fp32", True), "fp32"),
    "cpu": (("cpu", "fp32", "none"), ("cpu", "fp32", False), "fp32"),
    "lowvram": (("cuda:0", "fp16", "model"), ("cpu", "fp32", False), "fp16"),
    "novram": (("cuda:0", "fp16", "sequential"), ("cpu", "fp32", False), "fp16"),
    "gpu-only": (("cuda:0", "fp32", "none"), ("cuda:0", "fp16", True), "fp16"),
    "highvram": (("cuda:0", "fp16", "none"), ("cuda:0", "fp16", True), "fp16"),
}

#: Each flag against the same card without it: (flag set, baseline, what changes, from, to).
CHANGES = [
    ("fp32-unet", "default", "stage dtype", "fp16", "fp32"),
    ("bf16-unet", "default", "stage dtype", "fp16", "bf16"),
    ("fp16-unet", "maxwell", "stage dtype", "fp32", "fp16"),
    ("bf16-text-enc", "default", "t5 precision", "fp16", "bf16"),
    ("bf16-text-enc", "default", "clip dtype", "fp16", "bf16"),
    ("fp32-text-enc", "default", "t5 precision", "fp16", "fp32"),
    ("fp32-text-enc", "default", "clip dtype", "fp16", "fp32"),
    ("cpu", "default", "stage device", "cuda:0", "cpu"),
    ("cpu", "default", "stage dtype", "fp16", "fp32"),
    ("cpu", "default", "t5 device", "cuda:0", "cpu"),
    ("cpu", "default", "t5 precision", "fp16", "fp32"),
    ("cpu", "default", "clip dtype", "fp16", "fp32"),
    ("lowvram", "default", "stage offload", "none", "model"),
    ("lowvram", "default", "t5 device", "cuda:0", "cpu"),
    ("novram", "default", "stage offload", "none", "sequential"),
    ("novram", "default", "t5 device", "cuda:0", "cpu"),
    ("gpu-only", "maxwell", "t5 device", "cpu", "cuda:0"),
    ("gpu-only", "maxwell", "t5 precision", "fp32", "fp16"),
    ("gpu-only", "default", "t5 offload device", "cpu", "cuda:0"),
    # --highvram keeps ComfyUI's UNets on the GPU between uses, but its text encoders still go back to the CPU.
    ("highvram", "default", "stage offload device", "cpu", "cuda:0"),
    ("highvram", "default", "t5 offload device", "cpu", "cpu"),
]

CHILD = textwrap.dedent(
    """
    import gc, json, os, sys, traceback, types
    comfy_dir, tests_dir, pycache, request = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    sys.path[:0] = [comfy_dir, tests_dir]
    # The slow imports (ComfyUI's and the pack's libraries), made once: every flag set's child is forked from here.
    import aiohttp, av, einops, torch, torchvision  # noqa: F401
    from diffusers import IFPipeline  # noqa: F401
    from transformers import T5EncoderModel  # noqa: F401
    torch.backends.cudnn.version()  # loads cuDNN, which ComfyUI asks about

    GIB = 1024**3
    STAGE_MODEL = "DeepFloyd/IF-I-XL-v1.0"  # a listed Hub id: its parameter count is known, nothing is downloaded


    def simulate_card(name, capability, vram_gib):
        '''torch.cuda answers as one CUDA card with nothing allocated (before ComfyUI reads it at import).'''
        props = types.SimpleNamespace(
            name=name, major=capability[0], minor=capability[1], total_memory=vram_gib * GIB,
            multi_processor_count=80, gcnArchName="",
        )
        cuda = torch.cuda
        cuda.is_available = lambda: True
        cuda.device_count = lambda: 1
        cuda.current_device = lambda: 0
        cuda.get_device_properties = lambda device=None: props
        cuda.get_device_name = lambda device=None: name
        cuda.mem_get_info = lambda device=None: (props.total_memory - GIB, props.total_memory)
        cuda.memory_stats = lambda device=None: {"reserved_bytes.all.current": 0, "active_bytes.all.current": 0}
        cuda.is_bf16_supported = lambda *args, **kwargs: capability[0] >= 8
        cuda.get_allocator_backend = lambda: "native"
        for noop in ("synchronize", "empty_cache", "ipc_collect"):
            setattr(cuda, noop, lambda *args, **kwargs: None)


    def import_comfy(card, flags):
        sys.argv = ["main.py", *flags]
        if card is not None:
            simulate_card(*card)
        import comfy.options
        comfy.options.enable_args_parsing()  # as ComfyUI's main.py: comfy.cli_args reads sys.argv
        import comfy.model_management as mm
        from pack import import_submodule
        return mm, import_submodule


    def name_of(dtype):
        return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))


    def decisions(mm, import_submodule):
        loaders = import_submodule("nodes.loaders")
        clip_loader = import_submodule("nodes.clip_loader")
        comfy_rules = import_submodule("nodes.comfy_rules")
        estimated_bytes = import_submodule("sampling.loading").estimated_bytes
        demo = import_submodule("sampling.if_models").EMBEDDED_DEMO
        real_load_t5 = loaders.load_t5
        moved = []
        mm.load_models_gpu = lambda patchers, **kwargs: moved.extend(patchers)  # nothing can move to a fake GPU
        asked = {}

        def load_if_stage(source, stage, **kwargs):
            asked["stage"] = {key: str(kwargs.get(key)) for key in ("device", "dtype", "offload")}
            dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
            pipeline = types.SimpleNamespace(components={"unet": torch.nn.Linear(2, 2)})
            return types.SimpleNamespace(pipeline=pipeline, dtype=dtypes.get(kwargs["dtype"], torch.float32))

        def load_t5(source, **kwargs):
            asked["t5"] = {key: str(kwargs.get(key)) for key in ("device", "precision", "keep_on_cpu")}
            if kwargs["keep_on_cpu"]:  # the real load: the demo's tiny T5 on the CPU
                return real_load_t5(source, **kwargs)
            return types.SimpleNamespace(
                model=torch.nn.Linear(2, 2),
                precision=kwargs["precision"],
                device=torch.device(kwargs["device"]),
                tokenizer_source=None,
            )

        loaders.load_if_stage, loaders.load_t5 = load_if_stage, load_t5

        def managed(handle):
            patcher = handle._patcher
            if patcher is None:
                return None
            assert any(moved_patcher is patcher for moved_patcher in moved), "made a patcher but never loaded it"
            return {"load": str(patcher.load_device), "offload": str(patcher.offload_device)}

        stage = loaders.LoadStageI.execute(model=STAGE_MODEL, dtype="auto", offload="auto").result[0]
        report = {"stage": {**asked["stage"], "managed": managed(stage)}}
        for choice in ("default", "cpu"):
            t5 = loaders.LoadTextEncoder.execute(encoder=demo, precision="auto", device=choice).result[0]
            report[f"t5 {choice}"] = {
                **asked["t5"], "precision": t5.get().precision, "device": str(t5.get().device), "managed": managed(t5)
            }
        device = mm.get_torch_device()
        report["clip dtype"] = name_of(clip_loader._torch_dtype("auto", device))
        parameters = (estimated_bytes(STAGE_MODEL, torch.float32, stage=1) or 0) // 4
        encoder_device = mm.text_encoder_device()
        report["comfy"] = {
            "device": str(device),
            "vram_state": mm.vram_state.name,
            "unet_dtype": name_of(
                mm.unet_dtype(device=device, model_params=parameters, supported_dtypes=list(comfy_rules.COMPUTE_DTYPES))
            ),
            "text_encoder_device": str(encoder_device),
            "text_encoder_offload_device": str(mm.text_encoder_offload_device()),
            "text_encoder_dtype": name_of(mm.text_encoder_dtype(encoder_device)),
        }
        return report


    def checks(mm, import_submodule):
        '''Out of memory inside the core's real loads, and every node's error label.'''
        loaders = import_submodule("nodes.loaders")
        nodes = import_submodule("nodes")
        node_label = import_submodule("nodes.labels").node_label
        demo = import_submodule("sampling.if_models").EMBEDDED_DEMO
        from diffusers import IFPipeline
        from transformers import T5EncoderModel

        class BackendOutOfMemory(RuntimeError):
            "An accelerator's own OOM error, which ComfyUI (not torch) lists as out of memory."

        def failing(error):
            def to(self, *args, **kwargs):
                raise error
            return to

        def outcome(run):
            try:
                run()
            except BaseException as error:
                return {
                    "type": type(error).__name__,
                    "comfy_oom": isinstance(error, mm.OOM_EXCEPTION),
                    "message": str(error),
                }
            return None

        stage = lambda: loaders.LoadStageI.execute(model=demo, dtype="auto", offload="auto")  # noqa: E731
        t5 = lambda: loaders.LoadTextEncoder.execute(encoder=demo, precision="auto", device="default")  # noqa: E731
        torch_oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        comfy_oom = mm.OOM_EXCEPTION
        report = {"oom_exception": repr(comfy_oom)}
        IFPipeline.to = failing(torch_oom)
        T5EncoderModel.to = failing(torch_oom)
        report["stage torch"], report["t5 torch"] = outcome(stage), outcome(t5)
        mm.OOM_EXCEPTION = (mm.OOM_EXCEPTION, BackendOutOfMemory)
        IFPipeline.to = failing(BackendOutOfMemory("device out of memory"))
        report["stage backend"] = outcome(stage)
        mm.OOM_EXCEPTION = Exception  # ComfyUI's fallback when torch has no OOM error
        IFPipeline.to = failing(RuntimeError("CUDA error: an illegal memory access was encountered"))
        report["stage fallback"] = outcome(stage)
        mm.OOM_EXCEPTION = comfy_oom

        report["labels"] = []
        for node in nodes.NODE_CLASSES:
            schema = node.GET_SCHEMA()
            report["labels"].append(
                {"node_id": schema.node_id, "display_name": schema.display_name, "label": node_label(node)}
            )
        # A name no loader lists: refused with the loader's label.
        stage_inputs = dict(model="nope", dtype="auto", offload="auto")
        refused = [
            (loaders.LoadStageI, stage_inputs),
            (loaders.LoadStageII, stage_inputs),
            (loaders.LoadStageIII, stage_inputs),
            (loaders.LoadTextEncoder, dict(encoder="nope", precision="auto", device="default")),
            (nodes.LoadCLIP, dict(clip="nope", dtype="auto")),
        ]
        report["refusals"] = {
            node.GET_SCHEMA().node_id: outcome(lambda: node.execute(**inputs)) for node, inputs in refused
        }
        return report


    def child(name, card, flags):
        mm, import_submodule = import_comfy(card, flags)
        return (checks if name == "checks" else decisions)(mm, import_submodule)


    def start(name, card, flags):
        # A child for one flag set, answering through a pipe.
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                answer = {"report": child(name, card, flags)}
            except BaseException:
                answer = {"error": traceback.format_exc()}
            with os.fdopen(write, "w") as pipe:
                json.dump(answer, pipe)
            os._exit(0)
        os.close(write)
        return pid, read


    def finish(pid, read):
        with os.fdopen(read) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        return json.loads(text) if text else {"error": "the child died without an answer"}


    # The children compile ComfyUI and the pack once between them (even with PYTHONDONTWRITEBYTECODE), into a
    # temporary folder; the garbage collector leaves the imports above alone.
    sys.pycache_prefix, sys.dont_write_bytecode = pycache, False
    gc.freeze()
    names, answers = list(request), {}
    for first in range(0, len(names), 2):  # two at a time: one per core of a small machine
        started = {name: start(name, *request[name]) for name in names[first : first + 2]}
        answers.update({name: finish(*child_process) for name, child_process in started.items()})
    print(json.dumps(answers))
    """
)


@pytest.fixture(scope="module")
def reports(comfyui_checkout, tmp_path_factory) -> dict:
    """Every flag set's report, from one process."""
    pycache = tmp_path_factory.mktemp("pycache")
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(comfyui_checkout), str(TESTS_DIR), str(pycache), json.dumps(FLAG_SETS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=TESTS_DIR,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def report_of(reports: dict, name: str) -> dict:
    answer = reports[name]
    assert "error" not in answer, f"flag set {name}: {answer.get('error')}"
    return answer["report"]


def outcome(report: dict, what: str) -> str:
    """One decision of a flag set's report, by the names CHANGES uses."""
    t5 = report["t5 default"]
    return {
        "stage device": report["stage"]["device"],
        "stage dtype": report["stage"]["dtype"],
        "stage offload": report["stage"]["offload"],
        "t5 device": t5["device"],
        "t5 precision": t5["precision"],
        "t5 offload device": (t5["managed"] or {}).get("offload"),
        "stage offload device": (report["stage"]["managed"] or {}).get("offload"),
        "clip dtype": report["clip dtype"],
    }[what]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loaders_decide_as_comfyui_does_for_its_own_models(reports, name):
    report = report_of(reports, name)
    comfy, stage, t5 = report["comfy"], report["stage"], report["t5 default"]
    (stage_device, stage_dtype, offload), (t5_device, t5_precision, t5_moved), clip_dtype = EXPECTED[name]

    # The Stage I loader: ComfyUI's UNet dtype for IF-I-XL on its device; offload from its memory mode.
    assert (stage["device"], stage["dtype"], stage["offload"]) == (stage_device, stage_dtype, offload)
    assert stage["device"] == comfy["device"] and stage["dtype"] == comfy["unet_dtype"]
    vram_offload = {"LOW_VRAM": "model", "NO_VRAM": "sequential"}.get(comfy["vram_state"], "none")
    assert stage["offload"] == vram_offload
    # Without diffusers' offload hooks ComfyUI moves the UNet, between its device and its UNet offload device.
    assert (stage["managed"] is not None) == (offload == "none")

    # The T5 loader: where ComfyUI runs its own text encoders, in its text-encoder dtype (fp16 becomes fp32 on
    # the CPU: the pack's T5 computes in the dtype it stores).
    assert (t5["device"], t5["precision"], t5["managed"] is not None) == (t5_device, t5_precision, t5_moved)
    assert t5["device"] == comfy["text_encoder_device"]
    assert t5["precision"] == ("fp32" if t5_device == "cpu" else comfy["text_encoder_dtype"])
    if t5_moved:  # ComfyUI moves it as its own text encoders: between their load and offload devices
        assert t5["managed"] == {"load": comfy["text_encoder_device"], "offload": comfy["text_encoder_offload_device"]}

    assert report["clip dtype"] == clip_dtype
    assert clip_dtype == ("fp32" if comfy["device"] == "cpu" else comfy["text_encoder_dtype"])


@pytest.mark.parametrize(
    "name, baseline, what, before, after", CHANGES, ids=[f"{name}:{what}" for name, _, what, _, _ in CHANGES]
)
def test_each_flag_changes_what_the_loaders_decide(reports, name, baseline, what, before, after):
    assert outcome(report_of(reports, baseline), what) == before
    assert outcome(report_of(reports, name), what) == after


def test_fp16_text_enc_is_already_comfyuis_choice(reports):
    """--fp16-text-enc changes nothing, for ComfyUI's own text encoders as for the pack's: ComfyUI 0.3.75's
    text_encoder_dtype() answers fp16 without it (on any device)."""
    default, flagged = report_of(reports, "default"), report_of(reports, "fp16-text-enc")
    assert default["comfy"]["text_encoder_dtype"] == flagged["comfy"]["text_encoder_dtype"] == "fp16"
    assert {key: default[key] for key in ("stage", "t5 default", "clip dtype")} == {
        key: flagged[key] for key in ("stage", "t5 default", "clip dtype")
    }


@pytest.mark.parametrize("name", ["default", "gpu-only", "bf16-text-enc", "cpu"])
def test_t5_device_cpu_stays_on_the_cpu_whatever_the_flags(reports, name):
    t5 = report_of(reports, name)["t5 cpu"]
    assert (t5["device"], t5["keep_on_cpu"], t5["managed"]) == ("cpu", "True", None)
    # fp16 is computed in fp32 on the CPU; an explicit bf16 from --bf16-text-enc is kept.
    assert t5["precision"] == ("bf16" if name == "bf16-text-enc" else "fp32")


def test_out_of_memory_while_loading_is_comfyuis_and_names_the_node_and_the_fix(reports):
    report = report_of(reports, "checks")
    assert report["oom_exception"] == "<class 'torch.OutOfMemoryError'>"
    stage, t5 = report["stage torch"], report["t5 torch"]
    # torch's OOM inside the core's load: the core words it; it comes back as ComfyUI's OOM type.
    assert stage["type"] == t5["type"] == "OutOfMemoryError" and stage["comfy_oom"] and t5["comfy_oom"]
    assert stage["message"].startswith("IF Stage I Loader: model 'embedded: digits demo (64 px)': not enough memory")
    assert "pick offload 'model'" in stage["message"]
    assert t5["message"].startswith("T5 Text Encoder Loader (IF): encoder 'embedded: digits demo (64 px)': not enough")
    assert "pick 8bit or 4bit" in t5["message"]
    # An error only ComfyUI lists as out of memory (another backend's): the same, with the node's fix.
    backend = report["stage backend"]
    assert backend["type"] == "BackendOutOfMemory" and backend["comfy_oom"]
    assert backend["message"].startswith("IF Stage I Loader: model 'embedded: digits demo (64 px)': not enough memory")
    assert "pick offload 'model'" in backend["message"]
    # ComfyUI's fallback (OOM_EXCEPTION = Exception, torch without an OOM error) relabels nothing as OOM.
    fallback = report["stage fallback"]
    assert fallback["type"] == "RuntimeError" and "not enough memory" not in fallback["message"]
    assert fallback["message"] == "CUDA error: an illegal memory access was encountered"


def string_constants(tree: ast.AST):
    """Every piece of literal text: plain strings and the literal parts of f-strings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node, node.value


def test_every_node_labels_its_errors_with_its_display_name(reports):
    report = report_of(reports, "checks")
    labels = report["labels"]
    assert len(labels) == len({entry["node_id"] for entry in labels}) >= 10
    for entry in labels:
        assert entry["display_name"] and entry["label"] == entry["display_name"], entry
    assert len({entry["display_name"] for entry in labels}) == len(labels), "two nodes share a display name"
    display_names = {entry["node_id"]: entry["display_name"] for entry in labels}
    for node_id, refusal in report["refusals"].items():
        assert refusal is not None and refusal["message"].startswith(f"{display_names[node_id]}: "), refusal

    # No message carries a hard-coded label, current or stale: text never starts like "<Some Node>: ..." and
    # every `label` / `prefix` comes from node_label().
    label_like = re.compile(r"^(?:[A-Z][\w()]*|IF|T5|CLIP|x4)(?: [\w()]+){0,5}: ")
    allowed = {"View: "}  # the view nodes' display names are built as f"View: {label}"
    for path in sorted(NODES_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and (body := node.body)
            and isinstance(body[0], ast.Expr)
        }
        for node, text in string_constants(tree):
            if id(node) in docstrings or text in allowed:
                continue
            for name in display_names.values():
                assert not text.startswith(f"{name}:"), f"{path.name}:{node.lineno}: hard-coded label {text!r}"
            match = label_like.match(text)
            assert match is None or not is_message(tree, node), f"{path.name}:{node.lineno}: label-like {text!r}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id in ("label", "prefix") for target in node.targets
            ):
                assert from_node_label(node.value), f"{path.name}:{node.lineno}: a label not from node_label()"


def is_message(tree: ast.AST, constant: ast.Constant) -> bool:
    """Whether the literal opens an error message: the first piece of what a ``raise`` gets."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
            continue
        first = node.exc.args[0]
        opening = first.values[0] if isinstance(first, ast.JoinedStr) and first.values else first
        if opening is constant:
            return True
    return False


def from_node_label(value: ast.expr) -> bool:
    """``node_label(...)``, or an f-string that opens with it."""
    if isinstance(value, ast.JoinedStr) and value.values and isinstance(value.values[0], ast.FormattedValue):
        value = value.values[0].value
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "node_label"
