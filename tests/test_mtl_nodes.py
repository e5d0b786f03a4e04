"""Anagram-MTL's options through a real ComfyUI: rectify, anti-segregation, per-view weights and
concept words, from API JSON on the tiny models."""

from __future__ import annotations

from tiny_graphs import prompt_nodes, save, stage_1_nodes, stage_2_nodes

HYBRID = {"kernel_size": 33, "sigma": 2.0}
MTL_STAGE_I = {"rectify": True, "anti_segregation": True, "anti_segregation_step": 5.0, "anti_segregation_steps": 26}


def cascade(
    *, stage_1=None, stage_2=None, weight=None, concept_words=None, second_view=("VisualAnagramsView_flip", {})
):
    """Stage I (2 steps, 2 candidates) and Stage II (1 step) of a two-view illusion, both saved."""
    graph = {
        **prompt_nodes(second_view=second_view),
        **stage_1_nodes(steps=2, candidates=2, **(stage_1 or {})),
        **stage_2_nodes(["6", 0], **(stage_2 or {})),
        "9": save(["6", 0], "va/mtl_stage1"),
        "10": save(["8", 0], "va/mtl_stage2"),
    }
    if weight is not None:
        graph["3"]["inputs"]["weight"] = weight
    if concept_words is not None:
        graph["4"]["inputs"]["concept_words"] = concept_words
    return graph


def pixels(comfy_server, result, node_id) -> list[bytes]:
    return [comfy_server.open_image(ref).tobytes() for ref in result.images if ref.node_id == node_id]


def test_the_options_at_their_defaults_change_nothing(comfy_server):
    """A graph written before the options and one that sets them to their defaults give the same bytes."""
    before = comfy_server.run(cascade(), timeout=600)
    defaults = cascade(
        stage_1={"rectify": False, "anti_segregation": False, "attention_size": 0},
        stage_2={"rectify": False},
        weight=1.0,
        concept_words="",
    )
    explicit = comfy_server.run(defaults, timeout=600)
    assert pixels(comfy_server, before, "9") == pixels(comfy_server, explicit, "9")
    assert pixels(comfy_server, before, "10") == pixels(comfy_server, explicit, "10")


def test_rectify_anti_segregation_and_weights_run_and_leave_plain_runs_as_they_were(comfy_server):
    plain = comfy_server.run(cascade(), timeout=600)
    mtl = comfy_server.run(
        cascade(stage_1=MTL_STAGE_I, stage_2={"rectify": True}, concept_words="campfire, man"), timeout=600
    )
    weighted = comfy_server.run(cascade(weight=3.0), timeout=600)
    again = comfy_server.run(cascade(), timeout=600)

    assert len(pixels(comfy_server, mtl, "9")) == 2 and len(pixels(comfy_server, mtl, "10")) == 2
    for node_id in ("9", "10"):
        assert pixels(comfy_server, mtl, node_id) != pixels(comfy_server, plain, node_id)
        assert pixels(comfy_server, weighted, node_id) != pixels(comfy_server, plain, node_id)
        # The attention recorders are gone after the run: the same plain graph gives the same bytes.
        assert pixels(comfy_server, again, node_id) == pixels(comfy_server, plain, node_id)


def test_each_option_alone_changes_the_picture(comfy_server):
    plain = pixels(comfy_server, comfy_server.run(cascade(), timeout=600), "9")
    for stage_1 in ({"rectify": True}, {"anti_segregation": True}):
        assert pixels(comfy_server, comfy_server.run(cascade(stage_1=stage_1), timeout=600), "9") != plain


def test_anti_segregation_with_a_colour_view_names_the_node_the_input_and_the_fix(comfy_server):
    graph = cascade(stage_1={"anti_segregation": True}, second_view=("VisualAnagramsView_negate", {}))
    result = comfy_server.run(graph, check=False, timeout=600)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "Anagram Sampler (Stage I)" in message and "anti-segregation" in message
    assert "negate" in message and "turn anti-segregation off" in message
    assert comfy_server.system_stats()["system"]


def test_a_concept_word_missing_from_its_prompt_is_named(comfy_server):
    result = comfy_server.run(cascade(concept_words="campfire, dragon"), check=False, timeout=600)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "Anagram Prompt Encoder" in message and "'dragon' is not a word of prompt 2" in message


def test_rectify_with_factorized_views_names_the_reduction(comfy_server):
    graph = {
        **prompt_nodes(second_view=("VisualAnagramsView_high_pass", HYBRID)),
        **stage_1_nodes(steps=1, rectify=True),
        "9": save(["6", 0], "va/mtl_hybrid"),
    }
    graph["2"] = {"class_type": "VisualAnagramsView_low_pass", "inputs": HYBRID}
    result = comfy_server.run(graph, check=False, timeout=600)
    assert result.status == "error"
    assert "rectify" in result.error["exception_message"] and "'sum'" in result.error["exception_message"]
