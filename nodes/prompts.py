"""The prompt encoder node: a style prefix, one prompt per view, a negative prompt."""

from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..sampling import SamplingInputError
from ..sampling.inputs import MAX_VIEWS
from ..sampling.text import encode_prompts
from .labels import node_label
from .sockets import check_sockets, input_title
from .types import CATEGORY, EncodedPrompts, Prompts, TextEncoder, Views

#: UTF-16 surrogates: JSON's "\ud800" escapes can put one alone in a string, which is then no text
#: at all (no encoding can write it, and the tokenizer fails on it with a bare TypeError).
SURROGATES = range(0xD800, 0xE000)


def check_text(node_cls: type[io.ComfyNode], fields: dict[str, str]) -> None:
    """Raise a ValueError naming the field when a text input holds a lone surrogate."""
    titles = {spec.id: input_title(spec) for spec in (node_cls.SCHEMA or node_cls.GET_SCHEMA()).inputs}
    for name, text in fields.items():
        position = next((index for index, char in enumerate(text) if ord(char) in SURROGATES), None)
        if position is not None:
            raise ValueError(
                f"{node_label(node_cls)}: {titles.get(name, name)}: character {position + 1} is a lone UTF-16 "
                f"surrogate ({text[position]!a}), which is not text. Remove it; to send an emoji or another "
                "character beyond U+FFFF in JSON, escape it as a surrogate pair (\\ud83d\\ude00) or send it as UTF-8."
            )


class AnagramPromptEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        prompt_inputs = [
            io.String.Input(
                f"prompt_{k}",
                display_name=f"prompt for view {k}",
                multiline=True,
                default="",
                tooltip=f"What the picture should show under view {k} of the chain.",
            )
            for k in range(1, MAX_VIEWS + 1)
        ]
        return io.Schema(
            node_id="VisualAnagramsPromptEncoder",
            display_name="Anagram Prompt Encoder",
            category=CATEGORY,
            description="Encodes one prompt per view with DeepFloyd IF's T5 encoder. Prompt k pairs with view k; "
            "fill exactly as many prompts as there are views. The paper's tip: styles such as "
            "'an oil painting of' work better than 'a photo of'.",
            inputs=[
                TextEncoder.Input("text_encoder", tooltip="From the T5 Text Encoder Loader."),
                Views.Input("views", tooltip="The view chain, so the prompts can be paired with it."),
                io.String.Input("style", default="an oil painting of", tooltip="Put before every prompt."),
                *prompt_inputs,
                io.String.Input(
                    "negative",
                    default="",
                    multiline=True,
                    tooltip="Negative prompt for every view (IF's default: empty).",
                ),
                io.String.Input(
                    "concept_words",
                    default="",
                    optional=True,
                    tooltip="Anti-segregation only (Stage I sampler): the word naming each prompt's subject, in view "
                    "order, separated by commas (e.g. 'deer, waterfall'). An empty entry, or an empty field, takes the "
                    "prompt's last word, as Anagram-MTL does.",
                ),
                io.Boolean.Input(
                    "unload_encoder",
                    default=False,
                    tooltip="Free the T5 encoder's memory after encoding (it is then reloaded when "
                    "the prompts change).",
                ),
            ],
            outputs=[
                Prompts.Output(
                    display_name="prompts",
                    tooltip="One T5 embedding per view (and the negative), with the prompt texts for captions.",
                )
            ],
        )

    @classmethod
    def execute(
        cls, text_encoder, views, style, negative, unload_encoder, concept_words="", **prompt_fields
    ) -> io.NodeOutput:
        check_sockets(cls, text_encoder=text_encoder, views=views)
        check_text(cls, {"style": style, **prompt_fields, "negative": negative, "concept_words": concept_words})
        label = node_label(cls)
        count = len(views)
        prompts = [prompt_fields[f"prompt_{k}"].strip() for k in range(1, count + 1)]
        missing = [k for k, prompt in enumerate(prompts, start=1) if not prompt]
        if missing:
            raise ValueError(
                f"{label}: prompt for view {missing[0]} is empty; {count} views are wired, so fill prompts 1 to "
                f"{count}."
            )
        extra = [k for k in range(count + 1, MAX_VIEWS + 1) if prompt_fields[f"prompt_{k}"].strip()]
        if extra:
            raise ValueError(
                f"{label}: prompt for view {extra[0]} is filled but only {count} views are wired: add a view node to "
                f"the chain or clear prompts {count + 1} to {MAX_VIEWS}."
            )
        words = [word.strip() or None for word in concept_words.split(",")] if concept_words.strip() else []
        if len(words) > count:
            raise ValueError(
                f"{label}: concept_words: {len(words)} words for {count} views; give at most one per view, in view "
                "order, separated by commas"
            )
        words += [None] * (count - len(words))
        comfy.model_management.throw_exception_if_processing_interrupted()
        try:
            embeddings = encode_prompts(text_encoder.get(), prompts, negative, style=style, concept_words=words)
        except SamplingInputError as error:
            raise ValueError(f"{label}: {error.input_name}: {error.problem}") from error
        if unload_encoder:
            text_encoder.release()
        texts = tuple(f"{style} {prompt}".strip() for prompt in prompts)
        return io.NodeOutput(EncodedPrompts(embeddings=embeddings, texts=texts))
